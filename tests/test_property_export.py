"""Property test of whole exports: random small graphs of supported ops, exported and run in
tract, compared with PyTorch eager at two sizes of the dynamic axis.

A random program starts from 1-3 inputs whose shapes broadcast against each other (a leading
dynamic axis `B`, static axes, axes of size 1, fewer dimensions) in f32, f16 or f64, and applies
1-6 steps: elementwise unary and binary ops (with broadcasting), comparisons feeding `where`,
reductions over any axis, softmax, transposes, concatenation and linear layers. It returns its
last value and sometimes an earlier one too. Inputs are in [-1, 1] so products shrink and sums
stay small: a mismatch is the export's error, not float overflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import t2ir
from t2ir.tract_run import load_runnable, run_tract
from tests.fuzzing import examples

Dim = Union[int, str]  # an int, or "B": the dynamic axis
SIZES_OF_B = (2, 5)  # traced at 2, then run at 5 too
DTYPES = {"f32": torch.float32, "f16": torch.float16, "f64": torch.float64}
TOLERANCE = {"f32": 1e-4, "f16": 1e-2, "f64": 1e-6}  # both atol (times the output's scale) and rtol

UNARY = {
    "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "neg": torch.neg, "abs": torch.abs,
    "silu": F.silu, "gelu": F.gelu, "sqrt1p": lambda x: torch.sqrt(x.abs() + 1), "exp_neg": lambda x: torch.exp(-x.abs()),
}
BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "maximum": torch.maximum, "minimum": torch.minimum,
    "div": lambda a, b: a / (b.abs() + 1), "where_gt": lambda a, b: torch.where(a > b, a, b),
}
REDUCE = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax}


def broadcast(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...] | None:
    """numpy broadcasting of two shapes whose `B` is the same size; None when they do not."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(reversed(out))


@dataclass(frozen=True)
class Step:
    op: str
    args: tuple[int, ...]  # indices of earlier values
    axis: int = 0
    keepdim: bool = False
    features: int = 0  # linear: output features


@dataclass(frozen=True)
class Program:
    dtype: str
    inputs: int
    shapes: tuple[tuple[Dim, ...], ...]  # of the inputs, then of each step's result
    steps: tuple[Step, ...]
    outputs: tuple[int, ...]


def step_choices(shapes: list[tuple[Dim, ...]], i: int):
    """Every step on value `i` that fits the values so far, as (step, result shape)."""
    s = shapes[i]
    for op in UNARY:
        yield Step(op, (i,)), s
    for j, other in enumerate(shapes):
        shape = broadcast(s, other)
        if shape is not None:
            for op in BINARY:
                yield Step(op, (i, j)), shape
        if other == s and s and isinstance(s[-1], int):
            yield Step("cat", (i, j), axis=len(s) - 1), s[:-1] + (2 * s[-1],)
    for axis in range(len(s)):
        for op in REDUCE:
            for keepdim in (False, True):
                yield Step(op, (i,), axis, keepdim), s[:axis] + ((1,) if keepdim else ()) + s[axis + 1:]
    if s:
        yield Step("softmax", (i,), len(s) - 1), s
    if len(s) >= 2:
        yield Step("transpose", (i,)), s[:-2] + (s[-1], s[-2])
    if s and isinstance(s[-1], int):
        for features in (1, 3):
            yield Step("linear", (i,), features=features), s[:-1] + (features,)


@st.composite
def programs(draw) -> Program:
    rank = draw(st.integers(1, 3))
    dynamic = draw(st.booleans())
    full = tuple("B" if dynamic and axis == 0 else draw(st.integers(2, 4)) for axis in range(rank))
    shapes = [full]
    for _ in range(draw(st.integers(0, 2))):
        drop = draw(st.integers(0, rank - 1))
        shapes.append(tuple(1 if draw(st.booleans()) else d for d in full[drop:]))
    inputs = len(shapes)
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        # mostly build on the latest value, so that programs are chains more than fans
        i = draw(st.sampled_from([len(shapes) - 1, draw(st.integers(0, len(shapes) - 1))]))
        step, shape = draw(st.sampled_from(list(step_choices(shapes, i))))
        steps.append(step)
        shapes.append(shape)
    last = len(shapes) - 1
    extra = draw(st.sampled_from([None, *range(inputs, last)]))
    return Program(draw(st.sampled_from(["f32", "f32", "f16", "f64"])), inputs, tuple(shapes), tuple(steps),
                   (last,) if extra is None else (last, extra))


class Random(torch.nn.Module):
    """Runs a Program; each linear step has its own weights."""

    def __init__(self, program: Program):
        super().__init__()
        self.program = program
        self.linears = torch.nn.ModuleDict({
            str(k): torch.nn.Linear(program.shapes[s.args[0]][-1], s.features)
            for k, s in enumerate(program.steps) if s.op == "linear"})

    def forward(self, *xs):
        values = list(xs)
        for k, s in enumerate(self.program.steps):
            a = values[s.args[0]]
            if s.op in UNARY:
                out = UNARY[s.op](a)
            elif s.op in BINARY:
                out = BINARY[s.op](a, values[s.args[1]])
            elif s.op in REDUCE:
                out = REDUCE[s.op](a, dim=s.axis, keepdim=s.keepdim)
            elif s.op == "cat":
                out = torch.cat([a, values[s.args[1]]], dim=s.axis)
            elif s.op == "softmax":
                out = torch.softmax(a, dim=s.axis)
            elif s.op == "transpose":
                out = a.transpose(-1, -2)
            else:
                out = self.linears[str(k)](a)
            values.append(out)
        return tuple(values[i] for i in self.program.outputs)


def concrete(shape: tuple[Dim, ...], b: int) -> tuple[int, ...]:
    return tuple(b if d == "B" else d for d in shape)


@pytest.mark.slow
@examples(25)
@given(program=programs())
def test_random_graphs_match_pytorch_in_tract(program: Program, tmp_path_factory, property_cases) -> None:
    property_cases["export: random graphs in tract vs PyTorch"] += 1
    dtype = DTYPES[program.dtype]
    module = Random(program).eval().to(dtype)
    gen = torch.Generator().manual_seed(0)
    inputs = program.shapes[:program.inputs]
    args_at = {b: tuple((torch.rand(concrete(s, b), generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)
                        for s in inputs) for b in SIZES_OF_B}
    names = [f"x{i}" for i in range(program.inputs)]
    axes = {n: {0: "B"} for n, s in zip(names, inputs) if s and s[0] == "B"}
    path = tmp_path_factory.mktemp("random") / "model.nnef.tgz"
    t2ir.export(module, args_at[SIZES_OF_B[0]], path, input_names=names, dynamic_axes=axes)
    runnable = load_runnable(path)
    for b, args in args_at.items() if axes else list(args_at.items())[:1]:
        with torch.no_grad():
            want = [t.numpy() for t in module(*args)]
        got = run_tract(runnable, [a.numpy() for a in args])
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert g.dtype == w.dtype and g.shape == w.shape, (i, b, g.dtype, w.dtype, g.shape, w.shape)
            tol = TOLERANCE[program.dtype]
            scale = max(1.0, float(np.abs(w.astype(np.float64)).max(initial=0)))
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=tol, atol=tol * scale,
                                       err_msg=f"output {i} at B={b}")
