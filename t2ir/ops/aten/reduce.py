"""Reductions: sum/mean/prod/max/min (with indices), argmax/argmin, var/std, any/all, cumsum,
logsumexp and vector norms. tract's reductions keep the reduced axes (size 1); torch's
`keepdim=False` is a squeeze after them."""

from __future__ import annotations

from typing import Any

from t2ir.ir import Node, Value
from t2ir.errors import TranslationError
from t2ir.ops.aten._util import norm_axes, norm_axis, promote, scalar_or_value, unsqueeze_to_rank
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.ops.aten.factories import fill
from t2ir.types import DType, TensorType


def kept_type(x: Value, axes: list[int], dtype: DType | None = None) -> TensorType:
    """x's type with the reduced axes kept as size 1."""
    t = x.type.with_shape(tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    return t.with_dtype(dtype) if dtype is not None else t


def finish(ctx: LowerContext, y: Value, axes: list[int], keepdim: bool, out: TensorType) -> Value:
    """Drop the reduced axes unless keepdim (the output type says which shape torch wants; a
    scalar reduced as a one-element vector loses its axis even with keepdim)."""
    if y.rank == out.rank or not axes:
        return y
    return ctx.emit("nnef.squeeze", [y], out.with_dtype(y.dtype), axes=axes)


def as_vector(ctx: LowerContext, x: Value) -> Value:
    """A scalar reduced "over axis 0" (torch allows dim=0 and -1 on 0-d tensors) is a
    one-element vector reduced over axis 0; tract cannot reduce a rank-0 tensor."""
    return ctx.emit("nnef.unsqueeze", [x], x.type.with_shape((1,)), axes=[0]) if x.rank == 0 else x


def reduce_op(ctx: LowerContext, op: str, x: Value, axes: list[int], keepdim: bool, out: TensorType) -> Value:
    y = ctx.emit(op, [x], kept_type(x, axes, out.dtype if op.startswith(("nnef.arg", "tract_core.arg")) else None),
                 axes=axes)
    return finish(ctx, y, axes, keepdim, out)


def _axes(ctx: LowerContext, x: Value) -> list[int]:
    return norm_axes(ctx.args.get("dim"), x.rank)


_REDUCE = {"mean": "nnef.mean_reduce", "sum": "nnef.sum_reduce", "amax": "nnef.max_reduce",
           "amin": "nnef.min_reduce", "prod": "tract_core.product_reduce", "max": "nnef.max_reduce",
           "min": "nnef.min_reduce"}


@builtin("aten.mean.dim", "aten.sum.dim_IntList", "aten.amax", "aten.amin", "aten.mean", "aten.sum",
         "aten.prod.dim_int", "aten.prod", "aten.max", "aten.min")
def reduce(node: Node, ctx: LowerContext) -> Value:
    """Reductions to values; the input is first cast to the output type (sum of bools is i64,
    mean(dtype=f32) of f16 computes in f32)."""
    x = ctx.args["self"]
    out = ctx.out
    kind = node.op.split(".")[1]
    axes = _axes(ctx, x)
    if x.rank == 0:
        return ctx.cast(x, out.dtype)
    return reduce_op(ctx, _REDUCE[kind], ctx.cast(x, out.dtype), axes, bool(ctx.arg("keepdim", False)), out)


@builtin("prims.prod")
def prims_prod(node: Node, ctx: LowerContext) -> Value:
    """torch's decompositions' product (cumprod as a masked product over a triangle, vander)."""
    x = ctx.args["inp"]
    axes = norm_axes(ctx.args.get("dims"), x.rank)
    if x.rank == 0 or not axes:
        return ctx.cast(x, ctx.out.dtype)
    return reduce_op(ctx, "tract_core.product_reduce", ctx.cast(x, ctx.out.dtype), axes, False, ctx.out)


def _arg_reduce(ctx: LowerContext, op: str, x: Value, dim: Any, keepdim: bool, out: TensorType) -> Value:
    """argmax/argmin over one axis, or over the flattened tensor when dim is None."""
    if dim is None:
        n = 1
        for d in x.shape:
            n = n * d
        x = ctx.emit("nnef.reshape", [x], x.type.with_shape((n,)), shape=[n])
        y = ctx.emit(op, [x], TensorType(DType.i64, (1,)), axes=[0])
        if keepdim:
            return ctx.emit("nnef.reshape", [y], out, shape=list(out.shape))
        return ctx.emit("nnef.squeeze", [y], out, axes=[0])  # tract's reshape cannot make a scalar
    axis = norm_axis(dim, x.rank)
    return reduce_op(ctx, op, x, [axis], keepdim, out)


@builtin("aten.argmax", "aten.argmin")
def argmax(node: Node, ctx: LowerContext) -> Value:
    """First index of the extreme value on ties, like torch."""
    op = "nnef.argmax_reduce" if node.op == "aten.argmax" else "nnef.argmin_reduce"
    x = as_vector(ctx, ctx.args["self"])
    return _arg_reduce(ctx, op, x, ctx.args.get("dim"), bool(ctx.arg("keepdim", False)), ctx.out)


@builtin("aten.max.dim", "aten.min.dim")
def max_dim(node: Node, ctx: LowerContext) -> list[Value]:
    """(values, indices) over one axis: a max/min reduce and an argmax/argmin reduce."""
    x = as_vector(ctx, ctx.args["self"])
    is_max = node.op == "aten.max.dim"
    axis = norm_axis(ctx.args["dim"], x.rank)
    keepdim = bool(ctx.arg("keepdim", False))
    values_t, indices_t = (o.type for o in node.outputs)
    values = reduce_op(ctx, "nnef.max_reduce" if is_max else "nnef.min_reduce", x, [axis], keepdim, values_t)
    indices = reduce_op(ctx, "nnef.argmax_reduce" if is_max else "nnef.argmin_reduce", x, [axis], keepdim, indices_t)
    return [values, indices]


def _count(x: Value, axes: list[int]) -> Any:
    n = 1
    for a in axes:
        n = n * x.shape[a]
    return n


def variance(ctx: LowerContext, x: Value, axes: list[int], correction: float) -> tuple[Value, Value]:
    """(mean, var) with kept axes; var divides the squared deviations by N - correction."""
    t = kept_type(x, axes)
    mean = ctx.emit("nnef.mean_reduce", [x], t, axes=axes)
    sq = ctx.emit("nnef.square", [ctx.emit("nnef.sub", [x, mean], x.type)], x.type)
    if correction == 0:
        return mean, ctx.emit("nnef.mean_reduce", [sq], t, axes=axes)
    total = ctx.emit("nnef.sum_reduce", [sq], t, axes=axes)
    n = _count(x, axes)
    if isinstance(n, int):
        return mean, ctx.emit("nnef.div", [total], t, y=float(n - correction))
    n = ctx.emit("nnef.sub", [scalar_or_value(ctx, n, x.dtype)], t.with_shape(()), y=float(correction))
    return mean, ctx.emit("nnef.div", [total, unsqueeze_to_rank(ctx, n, t.rank)], t)


def _correction(ctx: LowerContext) -> float:
    if "correction" in ctx.args and ctx.args["correction"] is not None:
        return float(ctx.args["correction"])
    unbiased = ctx.args.get("unbiased")
    return 1.0 if unbiased is None or unbiased else 0.0


@builtin("aten.var.dim", "aten.var.correction", "aten.std.dim", "aten.std.correction", "aten.var", "aten.std",
         "aten.var_mean.dim", "aten.var_mean.correction", "aten.std_mean.dim", "aten.std_mean.correction")
def var_std(node: Node, ctx: LowerContext):
    """Variance from the mean of squared deviations (two passes, like torch, no cancellation)."""
    kind = node.op.split(".")[1]
    x = as_vector(ctx, ctx.cast(ctx.args["self"], ctx.out.dtype))
    axes = _axes(ctx, x)
    keepdim = bool(ctx.arg("keepdim", False))
    mean, var = variance(ctx, x, axes, _correction(ctx))
    if kind.startswith("std"):
        var = ctx.emit("nnef.sqrt", [var], var.type)
    first = finish(ctx, var, axes, keepdim, node.outputs[0].type)
    if kind.endswith("_mean"):
        return [first, finish(ctx, mean, axes, keepdim, node.outputs[1].type)]
    return first


@builtin("aten.any", "aten.any.dim", "aten.any.dims", "aten.all", "aten.all.dim", "aten.all.dims")
def any_all(node: Node, ctx: LowerContext) -> Value:
    x = ctx.args["self"]
    op = "nnef.any_reduce" if node.op.split(".")[1] == "any" else "nnef.all_reduce"
    if x.rank == 0:
        return ctx.cast(x, DType.bool)
    axes = _axes(ctx, x)
    return reduce_op(ctx, op, ctx.cast(x, DType.bool), axes, bool(ctx.arg("keepdim", False)), ctx.out)


@builtin("aten.cumsum")
def cumsum(node: Node, ctx: LowerContext) -> Value:
    x = ctx.cast(ctx.args["self"], ctx.out.dtype)
    if x.rank == 0:
        return x
    return ctx.emit("tract_core.cumsum", [x], ctx.out, axis=norm_axis(ctx.args["dim"], x.rank),
                    exclusive=False, reverse=False)


@builtin("aten.diff")
def diff(node: Node, ctx: LowerContext) -> Value:
    """x[1:] - x[:-1] along `dim`, n times, after concatenating prepend/append (xor for bools)."""
    from t2ir.ops.aten.indexing import slice_axis

    x = ctx.args["self"]
    axis = norm_axis(ctx.arg("dim", -1), x.rank)
    parts = [v for v in (ctx.args.get("prepend"), x, ctx.args.get("append")) if v is not None]
    if len(parts) > 1:
        n = 0
        for v in parts:
            n = n + v.shape[axis]
        x = ctx.emit("nnef.concat", [ctx.cast(v, x.dtype) for v in parts],
                     x.type.with_shape(tuple(n if i == axis else d for i, d in enumerate(x.shape))), axis=axis)
    op = "tract_core.xor" if x.dtype == DType.bool else "nnef.sub"
    for _ in range(int(ctx.arg("n", 1))):
        size = x.shape[axis]
        later, earlier = slice_axis(ctx, x, axis, 1, size), slice_axis(ctx, x, axis, 0, size - 1)
        x = ctx.emit(op, [later, earlier], later.type)
    return x


@builtin("aten.logsumexp")
def logsumexp(node: Node, ctx: LowerContext) -> Value:
    """log(sum(exp(x - max))) + max: no overflow for large inputs."""
    x = as_vector(ctx, ctx.cast(ctx.args["self"], ctx.out.dtype))
    axes = _axes(ctx, x)
    t = kept_type(x, axes)
    m = ctx.emit("nnef.max_reduce", [x], t, axes=axes)
    e = ctx.emit("nnef.exp", [ctx.emit("nnef.sub", [x, m], x.type)], x.type)
    y = ctx.emit("nnef.add", [ctx.emit("nnef.log", [ctx.emit("nnef.sum_reduce", [e], t, axes=axes)], t), m], t)
    return finish(ctx, y, axes, bool(ctx.arg("keepdim", False)), ctx.out)


@builtin("aten.linalg_vector_norm", "aten.norm.ScalarOpt_dim", "aten.norm.Scalar")
def vector_norm(node: Node, ctx: LowerContext) -> Value:
    x = as_vector(ctx, ctx.cast(ctx.args["self"], ctx.out.dtype))
    ord_ = ctx.args.get("ord", ctx.args.get("p"))
    ord_ = 2.0 if ord_ is None else float(ord_)
    axes = _axes(ctx, x)
    keepdim = bool(ctx.arg("keepdim", False))
    t = kept_type(x, axes)
    a = ctx.emit("nnef.abs", [x], x.type)
    if ord_ == float("inf"):
        y = ctx.emit("nnef.max_reduce", [a], t, axes=axes)
    elif ord_ == float("-inf"):
        y = ctx.emit("nnef.min_reduce", [a], t, axes=axes)
    elif ord_ == 0:
        nz = ctx.cast(ctx.emit("nnef.ne", [x], x.type.with_dtype(DType.bool), y=0.0), x.dtype)
        y = ctx.emit("nnef.sum_reduce", [nz], t, axes=axes)
    elif ord_ == 1:
        y = ctx.emit("nnef.sum_reduce", [a], t, axes=axes)
    elif ord_ == 2:
        y = ctx.emit("nnef.sqrt", [ctx.emit("nnef.sum_reduce", [ctx.emit("nnef.square", [x], x.type)], t, axes=axes)], t)
    else:
        p = ctx.emit("nnef.pow", [a], x.type, y=ord_)
        y = ctx.emit("nnef.pow", [ctx.emit("nnef.sum_reduce", [p], t, axes=axes)], t, y=1.0 / ord_)
    return finish(ctx, y, axes, keepdim, ctx.out)


@builtin("aten.topk")
def topk(node: Node, ctx: LowerContext) -> list[Value]:
    """(values, indices) of the k largest (or smallest), sorted (also a valid order for sorted=False)."""
    x = ctx.args["self"]
    axis = norm_axis(ctx.arg("dim", -1), x.rank)
    return _topk(ctx, x, ctx.args["k"], axis, bool(ctx.arg("largest", True)), [o.type for o in node.outputs])


def _topk(ctx: LowerContext, x: Value, k: Any, axis: int, largest: bool, types) -> list[Value]:
    if x.rank == 0:
        return [x, fill(ctx, 0, types[1])]
    if not isinstance(k, int):  # tract reads a symbolic k from a tensor: the axis' size, from shape_of
        shape = ctx.emit("fragment.t2ir_shape_of_i64", [x], TensorType(DType.i64, (x.rank,)))
        k_value = ctx.emit("nnef.slice", [shape], TensorType(DType.i64, (1,)), axes=[0], begin=[axis], end=[axis + 1])
        return ctx.emit_multi("tract_core.topk", [x, k_value], types, axis=axis, largest=largest)
    return ctx.emit_multi("tract_core.topk", [x], types, k=k, axis=axis, largest=largest)


@builtin("aten.sort", "aten.sort.stable", "aten.argsort", "aten.argsort.stable", "aten.msort")
def sort(node: Node, ctx: LowerContext):
    """A full sort is a top-k of the whole axis (tract has no sort). Equal values may come out
    in another order than torch's, which only shows in the indices of ties."""
    x = ctx.args["self"]
    axis = norm_axis(ctx.arg("dim", -1 if node.op != "aten.msort" else 0), max(x.rank, 1))
    descending = bool(ctx.arg("descending", False))
    n = x.shape[axis] if x.rank else 1
    types = [x.type, x.type.with_dtype(DType.i64)]
    values, indices = _topk(ctx, x, n, axis, descending, types)
    if node.op.startswith("aten.argsort"):
        return indices
    return values if node.op == "aten.msort" else [values, indices]


@builtin("aten.bucketize.Tensor", "aten.searchsorted.Tensor")
def bucketize(node: Node, ctx: LowerContext) -> Value:
    """The insertion index of each value in sorted boundaries: how many boundaries are below it
    (right=False) or not above it (right=True), a comparison against every boundary and a sum."""
    if node.op == "aten.bucketize.Tensor":
        values, boundaries = ctx.args["self"], ctx.args["boundaries"]
    else:
        boundaries, values = ctx.args["sorted_sequence"], ctx.args["self"]
        if ctx.args.get("sorter") is not None:
            raise TranslationError("searchsorted with a sorter is not supported", "sort the sequence first")
    right = bool(ctx.arg("right", False)) or ctx.args.get("side") == "right"
    dtype = promote(values.dtype, boundaries.dtype)
    values, boundaries = ctx.cast(values, dtype), ctx.cast(boundaries, dtype)
    if boundaries.rank == 1:  # one sequence for every value: [..., 1] against [1, ..., N]
        lead = values.rank
        v = ctx.emit("nnef.unsqueeze", [values], values.type.with_shape(tuple(values.shape) + (1,)), axes=[lead])
        b = unsqueeze_to_rank(ctx, boundaries, lead + 1)
    else:  # one sequence per row: values [..., M] against sorted [..., N]
        lead = values.rank - 1
        v = ctx.emit("nnef.unsqueeze", [values], values.type.with_shape(tuple(values.shape) + (1,)), axes=[lead + 1])
        b = ctx.emit("nnef.unsqueeze", [boundaries], boundaries.type.with_shape(
            tuple(boundaries.shape[:-1]) + (1, boundaries.shape[-1])), axes=[lead])
    shape = tuple(values.shape) + (boundaries.shape[-1],)
    below = ctx.emit("nnef.le" if right else "nnef.lt", [b, v], TensorType(DType.bool, shape))
    counts = ctx.emit("nnef.sum_reduce", [ctx.cast(below, DType.i64)], TensorType(DType.i64, tuple(values.shape) + (1,)),
                      axes=[len(shape) - 1])
    return ctx.cast(ctx.emit("nnef.squeeze", [counts], TensorType(DType.i64, tuple(values.shape)), axes=[len(shape) - 1]),
                    ctx.out.dtype)
