"""Tensor factories: arange, zeros/ones/full and their `_like` / `new_` forms, scalar_tensor."""

from __future__ import annotations

import sympy

from t2ir.ir import Node, Value
from t2ir.ops.aten._util import literal, symbol_scalar
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.types import DType, TensorType


@builtin("aten.arange", "aten.arange.start", "aten.arange.start_step", "aten.arange.start_out")
def arange(node: Node, ctx: LowerContext) -> Value:
    out = ctx.out
    start = ctx.args.get("start", 0) if node.op != "aten.arange" else 0
    end = ctx.args["end"]
    step = ctx.arg("step", 1)
    bounds = dict(start=start, end=end, step=step)
    symbolic = any(isinstance(v, sympy.Expr) and not v.is_number for v in bounds.values())
    integral = all(not isinstance(v, float) or v == int(v) for v in bounds.values())
    if not out.dtype.is_float or (symbolic and integral):  # an integer range (sizes are TDim in tract)
        bounds = {k: int(v) if isinstance(v, float) else v for k, v in bounds.items()}
        return ctx.cast(ctx.emit("tract_core.range", [], out.with_dtype(DType.i64), **bounds), out.dtype)
    # a float range: literals are f32, a symbolic bound is computed as an f32 scalar tensor
    inputs, attrs = [], {}
    for k, v in bounds.items():
        if isinstance(v, sympy.Expr) and not v.is_number:
            inputs.append(symbol_scalar(ctx, v, DType.f32))
        else:
            attrs[k] = float(v)
    return ctx.cast(ctx.emit("tract_core.range", inputs, out.with_dtype(DType.f32), **attrs), out.dtype)


def fill(ctx: LowerContext, value, out: TensorType) -> Value:
    """A tensor of `out`'s shape filled with `value` (shapes may be symbolic)."""
    scalar = literal(value, out.dtype)
    if out.dtype == DType.f32:  # float literals are f32 in tract; other types need a cast
        src = scalar
    else:
        src = ctx.emit("tract_core.cast", [], TensorType(out.dtype, ()), input=scalar, to=out.dtype.value)
    if out.rank == 0:
        return src if isinstance(src, Value) else ctx.emit("tract_core.cast", [], out, input=scalar, to=out.dtype.value)
    if isinstance(src, Value):
        return ctx.emit("tract_core.broadcast", [src], out, shape=list(out.shape))
    return ctx.emit("tract_core.broadcast", [], out, input=src, shape=list(out.shape))


_FILL_VALUE = {"zeros": 0, "ones": 1, "new_zeros": 0, "new_ones": 1, "zeros_like": 0, "ones_like": 1}


@builtin("aten.zeros", "aten.ones", "aten.new_zeros", "aten.new_ones", "aten.zeros_like", "aten.ones_like",
         "aten.full", "aten.new_full", "aten.full_like", "aten.scalar_tensor", "aten.empty.memory_format",
         "aten.empty_like", "aten.new_empty")
def full(node: Node, ctx: LowerContext) -> Value:
    kind = node.op.split(".")[1]
    if kind in _FILL_VALUE:
        value = _FILL_VALUE[kind]
    elif kind == "scalar_tensor":
        value = ctx.args["s"]
    elif kind.startswith("empty") or kind == "new_empty":
        value = 0  # uninitialised in PyTorch; zeros are one valid content
    else:
        value = ctx.args["fill_value"]
    if not isinstance(value, (int, float, bool)):
        from t2ir.ops.aten._util import symbol_scalar

        return ctx.emit("tract_core.broadcast", [symbol_scalar(ctx, value, ctx.out.dtype)], ctx.out,
                        shape=list(ctx.out.shape)) if ctx.out.rank else symbol_scalar(ctx, value, ctx.out.dtype)
    return fill(ctx, value, ctx.out)
