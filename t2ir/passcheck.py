"""`check_passes`: evaluate the graph after lifting and after every pass with the reference
interpreter on the export's inputs, and compare its outputs with the module's own. A pass that
breaks numerics is named the moment it runs (PassNumericsError), with the difference before it.

Weights are read as floats even once compress-weights has marked them packed: the check is about
what each pass does to the graph; the quantization error is the quantization report's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from t2ir.checkio import OutputCheck, Tolerance, compare
from t2ir.errors import T2IRError
from t2ir.interpret import Interpreter, as_numpy
from t2ir.ir import Graph, Value


class PassNumericsError(T2IRError):
    """A pass changed the graph's outputs beyond the tolerance."""


@dataclass
class PassCheck:
    """The graph after one pass (or "lift") against the module's outputs."""

    name: str
    outputs: list[OutputCheck]

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.outputs), default=0.0)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.outputs)

    def as_dict(self) -> dict:
        return {"pass": self.name, "max_abs_diff": self.max_abs_diff, "passed": self.passed}


def float_weights(v: Value) -> torch.Tensor:
    """A constant as its float values, whatever encoding it will be stored in."""
    return v.const.source.load().detach().to(v.dtype.torch)


class PassChecker:
    """Evaluates the graph on `inputs` after each pass and compares with `expected` (the module's
    outputs; None: the lifted graph's own evaluation, which runs the module's aten ops)."""

    def __init__(self, inputs: Sequence, expected: Optional[Sequence[np.ndarray]], tol: Tolerance | str):
        self.inputs = list(inputs)
        self.expected = None if expected is None else [np.asarray(e) for e in expected]
        self.tol = tol
        self.checks: list[PassCheck] = []

    def check(self, name: str, graph: Graph) -> PassCheck:
        got = Interpreter(graph, float_weights).outputs(self.inputs)
        if self.expected is None:
            self.expected = [as_numpy(t) for t in got]
        if len(got) != len(self.expected):
            raise PassNumericsError(f"after pass {name!r} the graph has {len(got)} outputs, the module "
                                    f"{len(self.expected)}")
        outputs = [compare(v.name, as_numpy(t), want, self.tol, case=name)
                   for v, t, want in zip(graph.outputs, got, self.expected)]
        result = PassCheck(name, outputs)
        self.checks.append(result)
        return result

    def after_pass(self, name: str, graph: Graph) -> None:
        """The pipeline's `after_pass` hook: check, and stop at the first pass that breaks numerics."""
        result = self.check(name, graph)
        if result.passed:
            return
        before = self.checks[-2] if len(self.checks) > 1 else None
        was = f"; before it ({before.name}) the max |diff| was {before.max_abs_diff:.3g}" if before else ""
        worst = "; ".join(str(c) for c in result.outputs if not c.passed)
        raise PassNumericsError(f"pass {name!r} changed the outputs beyond {self.tol}: {worst}{was}. "
                                f"See what it did with dump_ir / --dump-ir and `t2ir diff DUMPS --pass {name}`")

    def lines(self) -> list[str]:
        return [f"{c.name:<24} max |diff| {c.max_abs_diff:.3g}" + ("" if c.passed else "  FAILED")
                for c in self.checks]
