"""Runs an exported model in the real tract engine and compares it with reference outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from t2ir.errors import T2IRError


@dataclass(frozen=True)
class IOFact:
    """A model input or output as tract sees it: name, dims (ints or symbol expressions), dtype."""

    name: str
    dims: tuple[int | str, ...]
    dtype: str  # tract's spelling: f32, f16, i64, ...

    @staticmethod
    def parse(name: str, fact: str) -> "IOFact":
        *dims, dtype = str(fact).split(",")
        return IOFact(name, tuple(int(d) if d.lstrip("-").isdigit() else d for d in dims), dtype)


def load_model(path: Path | str):
    """A tract Model (not yet runnable) from a folder or .tgz, with the transformers registry on."""
    try:
        import tract
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise T2IRError("the `tract` package is needed to run models: pip install tract") from e
    try:
        return tract.nnef().with_tract_transformers().load(str(path))
    except Exception as e:
        raise T2IRError(f"tract could not load {path}: {_short(e)}") from None


def io_facts(model) -> tuple[list[IOFact], list[IOFact]]:
    """The model's inputs and outputs (read before `into_runnable`, which consumes the model)."""
    ins = [IOFact.parse(model.input_name(i), model.input_fact(i)) for i in range(model.input_count())]
    outs = [IOFact.parse(model.output_name(i), model.output_fact(i)) for i in range(model.output_count())]
    return ins, outs


def load_runnable(path: Path | str):
    """Load a folder or .tgz with the transformers registry on, ready to run."""
    model = load_model(path)
    try:
        return model.into_runnable()
    except Exception as e:
        raise T2IRError(f"tract could not prepare {path} to run: {_short(e)}") from None


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
