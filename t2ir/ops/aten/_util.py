"""Helpers shared by the aten translators: axes, broadcasting, literals, dtype promotion."""

from __future__ import annotations

from typing import Any, Sequence

import sympy

from t2ir.ir import Value
from t2ir.ops.context import LowerContext
from t2ir.errors import TranslationError
from t2ir.types import DType, TensorType


def norm_axis(axis: int, rank: int) -> int:
    """A torch dim (maybe negative) as a non-negative axis."""
    if rank == 0:
        return 0
    if not -rank <= axis < rank:
        raise TranslationError(f"dimension {axis} is out of range for a rank-{rank} tensor")
    return axis % rank


def norm_axes(axes: Sequence[int] | int | None, rank: int) -> list[int]:
    if axes is None or (isinstance(axes, (list, tuple)) and len(axes) == 0):
        return list(range(rank))
    if isinstance(axes, int):
        axes = [axes]
    return sorted({norm_axis(a, rank) for a in axes})


def literal(value: Any, dtype: DType) -> Any:
    """A Python scalar as an NNEF literal of the right kind (tract wants 2.0 for float tensors)."""
    if isinstance(value, sympy.Expr):
        raise TranslationError("a symbolic size used as a tensor scalar is not supported here")
    if dtype == DType.bool:
        return bool(value)
    if dtype.is_float:
        return float(value)
    return int(value)


def unsqueeze_to_rank(ctx: LowerContext, v: Value, rank: int) -> Value:
    """Add leading unit axes (numpy broadcasting) since tract's binary ops need equal ranks."""
    missing = rank - v.rank
    if missing <= 0:
        return v
    t = v.type.with_shape((1,) * missing + tuple(v.shape))
    return ctx.emit("nnef.unsqueeze", [v], t, axes=list(range(missing)))


def symbol_scalar(ctx: LowerContext, dim: Any, dtype: DType) -> Value:
    """A symbolic size (S, batch + 1, W / (W + 3)) as a rank-0 tensor, for arithmetic with
    tensors. Integer expressions are one cast of a dimension expression; others (a ratio of
    sizes, a float scale) are computed in the graph from their integer parts."""
    expr = sympy.sympify(dim)
    t = TensorType(dtype, ())
    if expr.is_integer or not dtype.is_float:
        return ctx.emit("tract_core.cast", [], t, input=dim, to=dtype.value)
    if expr.is_number:
        return ctx.emit("tract_core.cast", [], t, input=float(expr), to=dtype.value)
    if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and expr.exp < 0:
        base = symbol_scalar(ctx, expr.base ** -expr.exp, dtype)
        return ctx.emit("nnef.div", [base], t, x=1.0)
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        op = "nnef.add" if isinstance(expr, sympy.Add) else "nnef.mul"
        parts = [symbol_scalar(ctx, a, dtype) for a in expr.args]
        out = parts[0]
        for p in parts[1:]:
            out = ctx.emit(op, [out, p], t)
        return out
    if isinstance(expr, (sympy.floor, sympy.ceiling)):
        op = "nnef.floor" if isinstance(expr, sympy.floor) else "nnef.ceil"
        return ctx.emit(op, [symbol_scalar(ctx, expr.args[0], dtype)], t)
    raise TranslationError(f"the size expression {expr} cannot be computed in the graph")


def scalar_or_value(ctx: LowerContext, v: Any, dtype: DType) -> Any:
    """An operand as either a literal (number) or a Value of `dtype`."""
    if isinstance(v, Value):
        return ctx.cast(v, dtype)
    if isinstance(v, sympy.Expr):
        return symbol_scalar(ctx, v, dtype)
    if not dtype.is_float:  # tract reads integer literals as symbolic sizes (TDim): make a typed tensor
        return ctx.emit("tract_core.cast", [], TensorType(dtype, ()), input=literal(v, dtype), to=dtype.value)
    return literal(v, dtype)


def promote(*dtypes: DType) -> DType:
    """torch's type promotion among tensor operands (floats win, wider wins)."""
    order = [DType.bool, DType.u8, DType.i8, DType.i16, DType.i32, DType.i64,
             DType.f16, DType.bf16, DType.f32, DType.f64]
    return max(dtypes, key=order.index)


def unit_type(dtype: DType) -> TensorType:
    return TensorType(dtype, ())
