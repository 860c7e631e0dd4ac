"""Options given as values are checked by the Literal types that declare them (no second list by hand)."""

from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from deploykit.core.errors import DeployKitError
from deploykit.core.options import check_choices, choice, choices_of


@dataclass(frozen=True)
class Probe:
    mode: Literal["a", "b"] = "a"
    maybe: Optional[Literal["x"]] = None
    free: str = "anything"

    def __post_init__(self) -> None:
        check_choices(self, what="probe")


def test_choices_come_from_the_annotation():
    assert choices_of(Literal["a", "b"]) == ("a", "b") and choices_of(Optional[Literal["x"]]) == ("x",)
    assert choices_of(str) == ()


def test_a_value_outside_the_literal_names_the_option_and_its_choices():
    with pytest.raises(DeployKitError) as info:
        Probe(mode="c")
    assert info.value.message == "probe: invalid --mode c" and info.value.fix == "one of a, b"
    with pytest.raises(DeployKitError, match="invalid --maybe y"):
        Probe(maybe="y")
    assert Probe(mode="b", free="z").mode == "b" and choice(None, Literal["a"], option="o", what="w") is None


def test_the_commands_use_it():
    from deploykit.pipeline.finetune import FinetuneRequest
    from deploykit.pipeline.targets.tensorrt import tensorrt_options

    with pytest.raises(DeployKitError, match="TensorRT target: invalid --precision int4"):
        tensorrt_options({"precision": "int4"})
    with pytest.raises(DeployKitError, match="finetune: invalid --save-dtype float64"):
        FinetuneRequest(model="m", data="d", out="o", save_dtype="float64")
