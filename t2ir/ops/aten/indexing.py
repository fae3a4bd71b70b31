"""Indexing and data movement that tract has no single op for: gather, tensor indexing, flip,
roll, tril/triu, pad and repeat_interleave."""

from __future__ import annotations

from typing import Any

from t2ir.ir import Node, Value
from t2ir.ops.aten._util import norm_axis, unsqueeze_to_rank
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.errors import TranslationError
from t2ir.types import DType, TensorType, dims_equal


def _with_dim(x: Value, axis: int, size: Any) -> TensorType:
    return x.type.with_shape(tuple(size if i == axis else d for i, d in enumerate(x.shape)))


def slice_axis(ctx: LowerContext, x: Value, axis: int, begin: Any, end: Any) -> Value:
    return ctx.emit("nnef.slice", [x], _with_dim(x, axis, end - begin), axes=[axis], begin=[begin], end=[end])


@builtin("aten.gather", "aten.take_along_dim")
def gather(node: Node, ctx: LowerContext) -> Value:
    """torch.gather: out[i][j] = x[index[i][j]][j] on axis `dim` (tract's gather_elements)."""
    from t2ir.ops.aten.shape import broadcast_to

    x, index = ctx.args["self"], ctx.args.get("index", ctx.args.get("indices"))
    index = ctx.cast(index, DType.i64)
    dim = ctx.args.get("dim")
    if dim is None or x.rank == 0:  # take_along_dim without dim, or a scalar: along the flattened tensors
        x, index = (_flat(ctx, v) for v in (x, index))
        dim = 0
    axis = norm_axis(dim, x.rank)
    out_shape = tuple(ctx.out.shape)
    # torch.take_along_dim broadcasts both operands on every other axis; gather needs them equal
    x_t = x.type.with_shape(tuple(x.shape[i] if i == axis else d for i, d in enumerate(out_shape)))
    if not all(dims_equal(a, b) for a, b in zip(x.shape, x_t.shape)):
        x = broadcast_to(ctx, x, x_t)
    index_t = index.type.with_shape(tuple(index.shape[i] if i == axis else d for i, d in enumerate(out_shape)))
    if not all(dims_equal(a, b) for a, b in zip(index.shape, index_t.shape)):
        index = broadcast_to(ctx, index, index_t)
    y = ctx.emit("tract_core.gather_elements", [x, index], ctx.out.with_shape(tuple(index.shape)), axis=axis)
    if y.rank != ctx.out.rank:  # a scalar gathered from a flattened scalar
        y = ctx.emit("nnef.reshape", [y], ctx.out, shape=list(ctx.out.shape))
    return y


def _flat(ctx: LowerContext, v: Value) -> Value:
    n = 1
    for d in v.shape:
        n = n * d
    return ctx.emit("nnef.reshape", [v], v.type.with_shape((n,)), shape=[n])


def _index_tensors(node: Node, ctx: LowerContext) -> list[Value | None]:
    """`indices` of aten.index.Tensor with None for the axes that are not indexed."""
    return [i if isinstance(i, Value) else None for i in ctx.args["indices"]]


@builtin("aten.index.Tensor", "aten._unsafe_index.Tensor")
def index(node: Node, ctx: LowerContext) -> Value:
    """x[..., idx, ...] with integer index tensors: one indexed axis is a gather; several are a
    gather_nd over the indexed axes moved to the front, with the broadcast, stacked indices.
    As in numpy, the indexed axes' result goes where they were when they are adjacent, and in
    front when other axes separate them."""
    return index_of(ctx, ctx.args["self"], _index_tensors(node, ctx), ctx.out)


@builtin("aten._unsafe_masked_index")
def masked_index(node: Node, ctx: LowerContext) -> Value:
    """where(mask, x[indices], fill), the indices clamped first (torch does not read the
    places the mask hides, which may lie outside x)."""
    x, mask, out = ctx.args["self"], ctx.args["mask"], ctx.out
    indices = [i if isinstance(i, Value) else None for i in ctx.args["indices"]]
    clamped = [None if i is None else _clamp_index(ctx, ctx.cast(i, DType.i64), x.shape[axis])
               for axis, i in enumerate(indices)]
    picked = index_of(ctx, x, clamped, out)
    from t2ir.ops.aten.elementwise import select_operand
    from t2ir.ops.aten._util import unsqueeze_to_rank as to_rank

    fill = select_operand(ctx, ctx.args["fill"], out.dtype)
    mask = to_rank(ctx, ctx.cast(mask, DType.bool), out.rank)
    if isinstance(fill, Value):
        return ctx.emit("nnef.select", [mask, picked, to_rank(ctx, fill, out.rank)], out)
    return ctx.emit("nnef.select", [mask, picked], out, false_value=fill)


def _clamp_index(ctx: LowerContext, i: Value, size: Any) -> Value:
    from t2ir.ops.aten._util import scalar_or_value

    top = unsqueeze_to_rank(ctx, scalar_or_value(ctx, size - 1, DType.i64), i.rank)
    low = unsqueeze_to_rank(ctx, scalar_or_value(ctx, 0, DType.i64), i.rank)
    return ctx.emit("nnef.max", [ctx.emit("nnef.min", [i, top], i.type), low], i.type)


def index_of(ctx: LowerContext, x: Value, indices: list, out: TensorType) -> Value:
    used = [(axis, i) for axis, i in enumerate(indices) if i is not None]
    for _, i in used:
        if i.dtype == DType.bool:
            raise TranslationError(
                "indexing with a boolean mask gives a shape that depends on the data",
                "use torch.where(mask, x, other) or masked_fill to keep a static shape")
    if len(used) == 1:
        axis, i = used[0]
        return ctx.emit("tract_core.gather", [x, ctx.cast(i, DType.i64)], out, axis=axis)
    axes = [a for a, _ in used]
    rest = [a for a in range(x.rank) if a not in axes]
    lead_rank = out.rank - len(rest)
    front = indexed_front(axes)
    lead = out.shape[front:front + lead_rank]
    x = transposed(ctx, x, axes + rest)
    stacked = stacked_indices(ctx, [i for _, i in used], lead)
    y = ctx.emit("tract_core.gather_nd", [x, stacked], out.with_shape(tuple(lead) + tuple(x.shape[len(axes):])),
                 batch_dims=0)
    return transposed(ctx, y, inverse(lead_first(front, lead_rank, y.rank)))


def indexed_front(axes: list[int]) -> int:
    """Where torch puts the broadcast index axes in x[indices]: in place of the indexed axes
    when these are adjacent ([before..., lead..., after...]), else first."""
    return axes[0] if axes == list(range(axes[0], axes[-1] + 1)) else 0


def lead_first(front: int, lead_rank: int, rank: int) -> list[int]:
    """The permutation taking [before..., lead..., after...] to [lead..., before..., after...]."""
    return list(range(front, front + lead_rank)) + list(range(front)) + list(range(front + lead_rank, rank))


def inverse(perm: list[int]) -> list[int]:
    return sorted(range(len(perm)), key=perm.__getitem__)


def transposed(ctx: LowerContext, x: Value, perm: list[int]) -> Value:
    """x with its axes in `perm` order (x itself for the identity)."""
    if perm == sorted(perm):
        return x
    return ctx.emit("nnef.transpose", [x], x.type.with_shape(tuple(x.shape[a] for a in perm)), axes=perm)


def stacked_indices(ctx: LowerContext, indices: list[Value], lead) -> Value:
    """Index tensors broadcast to `lead` and stacked on a last axis: the [..., k] coordinates
    tract's gather_nd / scatter_nd take."""
    from t2ir.ops.aten.shape import broadcast_to

    parts = []
    for i in indices:
        i = ctx.cast(i, DType.i64)
        if tuple(i.shape) != tuple(lead):
            i = broadcast_to(ctx, i, i.type.with_shape(lead))
        parts.append(ctx.emit("nnef.unsqueeze", [i], i.type.with_shape(tuple(lead) + (1,)), axes=[len(lead)]))
    if len(parts) == 1:
        return parts[0]
    return ctx.emit("nnef.concat", parts, TensorType(DType.i64, tuple(lead) + (len(parts),)), axis=len(lead))


def reversed_range(ctx: LowerContext, n: Any) -> Value:
    return ctx.emit("tract_core.range", [], TensorType(DType.i64, (n,)), start=n - 1, end=-1, step=-1)


@builtin("aten.flip")
def flip(node: Node, ctx: LowerContext) -> Value:
    """tract slices cannot run backwards (a negative stride aborts): gather a reversed range."""
    x = ctx.args["self"]
    for axis in sorted({norm_axis(d, x.rank) for d in ctx.args["dims"]}):
        if x.shape[axis] == 1:
            continue
        x = ctx.emit("tract_core.gather", [x, reversed_range(ctx, x.shape[axis])], x.type, axis=axis)
    return x


@builtin("aten.roll")
def roll(node: Node, ctx: LowerContext) -> Value:
    """Each shifted axis is two slices swapped (concat(x[n-s:], x[:n-s])). On a symbolic axis
    the shift must be smaller than the size, which the export cannot check."""
    x, out = ctx.args["self"], ctx.out
    shifts, dims = list(ctx.args["shifts"]), list(ctx.args.get("dims") or [])
    if not dims:
        n = 1
        for d in x.shape:
            n = n * d
        flat = ctx.emit("nnef.reshape", [x], x.type.with_shape((n,)), shape=[n])
        rolled = _roll_axis(ctx, flat, 0, shifts[0])
        return ctx.emit("nnef.reshape", [rolled], out, shape=list(out.shape))
    for shift, dim in zip(shifts, dims):
        x = _roll_axis(ctx, x, norm_axis(dim, x.rank), shift)
    return x


def _roll_axis(ctx: LowerContext, x: Value, axis: int, shift: int) -> Value:
    n = x.shape[axis]
    if isinstance(n, int):
        shift %= n
        if shift == 0:
            return x
        cut = n - shift
    else:
        cut = n - shift if shift > 0 else -shift
    tail, head = slice_axis(ctx, x, axis, cut, n), slice_axis(ctx, x, axis, 0, cut)
    return ctx.emit("nnef.concat", [tail, head], x.type, axis=axis)


@builtin("aten.tril", "aten.triu")
def trilu(node: Node, ctx: LowerContext) -> Value:
    x = ctx.args["self"]
    return ctx.emit("tract_core.trilu", [x], ctx.out, k=ctx.arg("diagonal", 0), upper=node.op == "aten.triu")


_PAD_BORDER = {"constant": "constant", "reflect": "reflect", "replicate": "replicated"}


@builtin("aten.pad", "aten.constant_pad_nd", "aten.reflection_pad1d", "aten.reflection_pad2d",
         "aten.reflection_pad3d", "aten.replication_pad1d", "aten.replication_pad2d", "aten.replication_pad3d")
def pad(node: Node, ctx: LowerContext) -> Value:
    """torch lists (before, after) pairs from the last axis backwards; negative amounts crop."""
    x, out = ctx.args["self"], ctx.out
    amounts = list(ctx.args.get("pad", ctx.args.get("padding")))
    mode = ctx.arg("mode", "constant")
    if node.op.startswith("aten.reflection"):
        mode = "reflect"
    elif node.op.startswith("aten.replication"):
        mode = "replicate"
    if mode == "circular":
        return _circular_pad(ctx, x, amounts)
    if mode not in _PAD_BORDER:
        raise TranslationError(f"pad mode {mode!r} is not supported", "use constant, reflect, replicate or circular")
    pairs = [[0, 0] for _ in range(x.rank)]
    for k in range(len(amounts) // 2):
        pairs[x.rank - 1 - k] = [amounts[2 * k], amounts[2 * k + 1]]
    if mode == "constant" and any(not isinstance(v, int) for pair in pairs for v in pair):
        return _concat_pad(ctx, _crop(ctx, x, pairs), pairs, ctx.arg("value", 0.0), out)
    # pad first, crop after: torch's replicate/reflect read the original edges even when the
    # other side is cropped (pad (-4, 5) of a width-4 row repeats its last value 5 times)
    grow = [[max(b, 0), max(a, 0)] for b, a in pairs]
    if any(b or a for b, a in grow):
        attrs: dict[str, Any] = dict(padding=grow, border=_PAD_BORDER[mode])
        if mode == "constant":
            value = ctx.arg("value", 0.0)
            attrs["value"] = float(value) if out.dtype.is_float else int(value)
        grown = x.type.with_shape(tuple(d + b + a for d, (b, a) in zip(x.shape, grow)))
        x = ctx.emit("nnef.pad", [x], grown, **attrs)
    return _crop(ctx, x, pairs)


def _concat_pad(ctx: LowerContext, x: Value, pairs: list[list[Any]], value, out: TensorType) -> Value:
    """Constant padding by symbolic amounts (`(8 - T % 8) % 8`), which tract's pad cannot take:
    blocks of the fill value concatenated before and after."""
    from t2ir.ops.aten.factories import fill

    for axis, (before, after) in enumerate(pairs):
        blocks = [fill(ctx, value, _with_dim(x, axis, n)) if not (isinstance(n, int) and n <= 0) else None
                  for n in (before, after)]
        if blocks == [None, None]:
            continue
        parts = [b for b in (blocks[0], x, blocks[1]) if b is not None]
        x = ctx.emit("nnef.concat", parts, _with_dim(x, axis, out.shape[axis]), axis=axis)
    return x


def _crop(ctx: LowerContext, x: Value, pairs: list[list[Any]]) -> Value:
    """Negative pad amounts remove elements: slice them off first."""
    for axis, (b, a) in enumerate(pairs):
        if (isinstance(b, int) and b < 0) or (isinstance(a, int) and a < 0):
            n = x.shape[axis]
            x = slice_axis(ctx, x, axis, max(-b, 0), n - max(-a, 0))
    return x


def _circular_pad(ctx: LowerContext, x: Value, amounts: list[int]) -> Value:
    """Wrap-around padding: the tail of the axis before it and its head after it. Negative amounts
    crop first, and the wrapped parts come from what is left (as torch's _pad_circular does)."""
    for k in range(len(amounts) // 2):
        axis, before, after = x.rank - 1 - k, amounts[2 * k], amounts[2 * k + 1]
        if before < 0 or after < 0:
            x = slice_axis(ctx, x, axis, max(-before, 0), x.shape[axis] - max(-after, 0))
            before, after = max(before, 0), max(after, 0)
        n = x.shape[axis]
        parts = ([slice_axis(ctx, x, axis, n - before, n)] if before else []) + [x] + \
                ([slice_axis(ctx, x, axis, 0, after)] if after else [])
        if len(parts) > 1:
            x = ctx.emit("nnef.concat", parts, _with_dim(x, axis, n + before + after), axis=axis)
    return x


@builtin("aten.repeat_interleave.self_int")
def repeat_interleave(node: Node, ctx: LowerContext) -> Value:
    """Each element repeated r times along `dim`: unsqueeze, tile, merge the two axes."""
    x, out = ctx.args["self"], ctx.out
    r = ctx.args["repeats"]
    dim = ctx.args.get("dim")
    if dim is None:
        n = 1
        for d in x.shape:
            n = n * d
        x = ctx.emit("nnef.reshape", [x], x.type.with_shape((n,)), shape=[n])
        dim = 0
    axis = norm_axis(dim, x.rank)
    shape = list(x.shape)
    x = ctx.emit("nnef.unsqueeze", [x], x.type.with_shape(tuple(shape[: axis + 1] + [1] + shape[axis + 1:])),
                 axes=[axis + 1])
    tiled = x.type.with_shape(tuple(shape[: axis + 1] + [r] + shape[axis + 1:]))
    x = ctx.emit("nnef.tile", [x], tiled, repeats=[r if i == axis + 1 else 1 for i in range(len(shape) + 1)])
    return ctx.emit("nnef.reshape", [x], out, shape=list(out.shape))


def _index_range(ctx: LowerContext, n: Any) -> Value:
    return ctx.emit("tract_core.range", [], TensorType(DType.i64, (n,)), start=0, end=n, step=1)


def _times_plus(ctx: LowerContext, v: Value, scale: Any, offset: Any) -> Value:
    """v * scale + offset on an i64 index tensor (scale and offset may be symbolic sizes)."""
    from t2ir.ops.aten._util import scalar_or_value

    if not (isinstance(scale, int) and scale == 1):
        v = ctx.emit("nnef.mul", [v, unsqueeze_to_rank(ctx, scalar_or_value(ctx, scale, DType.i64), v.rank)], v.type)
    if not (isinstance(offset, int) and offset == 0):
        v = ctx.emit("nnef.add", [v, unsqueeze_to_rank(ctx, scalar_or_value(ctx, offset, DType.i64), v.rank)], v.type)
    return v


@builtin("aten.diagonal", "aten.linalg_diagonal")
def diagonal(node: Node, ctx: LowerContext) -> Value:
    """The (offset) diagonal of axes dim1 and dim2, as a new last axis: those two axes moved to
    the end and flattened, then a gather of the positions (i + row0) * n2 + (i + col0)."""
    x, out = ctx.args.get("self", ctx.args.get("A")), ctx.out
    offset = int(ctx.arg("offset", 0))
    d1 = norm_axis(ctx.arg("dim1", -2 if node.op == "aten.linalg_diagonal" else 0), x.rank)
    d2 = norm_axis(ctx.arg("dim2", -1 if node.op == "aten.linalg_diagonal" else 1), x.rank)
    rest = [a for a in range(x.rank) if a not in (d1, d2)]
    n1, n2 = x.shape[d1], x.shape[d2]
    moved = x.type.with_shape(tuple(x.shape[a] for a in rest) + (n1, n2))
    x = ctx.emit("nnef.transpose", [x], moved, axes=rest + [d1, d2])
    flat = ctx.emit("nnef.reshape", [x], moved.with_shape(tuple(moved.shape[:-2]) + (n1 * n2,)),
                    shape=list(moved.shape[:-2]) + [n1 * n2])
    length = out.shape[-1]
    i = _index_range(ctx, length)
    positions = _times_plus(ctx, i, n2 + 1, max(-offset, 0) * n2 + max(offset, 0))
    return ctx.emit("tract_core.gather", [flat, positions], out, axis=len(rest))


@builtin("aten.unfold")
def unfold(node: Node, ctx: LowerContext) -> Value:
    """Sliding windows of `size` every `step` along `dimension`, as a new last axis: a gather of
    positions w * step + k ([windows, size]), then that size axis moved to the end."""
    x, out = ctx.args["self"], ctx.out
    if x.rank == 0:
        return ctx.emit("nnef.unsqueeze", [x], out, axes=[0])
    axis = norm_axis(ctx.args["dimension"], x.rank)
    size, step = int(ctx.args["size"]), int(ctx.args["step"])
    windows = out.shape[axis]
    starts = _times_plus(ctx, ctx.emit("nnef.unsqueeze", [_index_range(ctx, windows)],
                                       TensorType(DType.i64, (windows, 1)), axes=[1]), step, 0)
    offsets = ctx.emit("nnef.unsqueeze", [_index_range(ctx, size)], TensorType(DType.i64, (1, size)), axes=[0])
    positions = ctx.emit("nnef.add", [starts, offsets], TensorType(DType.i64, (windows, size)))
    gathered_shape = tuple(x.shape[:axis]) + (windows, size) + tuple(x.shape[axis + 1:])
    g = ctx.emit("tract_core.gather", [x, positions], x.type.with_shape(gathered_shape), axis=axis)
    perm = list(range(axis + 1)) + list(range(axis + 2, len(gathered_shape))) + [axis + 1]
    return ctx.emit("nnef.transpose", [g], out, axes=perm)
