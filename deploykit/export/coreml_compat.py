"""A fix for coremltools 9.0 under numpy >= 2.4, applied before converting.

coremltools 9.0's converter for TorchScript's `int` op calls int() on a one-element array, which
numpy 2.4 turned from a deprecation into a TypeError (apple/coremltools#2633, fixed upstream by #2632
after 9.0). Any model doing arithmetic on its input's shape hits it: EfficientNet-Lite's TF "SAME"
padding does. We register the fixed converter for exactly that version pair; newer coremltools
carries the fix and is left alone.
"""

from __future__ import annotations

import numpy as np

_applied = False


def apply_fixes(ct) -> None:
    global _applied  # once per process: the fix replaces an entry in coremltools' op registry
    if _applied or not _needs_int_fix(ct.__version__, np.__version__):
        return
    _register_int_converter()
    _applied = True


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
