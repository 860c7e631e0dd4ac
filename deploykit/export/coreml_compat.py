"""Fixes for coremltools 9.0, applied before converting: an op converter under numpy >= 2.4, and its
console noise.

coremltools 9.0's converter for TorchScript's `int` op calls int() on a one-element array, which
numpy 2.4 turned from a deprecation into a TypeError (apple/coremltools#2633, fixed upstream by #2632
after 9.0). Any model doing arithmetic on its input's shape hits it: EfficientNet-Lite's TF "SAME"
padding does. We register the fixed converter for exactly that version pair; newer coremltools
carries the fix and is left alone.

Every conversion also drew three tqdm bars on stderr (MIL ops, then each pass pipeline) through deploykit's
own progress display, and coremltools logs "Torch version ... has not been tested" once per process: the
bars are turned off where coremltools made them (its modules' `tqdm` names), the version notice is dropped
by a filter on its logger (it is recorded in every manifest's `versions`); other warnings and errors stay.
"""

from __future__ import annotations

import numpy as np

_applied = False


def apply_fixes(ct) -> None:
    global _applied  # once per process: the fix replaces an entry in coremltools' op registry
    _silence_bars()
    if _applied or not _needs_int_fix(ct.__version__, np.__version__):
        return
    _register_int_converter()
    _applied = True


# coremltools modules that draw tqdm bars, and the name each imported tqdm under (coremltools 9.0)
_BAR_MODULES = {"coremltools.converters.mil.frontend.torch.ops": "_tqdm",
                "coremltools.converters.mil.mil.passes.pass_pipeline": "tqdm"}


def _silence_bars() -> None:
    import importlib
    from functools import partial

    for name, attribute in _BAR_MODULES.items():
        module = importlib.import_module(name)
        bar = getattr(module, attribute, None)
        if bar is not None and not isinstance(bar, partial):
            setattr(module, attribute, partial(bar, disable=True))


def drop_untested_version_notice(record) -> bool:
    """A logging filter: False for coremltools' "has not been tested with coremltools" notice."""
    return "has not been tested with coremltools" not in record.getMessage()


def _needs_int_fix(coremltools_version: str, numpy_version: str) -> bool:
    from packaging.version import Version

    return Version(coremltools_version) == Version("9.0") and Version(numpy_version) >= Version("2.4")


def _register_int_converter() -> None:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    @register_torch_op(torch_alias=["int"], override=True)
    def _int(context, node):  # coremltools' own _cast(..., int, "int32"), with .item() for the scalar
        x = _get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const():
            context.add(mb.const(val=int(np.asarray(x.val).item()), name=node.name), node.name)
            return
        if len(x.shape) > 0:
            x = mb.squeeze(x=x, name=node.name + "_item")
        context.add(mb.cast(x=x, dtype="int32", name=node.name), node.name)
