"""Neural-network aten ops: convolution, pooling, normalisation, softmax."""

from __future__ import annotations

import re

from t2ir.ir import Node, Value
from t2ir.ops.aliases import SOFTMAX
from t2ir.ops.aten._util import norm_axis, unsqueeze_to_rank
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.errors import TranslationError
from t2ir.types import DType, TensorType


def _spatial(v, n: int) -> list:
    if isinstance(v, int):
        return [v] * n
    v = list(v)
    return v * n if len(v) == 1 else v


def _bias(ctx: LowerContext, b: Value | None):
    """NNEF conv bias is [1, C] (or the literal 0.0 when absent)."""
    if b is None:
        return {"bias": 0.0}, []
    return {}, [ctx.emit("nnef.unsqueeze", [b], b.type.with_shape((1,) + tuple(b.shape)), axes=[0])]


@builtin("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.conv1d.padding", "aten.conv2d.padding",
         "aten.conv3d.padding", "aten.convolution", "aten._convolution")
def conv(node: Node, ctx: LowerContext) -> Value:
    x, w = ctx.args["input"], ctx.args["weight"]
    return with_batch(ctx, x, w.rank - 2, [ctx.out], lambda x1, types: [_conv(node, ctx, x1, w, types[0])])[0]


def with_batch(ctx: LowerContext, x: Value, spatial: int, types: list, body) -> list[Value]:
    """Run `body(x, output types)` on an input with batch and channel axes: an unbatched input
    (C, *spatial), which torch accepts too, runs as a batch of one."""
    if x.rank == spatial + 2:
        return body(x, types)
    x1 = ctx.emit("nnef.unsqueeze", [x], x.type.with_shape((1,) + tuple(x.shape)), axes=[0])
    outs = body(x1, [t.with_shape((1,) + tuple(t.shape)) for t in types])
    return [ctx.emit("nnef.squeeze", [o], t, axes=[0]) for o, t in zip(outs, types)]


def _spatial_rank(op: str) -> int:
    """2 for max_pool2d, adaptive_avg_pool2d, ..."""
    return int(re.search(r"(\d)d", op).group(1))


def _conv(node: Node, ctx: LowerContext, x: Value, w: Value, out) -> Value:
    n = x.rank - 2
    stride, dilation = _spatial(ctx.arg("stride", 1), n), _spatial(ctx.arg("dilation", 1), n)
    padding = ctx.arg("padding", 0)
    if ctx.arg("transposed", False):
        return _deconv(node, ctx, x, out, n, stride, dilation)
    attrs, bias = _bias(ctx, ctx.args.get("bias"))
    if padding == "same":
        pads = []
        for k, d in zip(w.shape[2:], dilation):
            total = d * (k - 1)
            pads.append([total // 2, total - total // 2])
    elif padding == "valid":
        pads = [[0, 0]] * n
    else:
        pads = [[p, p] for p in _spatial(padding, n)]
    return ctx.emit("nnef.conv", [x, w, *bias], out, **attrs, border="constant", padding=pads,
                    stride=stride, dilation=dilation, groups=int(ctx.arg("groups", 1)))


@builtin("aten.conv_transpose1d", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input")
def conv_transpose(node: Node, ctx: LowerContext) -> Value:
    x, w = ctx.args["input"], ctx.args["weight"]
    return with_batch(ctx, x, w.rank - 2, [ctx.out], lambda x1, types: [conv_transpose_of(node, ctx, x1, types[0])])[0]


def conv_transpose_of(node: Node, ctx: LowerContext, x: Value, out) -> Value:
    n = x.rank - 2
    return _deconv(node, ctx, x, out, n, _spatial(ctx.arg("stride", 1), n), _spatial(ctx.arg("dilation", 1), n))


def _deconv(node: Node, ctx: LowerContext, x: Value, out, n: int, stride, dilation) -> Value:
    w = ctx.args["weight"]
    groups = int(ctx.arg("groups", 1))
    attrs, bias = _bias(ctx, ctx.args.get("bias"))
    pad = _spatial(ctx.arg("padding", 0), n)
    outpad = _spatial(ctx.arg("output_padding", 0), n)
    pads = [[p, p - op] for p, op in zip(pad, outpad)]  # output_padding: less padding at the end
    return ctx.emit("nnef.deconv", [x, deconv_filter(ctx, w, groups), *bias], out, **attrs, border="constant",
                    padding=pads, stride=stride, dilation=dilation, groups=groups)


def _to_deconv_layout(w, groups: int):
    """torch [Cin, Cout/g, *k] -> tract [Cout, Cin/g, *k]."""
    cin, cout_g, *k = w.shape
    w = w.reshape(groups, cin // groups, cout_g, *k).transpose(1, 2)
    return w.reshape(groups * cout_g, cin // groups, *k).contiguous()


def deconv_filter(ctx: LowerContext, w: Value, groups: int) -> Value:
    """tract's deconv reads its filter as [Cout, Cin/g, *k]: a derived constant, converted
    when the weights are written (so the export still never loads all weights at once)."""
    from t2ir.ir import Derived

    cin, cout_g, *k = w.shape
    if w.const is None:  # a computed weight: the same regrouping, in the graph
        grouped = w.type.with_shape((groups, cin // groups, cout_g, *k))
        g = ctx.emit("nnef.reshape", [w], grouped, shape=list(grouped.shape))
        swapped = w.type.with_shape((groups, cout_g, cin // groups, *k))
        g = ctx.emit("nnef.transpose", [g], swapped, axes=[0, 2, 1] + list(range(3, 3 + len(k))))
        return ctx.emit("nnef.reshape", [g], w.type.with_shape((groups * cout_g, cin // groups, *k)),
                        shape=[groups * cout_g, cin // groups, *k])
    t = w.type.with_shape((groups * cout_g, cin // groups, *k))
    source = Derived(lambda tensor: _to_deconv_layout(tensor, groups), (w.const.source,), what="deconv filter")
    return ctx.graph.add_const(w.name + "_deconv", t, source, label=w.const.label + ".deconv")


def _pool_geometry(ctx: LowerContext, x: Value, n: int):
    """Kernel, stride, dilation, torch's symmetric padding, and the extra end padding that
    ceil_mode needs for its last (partial) window.

    On a symbolic axis the extra is stride - 1, which gives ceil_mode's window count whatever the
    size (floor((span + s - 1) / s) = ceil(span / s)); the windows it adds past the end hold
    nothing but what the pool ignores. torch drops a last window that would start in the
    padding, which depends on the size unless padding + stride - 1 <= dilation * (kernel - 1):
    the last window then always starts inside the input (ResNet-D's 2x2 average pools,
    GoogLeNet's 3x3 max pools)."""
    kernel = _spatial(ctx.args["kernel_size"], n)
    stride = _spatial(ctx.arg("stride") or kernel, n)
    pad = _spatial(ctx.arg("padding", 0), n)
    dilation = _spatial(ctx.arg("dilation", 1), n)
    extras = [0] * n
    if ctx.arg("ceil_mode", False):
        for i, (size, k, s, d) in enumerate(zip(x.shape[2:], kernel, stride, dilation)):
            if not isinstance(size, int):
                if pad[i] + s - 1 > d * (k - 1):
                    raise TranslationError(
                        f"ceil_mode pooling (kernel {k}, stride {s}, padding {pad[i]}) over a symbolic size: "
                        "whether torch keeps its last window depends on the size",
                        "use ceil_mode=False or make the spatial axes static")
                extras[i] = s - 1
                continue
            span = size + 2 * pad[i] - d * (k - 1) - 1
            extra = (-span) % s
            if (span + extra) // s * s >= size + pad[i]:  # last window would start in the padding
                extra = max(extra - s, 0)
            extras[i] = extra
    return kernel, stride, dilation, pad, extras


def _pool_attrs(kernel, stride, dilation, pads) -> dict:
    """Pool attributes cover every axis, N and C included."""
    return dict(size=[1, 1] + kernel, padding=[[0, 0], [0, 0]] + pads, stride=[1, 1] + stride,
                dilation=[1, 1] + dilation)


@builtin("aten.max_pool1d", "aten.max_pool2d", "aten.max_pool3d", "aten.max_pool1d_with_indices",
         "aten.max_pool2d_with_indices", "aten.max_pool3d_with_indices")
def max_pool(node: Node, ctx: LowerContext):
    x = ctx.args["self"]
    outs = with_batch(ctx, x, _spatial_rank(node.op), [o.type for o in node.outputs],
                      lambda x, types: _max_pool(ctx, x, types))
    return outs if len(outs) > 1 else outs[0]


def _max_pool(ctx: LowerContext, x: Value, types: list) -> list[Value]:
    kernel, stride, dilation, pad, extras = _pool_geometry(ctx, x, x.rank - 2)
    attrs = _pool_attrs(kernel, stride, dilation, [[p, p + e] for p, e in zip(pad, extras)])
    if len(types) == 2:  # torch's indices are flat over the spatial axes, as tract's
        return ctx.emit_multi("nnef.max_pool_with_index", [x], types, border="ignore", **attrs)
    return [ctx.emit("nnef.max_pool", [x], types[0], border="ignore", **attrs)]


@builtin("aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d")
def avg_pool(node: Node, ctx: LowerContext) -> Value:
    """count_include_pad counts torch's zero padding but never ceil_mode's overflow, so the
    zero padding is made explicit and the pool itself ignores what lies outside."""
    if ctx.args.get("divisor_override") is not None:
        raise TranslationError("avg_pool with divisor_override is not supported")
    return with_batch(ctx, ctx.args["self"], _spatial_rank(node.op), [ctx.out],
                      lambda x, types: [_avg_pool(ctx, x, types[0])])[0]


def _avg_pool(ctx: LowerContext, x: Value, out) -> Value:
    kernel, stride, dilation, pad, extras = _pool_geometry(ctx, x, x.rank - 2)
    if ctx.arg("count_include_pad", True) and any(pad):
        padded_t = x.type.with_shape(tuple(x.shape[:2]) + tuple(d + 2 * p for d, p in zip(x.shape[2:], pad)))
        x = ctx.emit("nnef.pad", [x], padded_t, padding=[[0, 0], [0, 0]] + [[p, p] for p in pad],
                     border="constant", value=0.0)
        pad = [0] * len(pad)
    attrs = _pool_attrs(kernel, stride, dilation, [[p, p + e] for p, e in zip(pad, extras)])
    return ctx.emit("nnef.avg_pool", [x], out, border="ignore", **attrs)


def _even_kernel(x: Value, out_size: list[int]) -> list[int] | None:
    """The pooling kernel when every spatial size is static and a multiple of its output size."""
    if not all(isinstance(size, int) and size % o == 0 for size, o in zip(x.shape[2:], out_size)):
        return None
    return [size // o for size, o in zip(x.shape[2:], out_size)]


def _adaptive_by_windows(ctx: LowerContext, x: Value, out_size: list[int], reduce_op: str) -> Value:
    """Adaptive pooling of any (even symbolic) size, one axis after the other (a mean or max over
    a rectangle is the mean or max over its rows of the one over its columns). A mean over a
    symbolic axis among the last two is a product with an averaging matrix built in the graph:
    the windows of such an axis would be o slices with symbolic bounds, and tract's optimizer
    takes minutes over their concatenation (VGG's 7 x 7 pool on a dynamic image)."""
    for axis, o in zip(range(2, x.rank), out_size):
        if x.shape[axis] == o:
            continue
        symbolic = not (isinstance(x.shape[axis], int) and isinstance(o, int))
        if reduce_op == "nnef.mean_reduce" and symbolic and axis >= x.rank - 2:
            x = _mean_by_matrix(ctx, x, axis, o)
        else:
            x = _windows(ctx, x, axis, o, reduce_op)
    return x


def _windows(ctx: LowerContext, x: Value, axis: int, o: int, reduce_op: str) -> Value:
    """Window i of an axis of length L spans [floor(i * L / o), ceil((i + 1) * L / o)); each is
    reduced and the results concatenated."""
    import sympy

    n = x.shape[axis]
    pieces = []
    for i in range(o):
        begin = sympy.floor(sympy.Integer(i) * n / o)
        end = sympy.ceiling(sympy.Integer(i + 1) * n / o)
        begin, end = (int(v) if v.is_Integer else v for v in (begin, end))
        window = ctx.emit("nnef.slice", [x], x.type.with_shape(
            tuple(end - begin if a == axis else d for a, d in enumerate(x.shape))), axes=[axis], begin=[begin],
            end=[end])
        pieces.append(ctx.emit(reduce_op, [window], x.type.with_shape(
            tuple(1 if a == axis else d for a, d in enumerate(x.shape))), axes=[axis]))
    if o == 1:
        return pieces[0]
    return ctx.emit("nnef.concat", pieces, x.type.with_shape(
        tuple(o if a == axis else d for a, d in enumerate(x.shape))), axis=axis)


def _mean_by_matrix(ctx: LowerContext, x: Value, axis: int, o) -> Value:
    """The window means along `axis` (one of the last two) as x times an [o, L] matrix whose row
    i is 1 / size over window i (the windows as in `_windows`, computed from L in the graph)."""
    import torch

    from t2ir.ops.aten._util import symbol_scalar
    from t2ir.ops.aten.elementwise import binary

    n = x.shape[axis]
    i64 = TensorType(DType.i64, (o,))
    length = unsqueeze_to_rank(ctx, symbol_scalar(ctx, n, DType.i64), 1)
    if isinstance(o, int):
        first, count, below = ctx.const(f"{ctx.node.outputs[0].name}_windows", torch.arange(o)), o, o - 1
    else:  # the output size is symbolic too (timm's VGG pools to max(7, H))
        first = ctx.emit("tract_core.range", [], i64, start=0, end=o, step=1)
        count, below = (unsqueeze_to_rank(ctx, symbol_scalar(ctx, d, DType.i64), 1) for d in (o, o - 1))
    begin = binary(ctx, "nnef.div", ctx.emit("nnef.mul", [first, length], i64), count, DType.i64, i64)
    after = binary(ctx, "nnef.add", first, 1, DType.i64, i64)
    end_sum = binary(ctx, "nnef.add", ctx.emit("nnef.mul", [after, length], i64), below, DType.i64, i64)
    end = binary(ctx, "nnef.div", end_sum, count, DType.i64, i64)
    positions = ctx.emit("tract_core.range", [], TensorType(DType.i64, (n,)), start=0, end=n, step=1)
    grid = TensorType(DType.i64, (o, n))
    row = ctx.emit("nnef.unsqueeze", [positions], TensorType(DType.i64, (1, n)), axes=[0])
    # position - bound compared with 0 (tract reads position-vs-bound comparisons symbolically)
    after_begin = binary(ctx, "nnef.ge", _column_minus(ctx, row, begin, grid), 0, DType.i64, grid.with_dtype(DType.bool))
    before_end = binary(ctx, "nnef.lt", _column_minus(ctx, row, end, grid), 0, DType.i64, grid.with_dtype(DType.bool))
    inside = ctx.emit("nnef.and", [after_begin, before_end], grid.with_dtype(DType.bool))
    sizes = ctx.cast(ctx.emit("nnef.sub", [end, begin], i64), x.dtype)
    sizes = ctx.emit("nnef.unsqueeze", [sizes], sizes.type.with_shape((o, 1)), axes=[1])
    weights = ctx.emit("nnef.div", [ctx.cast(inside, x.dtype), sizes], grid.with_dtype(x.dtype))
    weights = unsqueeze_to_rank(ctx, weights, x.rank)
    out = x.type.with_shape(tuple(o if a == axis else d for a, d in enumerate(x.shape)))
    if axis == x.rank - 1:
        return ctx.emit("nnef.matmul", [x, weights], out, transposeB=True)
    return ctx.emit("nnef.matmul", [weights, x], out)


def _column_minus(ctx: LowerContext, row: Value, column: Value, grid) -> Value:
    """row [1, n] - column [o] as [o, n]."""
    col = ctx.emit("nnef.unsqueeze", [column], column.type.with_shape((column.shape[0], 1)), axes=[1])
    return ctx.emit("nnef.sub", [row, col], grid)


@builtin("aten.adaptive_avg_pool1d", "aten.adaptive_avg_pool2d", "aten.adaptive_avg_pool3d",
         "aten._adaptive_avg_pool2d", "aten._adaptive_avg_pool3d")
def adaptive_avg_pool(node: Node, ctx: LowerContext) -> Value:
    """A global mean, an avg_pool when the sizes divide evenly, else a mean per window."""
    n = _spatial_rank(node.op)
    out_size = _spatial(ctx.args["output_size"], n)
    return with_batch(ctx, ctx.args["self"], n, [ctx.out], lambda x, types: [_adaptive_avg(ctx, x, out_size, types[0])])[0]


def _adaptive_avg(ctx: LowerContext, x: Value, out_size: list, out) -> Value:
    if all(o == 1 for o in out_size):
        return ctx.emit("nnef.mean_reduce", [x], out, axes=list(range(2, x.rank)))
    kernel = _even_kernel(x, out_size)
    if kernel is None:
        return _adaptive_by_windows(ctx, x, out_size, "nnef.mean_reduce")
    return ctx.emit("nnef.avg_pool", [x], out, border="ignore",
                    **_pool_attrs(kernel, kernel, [1] * len(kernel), [[0, 0]] * len(kernel)))


@builtin("aten.adaptive_max_pool1d", "aten.adaptive_max_pool2d", "aten.adaptive_max_pool3d")
def adaptive_max_pool(node: Node, ctx: LowerContext):
    """(values, flat spatial indices) of non-overlapping windows."""
    n = _spatial_rank(node.op)
    out_size = _spatial(ctx.args["output_size"], n)
    indices_used = node.outputs[1].is_used
    return with_batch(ctx, ctx.args["self"], n, [o.type for o in node.outputs],
                      lambda x, types: _adaptive_max(ctx, x, out_size, types, indices_used))


def _adaptive_max(ctx: LowerContext, x: Value, out_size: list, types: list, indices_used: bool) -> list[Value]:
    values_t, indices_t = types
    if all(o == 1 for o in out_size):  # global: reductions, fine with symbolic sizes
        spatial = list(range(2, x.rank))
        values = ctx.emit("nnef.max_reduce", [x], values_t, axes=spatial)
        n = 1
        for d in x.shape[2:]:
            n = n * d
        flat = ctx.emit("nnef.reshape", [x], x.type.with_shape(tuple(x.shape[:2]) + (n,)), shape=[0, 0, n])
        index = ctx.emit("nnef.argmax_reduce", [flat], indices_t.with_shape(tuple(x.shape[:2]) + (1,)), axes=[2])
        return [values, ctx.emit("nnef.reshape", [index], indices_t, shape=list(indices_t.shape))]
    kernel = _even_kernel(x, out_size)
    if kernel is None or (x.rank != 4 and not indices_used):  # (tract's pool with indices is 2-D only)
        if indices_used:
            raise TranslationError("adaptive max pooling with indices needs sizes that divide evenly",
                                   "do not use return_indices, or pool from a multiple of the output size")
        return [_adaptive_by_windows(ctx, x, out_size, "nnef.max_reduce"), _unused(ctx, indices_t)]
    if x.rank != 4:
        raise TranslationError("adaptive max pooling with indices is only supported in 2-D", "do not use return_indices")
    attrs = _pool_attrs(kernel, kernel, [1] * len(kernel), [[0, 0]] * len(kernel))
    return ctx.emit_multi("nnef.max_pool_with_index", [x], [values_t, indices_t], border="ignore", **attrs)


def _unused(ctx: LowerContext, t) -> Value:
    """A placeholder for an output nothing reads (dead code, removed by cleanup)."""
    from t2ir.ops.aten.factories import fill

    return fill(ctx, 0, t)


def _channel_param(ctx: LowerContext, v: Value, rank: int) -> Value:
    """[C] -> [1, C, 1, ...] so it broadcasts over an NC... tensor."""
    t = v.type.with_shape((1,) + tuple(v.shape) + (1,) * (rank - 2))
    return ctx.emit("nnef.reshape", [v], t, shape=list(t.shape))


@builtin("aten.batch_norm", "aten._native_batch_norm_legit_no_training", "aten.native_batch_norm",
         "aten._native_batch_norm_legit_functional", "aten._native_batch_norm_legit",
         "aten._native_batch_norm_legit.no_stats", "aten._batch_norm_with_update",
         "aten._batch_norm_with_update_functional", "aten._batch_norm_no_update")
def batch_norm(node: Node, ctx: LowerContext):
    """With running statistics (inference), or with the input's own statistics over batch and
    spatial axes (training mode, instance_norm): the running-statistics updates training makes
    are side effects no exported graph keeps."""
    a = ctx.args
    x, w, b = a["input"], a.get("weight"), a.get("bias")
    mean, var = a.get("running_mean"), a.get("running_var")
    training = a.get("training") if "training" in a else "with_update" in node.op
    t = x.type
    eps = float(a.get("eps") or 1e-5)
    if training or mean is None:
        y = normalize(ctx, x, [0] + list(range(2, x.rank)), eps)
    else:
        centered = ctx.emit("nnef.sub", [x, _channel_param(ctx, ctx.cast(mean, t.dtype), x.rank)], t)
        denom = ctx.emit("nnef.rsqrt", [ctx.emit("nnef.add", [_channel_param(ctx, ctx.cast(var, t.dtype), x.rank)],
                                                 _channel_param_type(var, x, t.dtype), y=eps)],
                         _channel_param_type(var, x, t.dtype))
        y = ctx.emit("nnef.mul", [centered, denom], t)
    if w is not None:
        y = ctx.emit("nnef.mul", [y, _channel_param(ctx, ctx.cast(w, t.dtype), x.rank)], t)
    if b is not None:
        y = ctx.emit("nnef.add", [y, _channel_param(ctx, ctx.cast(b, t.dtype), x.rank)], t)
    if len(node.outputs) > 1:  # the native forms also return saved statistics, which inference never reads
        if any(o.is_used for o in node.outputs[1:]):
            raise TranslationError("batch norm returning saved statistics is not supported")
        return [y] + [_unused(ctx, o.type) for o in node.outputs[1:]]
    return y


def _channel_param_type(v: Value, x: Value, dtype: DType):
    return v.type.with_dtype(dtype).with_shape((1,) + tuple(v.shape) + (1,) * (x.rank - 2))


def normalize(ctx: LowerContext, x: Value, axes: list[int], eps: float, subtract_mean: bool = True) -> Value:
    """(x - mean) / sqrt(var + eps) over `axes` (RMS norm when subtract_mean is False)."""
    t = x.type
    red_t = t.with_shape(tuple(1 if i in axes else d for i, d in enumerate(t.shape)))
    if subtract_mean:
        x = ctx.emit("nnef.sub", [x, ctx.emit("nnef.mean_reduce", [x], red_t, axes=axes)], t)
    var = ctx.emit("nnef.mean_reduce", [ctx.emit("nnef.square", [x], t)], red_t, axes=axes)
    inv = ctx.emit("nnef.rsqrt", [ctx.emit("nnef.add", [var], red_t, y=float(eps))], red_t)
    return ctx.emit("nnef.mul", [x, inv], t)


def affine(ctx: LowerContext, y: Value, w: Value | None, b: Value | None) -> Value:
    if w is not None:
        y = ctx.emit("nnef.mul", [y, unsqueeze_to_rank(ctx, ctx.cast(w, y.dtype), y.rank)], y.type)
    if b is not None:
        y = ctx.emit("nnef.add", [y, unsqueeze_to_rank(ctx, ctx.cast(b, y.dtype), y.rank)], y.type)
    return y


@builtin("aten.layer_norm")
def layer_norm(node: Node, ctx: LowerContext) -> Value:
    a = ctx.args
    x = a["input"]
    k = len(a["normalized_shape"])
    y = normalize(ctx, x, list(range(x.rank - k, x.rank)), a.get("eps") or 1e-5)
    return affine(ctx, y, a.get("weight"), a.get("bias"))


@builtin("aten.rms_norm")
def rms_norm(node: Node, ctx: LowerContext) -> Value:
    a = ctx.args
    x = a["input"]
    k = len(a["normalized_shape"])
    eps = a.get("eps")
    if eps is None:
        import torch

        eps = float(torch.finfo(x.dtype.torch).eps)
    y = normalize(ctx, x, list(range(x.rank - k, x.rank)), eps, subtract_mean=False)
    return affine(ctx, y, a.get("weight"), None)


@builtin("aten.group_norm")
def group_norm(node: Node, ctx: LowerContext) -> Value:
    a = ctx.args
    x, groups = a["input"], a["num_groups"]
    n, c = x.shape[0], x.shape[1]
    if not isinstance(c, int):
        raise TranslationError("group_norm needs a static channel count")
    spatial = 1
    for d in x.shape[2:]:
        spatial = spatial * d
    grouped_t = x.type.with_shape((n, groups, (c // groups) * spatial))
    g = ctx.emit("nnef.reshape", [x], grouped_t, shape=list(grouped_t.shape))
    y = normalize(ctx, g, [2], a.get("eps") or 1e-5)
    y = ctx.emit("nnef.reshape", [y], x.type, shape=list(x.shape))
    w, b = a.get("weight"), a.get("bias")
    if w is not None:
        y = ctx.emit("nnef.mul", [y, _channel_param(ctx, ctx.cast(w, y.dtype), x.rank)], y.type)
    if b is not None:
        y = ctx.emit("nnef.add", [y, _channel_param(ctx, ctx.cast(b, y.dtype), x.rank)], y.type)
    return y


@builtin(*SOFTMAX)
def softmax(node: Node, ctx: LowerContext) -> Value:
    x = ctx.cast(node.inputs[0], ctx.out.dtype)
    if x.rank == 0:  # exp(x - x): 1, or NaN for an infinite x, as torch gives
        return ctx.emit("nnef.exp", [ctx.emit("nnef.sub", [x, x], x.type)], ctx.out)
    return ctx.emit("nnef.softmax", [x], ctx.out, axes=[norm_axis(ctx.args["dim"], x.rank)])


@builtin("aten._safe_softmax")
def safe_softmax(node: Node, ctx: LowerContext) -> Value:
    """softmax, with 0 (not NaN) on rows where every value is -inf (fully masked attention)."""
    x = ctx.cast(node.inputs[0], ctx.out.dtype)
    axis = norm_axis(ctx.args["dim"], x.rank)
    y = ctx.emit("nnef.softmax", [x], ctx.out, axes=[axis])
    red_t = x.type.with_shape(tuple(1 if i == axis else d for i, d in enumerate(x.shape)))
    masked = ctx.emit("nnef.le", [ctx.emit("nnef.max_reduce", [x], red_t, axes=[axis])],
                      red_t.with_dtype(DType.bool), y=float("-inf"))
    return ctx.emit("nnef.select", [masked, y], ctx.out, true_value=0.0)


@builtin("aten.log_softmax.int", "aten._log_softmax")
def log_softmax(node: Node, ctx: LowerContext) -> Value:
    x = ctx.cast(node.inputs[0], ctx.out.dtype)
    if x.rank == 0:  # x - x: 0, or NaN for an infinite x, as torch gives (tract cannot reduce a scalar)
        return ctx.emit("nnef.sub", [x, x], ctx.out)
    axis = norm_axis(ctx.args["dim"], x.rank)
    t = x.type
    red_t = t.with_shape(tuple(1 if i == axis else d for i, d in enumerate(t.shape)))
    shifted = ctx.emit("nnef.sub", [x, ctx.emit("nnef.max_reduce", [x], red_t, axes=[axis])], t)
    lse = ctx.emit("nnef.log", [ctx.emit("nnef.sum_reduce", [ctx.emit("nnef.exp", [shifted], t)], red_t,
                                         axes=[axis])], red_t)
    return ctx.emit("nnef.sub", [shifted, lse], t)
