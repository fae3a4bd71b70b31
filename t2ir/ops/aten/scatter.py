"""Writes into tensors: scatter / scatter_add / scatter_reduce (tract's scatter_elements),
index_put (scatter_nd, or a select for a boolean mask) and copy."""

from __future__ import annotations

from typing import Any

from t2ir.errors import TranslationError
from t2ir.ir import Node, Value
from t2ir.ops.aten._util import norm_axis, unsqueeze_to_rank
from t2ir.ops.aten.factories import fill
from t2ir.ops.aten.indexing import indexed_front, inverse, lead_first, stacked_indices, transposed
from t2ir.ops.aten.shape import broadcast_to
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.types import DType, dims_equal

# torch's reduce names -> tract's scatter reductions
_REDUCTIONS = {None: "none", "add": "add", "sum": "add", "multiply": "mul", "prod": "mul", "amax": "max",
               "amin": "min"}


def _updates(ctx: LowerContext, src: Any, index: Value, dtype: DType) -> Value:
    """The values to write, shaped like `index`: torch reads only the part of `src` that the
    index covers, and a scalar `value` is broadcast."""
    if not isinstance(src, Value):
        return fill(ctx, src, index.type.with_dtype(dtype))
    src = ctx.cast(src, dtype)
    if all(dims_equal(a, b) for a, b in zip(src.shape, index.shape)):
        return src
    return ctx.emit("nnef.slice", [src], src.type.with_shape(index.shape), axes=list(range(src.rank)),
                    begin=[0] * src.rank, end=list(index.shape))


def scatter_elements(ctx: LowerContext, x: Value, axis: int, index: Value, updates: Value, reduction: str) -> Value:
    return ctx.emit("tract_core.scatter_elements", [x, ctx.cast(index, DType.i64), updates], x.type, axis=axis,
                    reduction=reduction)


@builtin("aten.scatter.src", "aten.scatter.value", "aten.scatter.reduce", "aten.scatter.value_reduce",
         "aten.scatter_add")
def scatter(node: Node, ctx: LowerContext) -> Value:
    """out = x; out[index[i][j]][j] = src[i][j] on axis `dim` (or combined with `reduce`)."""
    x, index = ctx.args["self"], ctx.args["index"]
    axis = norm_axis(ctx.args["dim"], x.rank)
    src = ctx.args.get("src", ctx.args.get("value"))
    reduce = "add" if node.op == "aten.scatter_add" else ctx.args.get("reduce")
    if x.rank == 0:
        raise TranslationError("scatter into a scalar is not supported", "scatter into a tensor of rank >= 1")
    return scatter_elements(ctx, x, axis, index, _updates(ctx, src, index, x.dtype), _REDUCTIONS[reduce])


@builtin("aten.scatter_reduce.two")
def scatter_reduce(node: Node, ctx: LowerContext) -> Value:
    """sum / prod / amax / amin / mean of the values scattered to each place, with or without
    the place's own value (include_self)."""
    x, index = ctx.args["self"], ctx.args["index"]
    axis = norm_axis(ctx.args["dim"], x.rank)
    reduce, include_self = ctx.args["reduce"], bool(ctx.arg("include_self", True))
    updates = _updates(ctx, ctx.args["src"], index, x.dtype)
    if reduce == "mean":
        return _scatter_mean(ctx, x, axis, index, updates, include_self)
    base = x
    if not include_self:  # start the scattered places from the reduction's identity
        identity = {"sum": 0, "prod": 1, "amax": float("-inf"), "amin": float("inf")}[reduce]
        if not x.dtype.is_float and identity in (float("inf"), float("-inf")):
            identity = {DType.bool: identity > 0}.get(x.dtype, (2 ** 63 - 1) if identity > 0 else -(2 ** 63))
        base = scatter_elements(ctx, x, axis, index, fill(ctx, identity, updates.type), "none")
    return scatter_elements(ctx, base, axis, index, updates, _REDUCTIONS[reduce])


def _scatter_mean(ctx: LowerContext, x: Value, axis: int, index: Value, updates: Value, include_self: bool) -> Value:
    """(x? + sum of updates) / (1? + count), at the places something was scattered to."""
    if not x.dtype.is_float:
        raise TranslationError("scatter_reduce 'mean' on integers is not supported", "use a float tensor")
    total = scatter_elements(ctx, x if include_self else fill(ctx, 0, x.type), axis, index, updates, "add")
    count = scatter_elements(ctx, fill(ctx, 1 if include_self else 0, x.type), axis, index, fill(ctx, 1, updates.type),
                             "add")
    mean = ctx.emit("nnef.div", [total, ctx.emit("nnef.max", [count], count.type, y=1.0)], x.type)
    hit = ctx.emit("nnef.gt", [count], count.type.with_dtype(DType.bool), y=0.0)
    return ctx.emit("nnef.select", [hit, mean, x], x.type)


@builtin("aten.index_put", "aten.index_put_", "aten._unsafe_index_put")
def index_put(node: Node, ctx: LowerContext) -> Value:
    """x[..., i0, i1, ...] = values (or += with accumulate): a scatter_nd with the indexed axes
    moved to the front; a boolean mask over leading axes is a select."""
    x, values = ctx.args["self"], ctx.args["values"]
    indices = [i if isinstance(i, Value) else None for i in ctx.args["indices"]]
    accumulate = bool(ctx.arg("accumulate", False))
    values = ctx.cast(values, x.dtype)
    used = [(a, i) for a, i in enumerate(indices) if i is not None]
    if len(used) == 1 and used[0][1].dtype == DType.bool and used[0][0] == 0:
        return _masked_put(ctx, x, used[0][1], values, accumulate)
    if any(i.dtype == DType.bool for _, i in used):
        raise TranslationError("index_put with a boolean mask past the first axis is not supported",
                               "use torch.where(mask, values, x)")
    axes = [a for a, _ in used]
    rest = [a for a in range(x.rank) if a not in axes]
    lead = _broadcast_shape([i.shape for _, i in used])
    stacked = stacked_indices(ctx, [i for _, i in used], lead)
    # torch shapes x[indices] with the index axes in `front` place; scatter_nd wants them first
    front = indexed_front(axes)
    indexed = tuple(x.shape[a] for a in rest[:front]) + tuple(lead) + tuple(x.shape[a] for a in rest[front:])
    values = broadcast_to(ctx, values, x.type.with_shape(indexed)) if tuple(values.shape) != indexed else values
    values = transposed(ctx, values, lead_first(front, len(lead), len(indexed)))
    perm = axes + rest
    moved = transposed(ctx, x, perm)
    put = ctx.emit("tract_core.scatter_nd", [moved, stacked, values], moved.type,
                   reduction="add" if accumulate else "none")
    return transposed(ctx, put, inverse(perm))


def _masked_put(ctx: LowerContext, x: Value, mask: Value, values: Value, accumulate: bool) -> Value:
    """x[mask] = v with v broadcast to the masked places (a scalar, or one value per trailing
    position): a select, which keeps the shape static."""
    if values.rank > x.rank - mask.rank:
        raise TranslationError("x[mask] = values with one value per selected element depends on the data",
                               "write torch.where(mask, values, x) with values shaped like x")
    mask = ctx.emit("nnef.reshape", [mask], mask.type.with_shape(tuple(mask.shape) + (1,) * (x.rank - mask.rank)),
                    shape=list(mask.shape) + [1] * (x.rank - mask.rank)) if mask.rank < x.rank else mask
    v = broadcast_to(ctx, unsqueeze_to_rank(ctx, values, x.rank), x.type)
    if accumulate:
        v = ctx.emit("nnef.add", [x, v], x.type)
    return ctx.emit("nnef.select", [mask, v, x], x.type)


def _broadcast_shape(shapes) -> tuple:
    rank = max(len(s) for s in shapes)
    out = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        out.append(next((d for d in dims if not (isinstance(d, int) and d == 1)), 1))
    return tuple(out)


@builtin("aten.copy", "aten.copy_")
def copy(node: Node, ctx: LowerContext) -> Value:
    """x.copy_(src): src broadcast to x's shape, in x's dtype."""
    src = ctx.cast(ctx.args["src"], ctx.out.dtype)
    if tuple(src.shape) == tuple(ctx.out.shape):
        return src
    return broadcast_to(ctx, src, ctx.out)


@builtin("aten.slice_scatter", "aten.select_scatter")
def slice_scatter(node: Node, ctx: LowerContext) -> Value:
    """x with x[start:end] (along `dim`) replaced by src: the parts before and after, and src,
    concatenated. In-place slice assignments (`mask[a:b] = v`) become this when functionalized."""
    from t2ir.ops.aten.indexing import slice_axis
    from t2ir.ops.aten.shape import _clamp_bound

    x, src = ctx.args["self"], ctx.cast(ctx.args["src"], ctx.out.dtype)
    axis = norm_axis(ctx.arg("dim", 0), x.rank)
    size = x.shape[axis]
    if node.op == "aten.select_scatter":
        start = _clamp_bound(ctx.args["index"], size, 0)
        end = start + 1
        src = ctx.emit("nnef.unsqueeze", [src], src.type.with_shape(
            tuple(src.shape[:axis]) + (1,) + tuple(src.shape[axis:])), axes=[axis])
    else:
        if ctx.arg("step", 1) != 1:
            return _strided_slice_scatter(ctx, x, src, axis)
        start = _clamp_bound(ctx.args.get("start"), size, 0)
        end = _clamp_bound(ctx.args.get("end"), size, size)
    parts = [slice_axis(ctx, x, axis, 0, start) if not (isinstance(start, int) and start == 0) else None, src,
             slice_axis(ctx, x, axis, end, size) if not dims_equal(end, size) else None]
    parts = [p for p in parts if p is not None]
    return parts[0] if len(parts) == 1 else ctx.emit("nnef.concat", parts, ctx.out, axis=axis)


def _strided_slice_scatter(ctx: LowerContext, x: Value, src: Value, axis: int) -> Value:
    """x[start:end:step] = src over a static axis (interleaved rotary sections): x and src
    concatenated, then one gather that takes each position from src where the slice covers it
    and from x elsewhere."""
    import torch

    from t2ir.ops.aten.shape import _clamp_bound

    size, step = x.shape[axis], ctx.arg("step", 1)
    if not isinstance(size, int):
        raise TranslationError("slice_scatter with a step over an axis of symbolic size is not supported",
                               "assign without a step, or make that axis static")
    start, end = _clamp_bound(ctx.args.get("start"), size, 0), _clamp_bound(ctx.args.get("end"), size, size)
    covered = len(range(start, end, step))
    if covered == 0:  # an empty slice (a rotary section shorter than its offset): nothing written
        return ctx.cast(x, ctx.out.dtype)
    index = torch.arange(size)
    index[start:end:step] = size + torch.arange(covered)
    both = ctx.emit("nnef.concat", [x, src], x.type.with_shape(
        tuple(size + src.shape[axis] if a == axis else d for a, d in enumerate(x.shape))), axis=axis)
    positions = ctx.const(f"{ctx.node.outputs[0].name}_positions", index)
    return ctx.emit("tract_core.gather", [both, positions], ctx.out, axis=axis)
