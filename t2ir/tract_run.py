"""Runs an exported model in the real tract engine and compares it with reference outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from t2ir.errors import CheckIOError, T2IRError


def load_runnable(path: Path | str):
    """Load a folder or .tgz with the transformers registry on, ready to run."""
    try:
        import tract
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise T2IRError("the `tract` package is needed to run models: pip install tract") from e
    try:
        return tract.nnef().with_tract_transformers().load(str(path)).into_runnable()
    except Exception as e:
        raise T2IRError(f"tract could not load {path}: {_short(e)}") from None


def _short(e: Exception) -> str:
    """tract errors carry a Rust backtrace; keep the message and its 'Caused by' chain only."""
    text = str(e).split("Stack backtrace:", 1)[0]
    lines = [l.strip() for l in text.splitlines() if l.strip() and l.strip() != "Caused by:"]
    if len(lines) > 8:  # the innermost causes say what is wrong
        lines = lines[:2] + ["..."] + lines[-5:]
    return " / ".join(lines)


def run_tract(runnable, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    try:
        # np.ascontiguousarray would turn a rank-0 input into rank 1
        return [o.to_numpy() for o in runnable.run([np.require(i, requirements="C") for i in inputs])]
    except Exception as e:
        raise T2IRError(f"tract failed to run the model: {_short(e)}") from None


@dataclass
class Comparison:
    name: str
    max_abs_diff: float
    shape_ok: bool

    def __str__(self) -> str:
        return f"{self.name}: max |diff| = {self.max_abs_diff:.3g}" + ("" if self.shape_ok else " (shape mismatch)")


def compare_outputs(names: Sequence[str], got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> list[Comparison]:
    out = []
    for name, g, w in zip(names, got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            out.append(Comparison(name, float("inf"), False))
            continue
        if g.dtype == bool or w.dtype == bool:
            diff = float(np.count_nonzero(g != w))
        else:
            diff = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) if g.size else 0.0
        out.append(Comparison(name, diff, True))
    return out


def check_close(comparisons: Sequence[Comparison], atol: float) -> None:
    bad = [c for c in comparisons if not c.shape_ok or not c.max_abs_diff <= atol]
    if bad:
        lines = "\n  ".join(str(c) for c in bad)
        raise CheckIOError(f"tract's outputs differ from PyTorch's beyond atol={atol}:\n  {lines}")
