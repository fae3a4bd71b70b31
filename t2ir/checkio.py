"""Comparing tract's outputs with PyTorch's, with tract's own tolerance levels.

The level names and numbers are tract's (`Approximation` in tract-data), so `--check-io ultra`
means what it means to tract and to torch_to_nnef users, loosest last:

    exact < close < approximate < very < super < ultra

A value passes when |got - want| <= atol + rtol * |want| (NaN against NaN and infinities of the
same sign pass too); a level with an outlier fraction lets that fraction of values fail. Levels
tighten differently for f16 outputs, as tract does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

LEVELS = ("exact", "close", "approximate", "very", "super", "ultra")
DEFAULT_LEVEL = "approximate"

# level -> (atol, rtol, fraction of values allowed to fail)
_TOLERANCES = {
    "exact": (0.0, 0.0, 0.0),
    "close": (1e-7, 1e-7, 0.0),
    "approximate": (1e-4, 5e-4, 0.0),
    "very": (5e-2, 1e-2, 0.0),
    "super": (0.1, 0.05, 1e-4),
    "ultra": (0.2, 0.1, 5e-4),
}
_F16_TOLERANCES = {"close": (1e-3, 1e-3, 0.0), "approximate": (1e-3, 5e-3, 0.0)}


@dataclass(frozen=True)
class Tolerance:
    """How close two outputs must be: a tract level, or custom numbers (tract's `Custom`)."""

    name: str
    atol: float
    rtol: float
    outliers: float = 0.0

    def __str__(self) -> str:
        extra = f", {self.outliers:g} outliers" if self.outliers else ""
        return f"{self.name} (atol {self.atol:g}, rtol {self.rtol:g}{extra})"


def check_level(level: str) -> str:
    if level not in _TOLERANCES:
        raise ValueError(f"unknown tolerance level {level!r}: use one of {', '.join(LEVELS)} (strictest first)")
    return level


def tolerance(level: str, dtype: np.dtype | str = "float32") -> Tolerance:
    """tract's tolerance for `level` on outputs of `dtype` (f16 has its own close/approximate)."""
    check_level(level)
    table = _F16_TOLERANCES if np.dtype(dtype) == np.float16 else {}
    return Tolerance(level, *table.get(level, _TOLERANCES[level]))


def custom(atol: float, rtol: float = 0.0, outliers: float = 0.0) -> Tolerance:
    return Tolerance("custom", float(atol), float(rtol), float(outliers))


@dataclass
class OutputCheck:
    """One output of one run compared with its reference."""

    output: str
    max_abs_diff: float
    failed: int          # values outside atol + rtol * |want|
    total: int
    tolerance: Tolerance
    shape_ok: bool = True
    case: str = ""

    @property
    def passed(self) -> bool:
        if not self.shape_ok:
            return False
        return self.total == 0 or self.failed / self.total <= self.tolerance.outliers

    def __str__(self) -> str:
        where = f"{self.case}:" if self.case else ""
        if not self.shape_ok:
            return f"{where}{self.output}: shape mismatch"
        return (f"{where}{self.output}: max |diff| = {self.max_abs_diff:.3g}, {self.failed}/{self.total} values "
                f"outside {self.tolerance}")

    def as_dict(self) -> dict:
        return {"case": self.case, "output": self.output, "max_abs_diff": self.max_abs_diff, "failed": self.failed,
                "total": self.total, "tolerance": self.tolerance.name, "passed": self.passed}


def compare(name: str, got: np.ndarray, want: np.ndarray, tol: Tolerance | str, case: str = "") -> OutputCheck:
    """Compare one tract output with its reference at a level name (per `got`'s dtype) or a Tolerance."""
    got, want = np.asarray(got), np.asarray(want)
    if isinstance(tol, str):
        tol = tolerance(tol, got.dtype if got.dtype.kind == "f" else np.float32)
    if got.shape != want.shape:
        return OutputCheck(name, float("inf"), want.size, want.size, tol, shape_ok=False, case=case)
    if got.dtype == bool or want.dtype == bool or got.dtype.kind in "iu" and want.dtype.kind in "iu":
        bad = got != want
        return OutputCheck(name, float(np.count_nonzero(bad)), int(np.count_nonzero(bad)), got.size, tol, case=case)
    g, w = got.astype(np.float64), want.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(g - w)
        ok = diff <= tol.atol + tol.rtol * np.abs(w)
    ok |= np.isnan(g) & np.isnan(w)
    ok |= np.isinf(g) & np.isinf(w) & (np.sign(g) == np.sign(w))
    finite = diff[np.isfinite(diff)]
    worst = float(finite.max()) if finite.size else (0.0 if ok.all() else float("inf"))
    return OutputCheck(name, worst, int(np.count_nonzero(~ok)), got.size, tol, case=case)


def failures(checks: list[OutputCheck]) -> list[OutputCheck]:
    return [c for c in checks if not c.passed]


def describe_failures(checks: list[OutputCheck], hint: Optional[str] = None) -> str:
    lines = "\n  ".join(str(c) for c in failures(checks))
    text = f"tract's outputs differ from PyTorch's:\n  {lines}"
    return text + (f"\n  -> {hint}" if hint else "")
