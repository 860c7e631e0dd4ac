"""The accuracy budget is judged on the held-out images: too few, and one image is worth more than it."""

from __future__ import annotations

from deploykit.pipeline.targets.int8 import resolution_warnings


def test_default_calibration_resolves_the_default_budget():
    assert resolution_warnings(171, 1.0) == []  # 512 images, a third held out
    assert resolution_warnings(100, 1.0) == []


def test_small_holdout_warns_with_the_calib_size_that_fixes_it():
    (warning,) = resolution_warnings(21, 1.0)
    assert "21 held-out images" in warning and "4.8 points" in warning
    assert "--calib-size 300 or more" in warning  # 100 held out = a third of 300
    (warning,) = resolution_warnings(171, 0.5)
    assert "--calib-size 600 or more" in warning


def test_zero_budget_names_why_no_size_helps():
    (warning,) = resolution_warnings(1000, 0.0)
    assert "tolerates no changed prediction" in warning


def test_under_a_split_the_advice_is_one_the_split_accepts():
    """README's efficientnet example (--calib-split 300 --accuracy-budget 0.5) advised --calib-size 600, which
    the split then refused with "pass --calib-size 300" (issue 16)."""
    (warning,) = resolution_warnings(100, 0.5, split=300)
    assert "--calib-size 600" not in warning
    assert "--calib-split 600" in warning and "--accuracy-budget of 1 or more" in warning
    (warning,) = resolution_warnings(21, 1.0, split=1000)
    assert "--calib-size 300 or more" in warning  # within the split: the size is the fix
