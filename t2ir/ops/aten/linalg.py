"""Matrix products: linear, matmul/mm/bmm, addmm, einsum."""

from __future__ import annotations

import string

from t2ir.ir import Node, Value
from t2ir.ops.aten._util import unsqueeze_to_rank
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.types import DType, TensorType


def require_float(ctx: LowerContext) -> None:
    """tract has no integer matrix product (an i64 matmul aborts the whole process)."""
    if not ctx.out.dtype.is_float:
        from t2ir.errors import TranslationError

        raise TranslationError(f"matrix products on {ctx.out.dtype} are not supported by tract",
                               "cast the operands to float (e.g. .float()) before the product")


def add_bias(ctx: LowerContext, y: Value, bias: Value | None) -> Value:
    if bias is None:
        return y
    return ctx.emit("nnef.add", [y, unsqueeze_to_rank(ctx, ctx.cast(bias, y.dtype), y.rank)], y.type)


def linear_matmul(ctx: LowerContext, x: Value, w: Value, out: TensorType) -> Value:
    """x [..., K] @ w[N, K]^T; the weight keeps PyTorch's [out, in] layout (Q4_0 needs it).

    Inputs of rank 4 and more are an einsum with the weight as it is: as a matmul the weight
    would get unit axes up to x's rank, and tract 0.23.9 then fails folding a reshape that splits
    x's first axis into the product ("Incompatible reshape ... [1, 1, N, K]": Hiera's windows)."""
    if x.rank >= 4:
        return linear_einsum(ctx, x, w, out, acc=out.dtype)
    if x.rank == 1:
        x1 = ctx.emit("nnef.unsqueeze", [x], x.type.with_shape((1,) + tuple(x.shape)), axes=[0])
        y = ctx.emit("nnef.matmul", [x1, w], out.with_shape((1,) + tuple(out.shape)), transposeB=True)
        return ctx.emit("nnef.squeeze", [y], out, axes=[0])
    w = unsqueeze_to_rank(ctx, w, x.rank)
    return ctx.emit("nnef.matmul", [x, w], out, transposeB=True)


def linear_einsum(ctx: LowerContext, x: Value, w: Value, out: TensorType, acc: DType) -> Value:
    """x [..., K] @ w[N, K]^T as tract's einsum, summed in `acc`; the weight keeps its layout,
    rank and storage (Q4_0 works as an einsum operand)."""
    letters = string.ascii_lowercase[: x.rank - 1]
    return ctx.emit("tract_core.einsum", [x, w], out, expr=f"{letters}k,nk->{letters}n", acc=acc.value, output="")


@builtin("aten.linear")
def linear(node: Node, ctx: LowerContext) -> Value:
    require_float(ctx)
    x, w, b = ctx.args["input"], ctx.args["weight"], ctx.args.get("bias")
    out = ctx.out
    if ctx.options.f32_linear_acc and out.dtype == DType.f16 and x.rank >= 1:
        # summed in f32 (tract's einsum `acc`), for `f32_linear_acc` on half graphs
        y = linear_einsum(ctx, ctx.cast(x, out.dtype), w, out.with_dtype(DType.f32), acc=DType.f32)
        return ctx.cast(add_bias(ctx, y, b), out.dtype)
    y = linear_matmul(ctx, ctx.cast(x, out.dtype), w, out)
    return add_bias(ctx, y, b)


@builtin("aten.matmul", "aten.mm", "aten.bmm")
def matmul(node: Node, ctx: LowerContext) -> Value:
    require_float(ctx)
    a, b = node.inputs
    out = ctx.out
    a, b = ctx.cast(a, out.dtype), ctx.cast(b, out.dtype)
    if a.rank == 1 and b.rank == 1:  # dot product
        prod = ctx.emit("nnef.mul", [a, b], a.type)
        return ctx.emit("nnef.squeeze", [ctx.emit("nnef.sum_reduce", [prod], a.type.with_shape((1,)), axes=[0])],
                        out, axes=[0])
    squeeze = []
    if a.rank == 1:
        a = ctx.emit("nnef.unsqueeze", [a], a.type.with_shape((1,) + tuple(a.shape)), axes=[0])
        squeeze.append(-2)
    if b.rank == 1:
        b = ctx.emit("nnef.unsqueeze", [b], b.type.with_shape(tuple(b.shape) + (1,)), axes=[1])
        squeeze.append(-1)
    rank = max(a.rank, b.rank)
    a, b = unsqueeze_to_rank(ctx, a, rank), unsqueeze_to_rank(ctx, b, rank)
    if not squeeze:
        return ctx.emit("nnef.matmul", [a, b], out)
    full = out.with_shape(_unsqueezed(out.shape, squeeze, rank))
    y = ctx.emit("nnef.matmul", [a, b], full)
    return ctx.emit("nnef.squeeze", [y], out, axes=sorted(s % rank for s in squeeze))


def _unsqueezed(shape, squeezed: list[int], rank: int) -> tuple:
    dims = list(shape)
    for s in sorted(s % rank for s in squeezed):
        dims.insert(s, 1)
    return tuple(dims)


@builtin("aten.addmm")
def addmm(node: Node, ctx: LowerContext) -> Value:
    require_float(ctx)
    bias, a, b = ctx.args["self"], ctx.args["mat1"], ctx.args["mat2"]
    out = ctx.out
    y = ctx.emit("nnef.matmul", [a, b], out)
    beta, alpha = ctx.arg("beta", 1), ctx.arg("alpha", 1)
    if alpha != 1:
        y = ctx.emit("nnef.mul", [y], out, y=float(alpha))
    if beta != 1:
        bias = ctx.emit("nnef.mul", [bias], bias.type, y=float(beta))
    return add_bias(ctx, y, bias)


@builtin("aten.einsum")
def einsum(node: Node, ctx: LowerContext) -> Value:
    require_float(ctx)
    out = ctx.out
    inputs = [ctx.cast(v, out.dtype) for v in node.inputs]
    expr = explicit_einsum(ctx.args["equation"], [v.rank for v in inputs])
    if out.rank == 0:  # a full contraction: tract's einsum wants an output axis, so keep a unit one
        lhs = expr.split("->")[0]
        unit = next(c for c in string.ascii_letters if c not in expr)
        inputs = [ctx.emit("nnef.unsqueeze", [inputs[0]], inputs[0].type.with_shape((1,) + tuple(inputs[0].shape)),
                           axes=[0])] + inputs[1:]
        terms = lhs.split(",")
        expr = ",".join([unit + terms[0]] + terms[1:]) + "->" + unit
        y = ctx.emit("tract_core.einsum", inputs, out.with_shape((1,)), expr=expr, acc=out.dtype.value, output="")
        return ctx.emit("nnef.squeeze", [y], out, axes=[0])
    return ctx.emit("tract_core.einsum", inputs, out, expr=expr, acc=out.dtype.value, output="")


def explicit_einsum(equation: str, ranks: list[int]) -> str:
    """An einsum equation with the output spelled out and `...` replaced by letters (tract
    aborts on `...`): "...ij,jk" -> "abij,jk->abik" for a rank-4 first operand."""
    expr = equation.replace(" ", "")
    lhs, _, rhs = expr.partition("->")
    terms = lhs.split(",")
    if "->" not in expr:
        letters = [c for c in lhs if c.isalpha()]
        rhs = ("..." if "..." in lhs else "") + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    free = [c for c in string.ascii_letters if c not in expr]
    widths = [rank - (len(t) - 3) for t, rank in zip(terms, ranks) if "..." in t]
    ell = "".join(free[: max(widths, default=0)])
    terms = [t.replace("...", ell[len(ell) - (rank - (len(t) - 3)):]) if "..." in t else t
             for t, rank in zip(terms, ranks)]
    return ",".join(terms) + "->" + rhs.replace("...", ell)
