"""Output comparisons as objects: statistics, a tolerance chosen by precision, PASS or FAIL.

Tolerances depend on the precision the artifact runs in, never on the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Precision = Literal["fp32", "fp16", "int8"]


@dataclass(frozen=True)
class Tolerance:
    """Bounds an artifact's outputs must meet against the float reference."""

    max_rel_err: float | None = None  # max|Δ| / max|reference|
    min_cosine: float | None = None
    min_top1_agreement: float | None = None


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel_err=1e-4),
    # fp16 carries ~11 bits of mantissa: 1e-2 of the output range leaves room for accumulated rounding.
    "fp16": Tolerance(max_rel_err=1e-2, min_cosine=0.999),
    # int8 is judged by what the user sees (same class, same direction), not elementwise error.
    "int8": Tolerance(min_cosine=0.98, min_top1_agreement=0.9),
}


def tolerance_for(precision: str) -> Tolerance:
    if precision not in TOLERANCES:
        raise ValueError(f"no tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[precision]


@dataclass(frozen=True)
class Comparison:
    """Statistics of `actual` against `reference` and whether they meet the tolerance."""

    precision: str
    max_abs_err: float
    max_rel_err: float
    mean_abs_err: float
    cosine: float
    sqnr_db: float
    top1_agreement: float
    passed: bool
    nonfinite: int = 0  # NaN/Inf values among the actual outputs (or the reference's): a FAIL at any precision
    reason: str = ""  # why it failed when the statistics cannot say it (non-finite values)

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        why = f"{self.reason}; " if self.reason else ""
        return (f"{verdict} ({self.precision}): {why}max|Δ| {self.max_abs_err:.2e} "
                f"({self.max_rel_err:.2e} of max|ref|), cosine {self.cosine:.6f}, "
                f"SQNR {self.sqnr_db:.1f} dB, top-1 agreement {self.top1_agreement:.1%}")

    def to_dict(self) -> dict:
        return asdict(self)


def compare_outputs(reference: np.ndarray, actual: np.ndarray, precision: str = "fp32") -> Comparison:
    """Compare logits of shape (batch, classes) or any shape whose first axis is the batch."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(actual, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, actual {out.shape}")
    tolerance = tolerance_for(precision)
    reason = _nonfinite_reason(ref, out)
    if reason:  # NaN compares false and a NaN row's arg-max is 0: no statistic can be trusted, so none passes
        with np.errstate(all="ignore"):
            stats = _statistics(ref, out)
        nonfinite = int((~np.isfinite(out)).sum() + (~np.isfinite(ref)).sum())
        return Comparison(precision=precision, **stats, passed=False, nonfinite=nonfinite, reason=reason)
    stats = _statistics(ref, out)
    return Comparison(precision=precision, **stats, passed=_meets(stats, tolerance))


def _nonfinite_reason(ref: np.ndarray, out: np.ndarray) -> str:
    for what, values in (("the reference outputs", ref), ("the outputs", out)):
        bad = int((~np.isfinite(values)).sum())
        if bad:
            return f"{bad} of {values.size} values of {what} are NaN or Inf"
    return ""


def _statistics(ref: np.ndarray, out: np.ndarray) -> dict:
    diff = np.abs(ref - out)
    scale = max(float(np.abs(ref).max()), np.finfo(np.float32).tiny)
    noise = float(((ref - out) ** 2).sum())
    signal = float((ref ** 2).sum())
    flat_ref, flat_out = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    return {
        "max_abs_err": float(diff.max()),
        "max_rel_err": float(diff.max()) / scale,
        "mean_abs_err": float(diff.mean()),
        "cosine": _mean_cosine(flat_ref, flat_out),
        "sqnr_db": float("inf") if noise == 0 else 10.0 * float(np.log10(max(signal, 1e-300) / noise)),
        "top1_agreement": _top1_agreement(flat_ref, flat_out),
    }


def _top1_agreement(ref: np.ndarray, out: np.ndarray) -> float:
    """Share of rows with the same arg-max. A constant row (all zeros, say) has no top class, so it agrees
    only with a constant reference row (np.argmax would call it class 0); a row with a NaN or Inf agrees
    with nothing."""
    same = ref.argmax(1) == out.argmax(1)
    ref_flat, out_flat = _constant_rows(ref), _constant_rows(out)
    finite = np.isfinite(ref).all(1) & np.isfinite(out).all(1)
    return float((np.where(out_flat | ref_flat, out_flat & ref_flat, same) & finite).mean())


def _constant_rows(a: np.ndarray) -> np.ndarray:
    return a.max(1) == a.min(1)


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine of the rows; a zero row is at cosine 0 to any non-zero row and 1 only to another zero row."""
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (norm_a == 0) & (norm_b == 0)
    cos = (a * b).sum(1) / np.maximum(norm_a * norm_b, 1e-300)
    return float(np.where(both_zero, 1.0, cos).mean())


def _meets(stats: dict, tol: Tolerance) -> bool:
    checks = [
        tol.max_rel_err is None or stats["max_rel_err"] <= tol.max_rel_err,
        tol.min_cosine is None or stats["cosine"] >= tol.min_cosine,
        tol.min_top1_agreement is None or stats["top1_agreement"] >= tol.min_top1_agreement,
    ]
    return all(checks)
