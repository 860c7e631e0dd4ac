"""Comparisons never PASS on garbage: NaN, Inf, all zeros or constant outputs fail at every precision
(issue 15, item 1: a NaN or zero norm counted as cosine 1.0 and a NaN/zero row's arg-max as class 0)."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.core.compare import TOLERANCES, compare_outputs


def _reference(seed: int = 0) -> np.ndarray:
    """Logits whose top class is mostly class 0: where arg-max of a NaN or zero row agreed by accident."""
    ref = np.random.default_rng(seed).standard_normal((64, 10))
    ref[:, 0] += 4.0
    assert (ref.argmax(1) == 0).mean() > 0.9
    return ref


GARBAGE = {
    "all NaN": lambda ref: np.full_like(ref, np.nan),
    "one NaN": lambda ref: np.where(np.arange(ref.size).reshape(ref.shape) == 3, np.nan, ref),
    "all Inf": lambda ref: np.full_like(ref, np.inf),
    "all zeros": lambda ref: np.zeros_like(ref),
    "constant": lambda ref: np.full_like(ref, 0.25),
}


@pytest.mark.parametrize("precision", sorted(TOLERANCES))
@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_garbage_outputs_fail_every_precision(precision, garbage):
    ref = _reference()
    result = compare_outputs(ref, GARBAGE[garbage](ref), precision)
    assert not result and result.summary().startswith("FAIL")
    if "N" in garbage or "Inf" in garbage:
        assert "NaN or Inf" in result.summary() and result.nonfinite > 0
    else:
        assert result.cosine < 0.5 and result.top1_agreement < 0.5, result.summary()


def test_a_nan_reference_fails_naming_the_reference():
    ref = _reference()
    result = compare_outputs(np.full_like(ref, np.nan), ref, "int8")
    assert not result and "values of the reference outputs are NaN or Inf" in result.reason


@pytest.mark.parametrize("precision", sorted(TOLERANCES))
def test_close_outputs_still_pass_and_zero_rows_agree_with_zero_rows(precision):
    ref = _reference(1)
    assert compare_outputs(ref, ref + 1e-7, precision)
    ref[5] = 0.0  # a zero row matched by a zero row: identical, not garbage
    result = compare_outputs(ref, ref.copy(), precision)
    assert result and result.cosine == 1.0 and result.top1_agreement == 1.0
