"""Shape and data-movement aten ops: views, permutes, concatenation, slicing, indexing."""

from __future__ import annotations

import sympy

from t2ir.ir import Node, Value
from t2ir.ops.aliases import CONCATS, RESHAPES
from t2ir.ops.aten._util import norm_axes, norm_axis
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.types import DType, simplify_dim


@builtin(*RESHAPES, "aten.flatten.using_ints", "aten.unflatten.int",
         "aten.view_as", "aten.reshape_as", "aten.flatten")
def reshape(node: Node, ctx: LowerContext) -> Value:
    """Every view becomes one reshape to the (possibly symbolic) output shape."""
    return ctx.emit("nnef.reshape", [node.inputs[0]], ctx.out, shape=list(ctx.out.shape))


@builtin("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze")
def squeeze(node: Node, ctx: LowerContext) -> Value:
    x = node.inputs[0]
    dims = ctx.args.get("dim", ctx.args.get("dims"))
    if isinstance(dims, (list, tuple)) and not dims:  # squeeze(dims=()) squeezes nothing
        return x
    axes = norm_axes(dims, x.rank) if dims is not None else list(range(x.rank))
    axes = [a for a in axes if x.shape[a] == 1]
    if not axes:
        return x
    return ctx.emit("nnef.squeeze", [x], ctx.out, axes=axes)


@builtin("aten.unsqueeze")
def unsqueeze(node: Node, ctx: LowerContext) -> Value:
    axis = norm_axis(ctx.args["dim"], node.inputs[0].rank + 1)
    return ctx.emit("nnef.unsqueeze", [node.inputs[0]], ctx.out, axes=[axis])


@builtin("aten.permute")
def permute(node: Node, ctx: LowerContext) -> Value:
    x = node.inputs[0]
    return ctx.emit("nnef.transpose", [x], ctx.out, axes=[norm_axis(d, x.rank) for d in ctx.args["dims"]])


@builtin("aten.transpose.int", "aten.t", "aten.numpy_T", "aten.swapaxes", "aten.swapdims", "aten.mT", "aten.mH",
         "aten.adjoint")
def transpose(node: Node, ctx: LowerContext) -> Value:
    x = node.inputs[0]
    perm = list(range(x.rank))
    if x.rank < 2:
        return x
    if node.op == "aten.transpose.int" or node.op in ("aten.swapaxes", "aten.swapdims"):
        a = norm_axis(ctx.args.get("dim0", ctx.args.get("axis0")), x.rank)
        b = norm_axis(ctx.args.get("dim1", ctx.args.get("axis1")), x.rank)
    else:
        a, b = x.rank - 2, x.rank - 1
    perm[a], perm[b] = perm[b], perm[a]
    return ctx.emit("nnef.transpose", [x], ctx.out, axes=perm)


@builtin(*CONCATS)
def cat(node: Node, ctx: LowerContext) -> Value:
    out = ctx.out
    values = [ctx.cast(v, out.dtype) for v in node.inputs if v.rank == out.rank]  # torch skips empty 1-D
    axis = norm_axis(ctx.arg("dim", 0), out.rank)
    if len(values) == 1:
        return values[0]
    return ctx.emit("nnef.concat", values, out, axis=axis)


@builtin("aten.stack")
def stack(node: Node, ctx: LowerContext) -> Value:
    out = ctx.out
    axis = norm_axis(ctx.arg("dim", 0), out.rank)
    return ctx.emit("nnef.stack", [ctx.cast(v, out.dtype) for v in node.inputs], out, axis=axis)


def _clamp_bound(b, size, default):
    """torch slice bound semantics (None, negative, past the end) as an explicit index."""
    if b is None:
        return default
    if isinstance(b, int) and b < 0:
        b = size + b
        if isinstance(b, int):
            return max(b, 0)
        return b
    if isinstance(b, int) and isinstance(size, int):
        return min(b, size)
    if isinstance(b, int) and b >= 2**62:  # torch's "to the end"
        return size
    if isinstance(b, int) and b > 0:  # past the end of a symbolic axis, torch stops at its end
        return sympy.Min(b, size)
    if _negative(b):  # x[:, -S:] counts from the end, as an int bound does (tract would take -S as is)
        return simplify_dim(size + b)
    return b


def _negative(expr) -> bool:
    """A dimension expression negative for every size (-S, -2*S): sizes are >= 1."""
    if not isinstance(expr, sympy.Expr) or not expr.free_symbols:
        return False
    positive = {s: sympy.Symbol(s.name, positive=True) for s in expr.free_symbols}
    return bool(expr.xreplace(positive).is_negative)


@builtin("aten.slice.Tensor")
def slice_(node: Node, ctx: LowerContext) -> Value:
    x = node.inputs[0]
    axis = norm_axis(ctx.arg("dim", 0), x.rank)
    size = x.shape[axis]
    start = _clamp_bound(ctx.args.get("start"), size, 0)
    end = _clamp_bound(ctx.args.get("end"), size, size)
    step = ctx.arg("step", 1)
    length = ctx.out.shape[axis]
    if isinstance(length, int) and isinstance(start, int):
        end = start + (length - 1) * step + 1 if length else start  # torch knows the length: no min(...)
    elif step == 1 and isinstance(start, sympy.Min) and not isinstance(end, sympy.Min):
        # a bound clamped to a symbolic size: torch's length (its range reasoning) says where it
        # lands, e.g. x[..., 1:] of a size 2*n + 2 starts at 1, not at min(1, 2*n + 2), which tract
        # cannot simplify
        start = simplify_dim(end - length)
    elif step == 1 and isinstance(end, sympy.Min) and not isinstance(start, sympy.Min):
        end = simplify_dim(start + length)
    if start == 0 and _same(end, size) and step == 1:
        return x
    attrs = dict(axes=[axis], begin=[start], end=[end])
    if step != 1:
        attrs["stride"] = [step]
    return ctx.emit("nnef.slice", [x], ctx.out, **attrs)


def _same(a, b) -> bool:
    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0


@builtin("aten.narrow")
def narrow(node: Node, ctx: LowerContext) -> Value:
    x = node.inputs[0]
    axis = norm_axis(ctx.args["dim"], x.rank)
    start = _clamp_bound(ctx.args["start"], x.shape[axis], 0)
    return ctx.emit("nnef.slice", [x], ctx.out, axes=[axis], begin=[start], end=[start + ctx.args["length"]])


@builtin("aten.select.int")
def select(node: Node, ctx: LowerContext) -> Value:
    x = node.inputs[0]
    axis = norm_axis(ctx.args["dim"], x.rank)
    i = _clamp_bound(ctx.args["index"], x.shape[axis], 0)
    sliced_t = x.type.with_shape(tuple(1 if a == axis else d for a, d in enumerate(x.shape)))
    s = ctx.emit("nnef.slice", [x], sliced_t, axes=[axis], begin=[i], end=[i + 1])
    return ctx.emit("nnef.squeeze", [s], ctx.out, axes=[axis])


def broadcast_to(ctx: LowerContext, x: Value, out) -> Value:
    """numpy-style broadcast of x to `out`'s (possibly symbolic) shape."""
    from t2ir.ops.aten._util import unsqueeze_to_rank

    x = unsqueeze_to_rank(ctx, x, out.rank)
    return ctx.emit("tract_core.broadcast", [x], out, shape=list(out.shape))


@builtin("aten.expand", "aten.expand_as", "aten.broadcast_to")
def expand(node: Node, ctx: LowerContext) -> Value:
    return broadcast_to(ctx, node.inputs[0], ctx.out)


@builtin("aten.repeat")
def repeat(node: Node, ctx: LowerContext) -> Value:
    from t2ir.ops.aten._util import unsqueeze_to_rank

    x = unsqueeze_to_rank(ctx, node.inputs[0], ctx.out.rank)
    return ctx.emit("nnef.tile", [x], ctx.out, repeats=list(ctx.args["repeats"]))


@builtin("aten.embedding")
def embedding(node: Node, ctx: LowerContext) -> Value:
    weight, indices = ctx.args["weight"], ctx.args["indices"]
    return ctx.emit("tract_core.gather", [weight, indices], ctx.out, axis=0, datum_type=ctx.out.dtype.value)


@builtin("aten.index_select")
def index_select(node: Node, ctx: LowerContext) -> Value:
    x, idx = ctx.args["self"], ctx.args["index"]
    if x.rank == 0:  # a scalar is a one-element vector here
        x = ctx.emit("nnef.unsqueeze", [x], x.type.with_shape((1,)), axes=[0])
        if idx.rank == 0:
            idx = ctx.emit("nnef.unsqueeze", [idx], idx.type.with_shape((1,)), axes=[0])
        y = ctx.emit("tract_core.gather", [x, ctx.cast(idx, DType.i64)], x.type.with_shape(tuple(idx.shape)), axis=0)
        return ctx.emit("nnef.reshape", [y], ctx.out, shape=list(ctx.out.shape))
    return ctx.emit("tract_core.gather", [x, ctx.cast(idx, DType.i64)], ctx.out, axis=norm_axis(ctx.args["dim"], x.rank))


@builtin("aten.take")
def take(node: Node, ctx: LowerContext) -> Value:
    """x.flatten()[index], shaped like index."""
    x, idx = ctx.args["self"], ctx.args["index"]
    n = 1
    for d in x.shape:
        n = n * d
    flat = ctx.emit("nnef.reshape", [x], x.type.with_shape((n,)), shape=[n])
    return ctx.emit("tract_core.gather", [flat, ctx.cast(idx, DType.i64)], ctx.out, axis=0)


@builtin("aten.split.Tensor", "aten.split_with_sizes", "aten.chunk", "aten.unbind.int")
def split(node: Node, ctx: LowerContext) -> list[Value]:
    """tract has no `split`: each piece is its own slice."""
    x = node.inputs[0]
    axis = norm_axis(ctx.arg("dim", 0), x.rank)
    outs, start = [], 0
    for o in node.outputs:
        length = 1 if node.op == "aten.unbind.int" else o.shape[axis]
        t = o.type if node.op != "aten.unbind.int" else x.type.with_shape(
            tuple(1 if a == axis else d for a, d in enumerate(x.shape)))
        piece = ctx.emit("nnef.slice", [x], t, axes=[axis], begin=[start], end=[start + length])
        if node.op == "aten.unbind.int":
            piece = ctx.emit("nnef.squeeze", [piece], o.type, axes=[axis])
        outs.append(piece)
        start = start + length
    return outs
