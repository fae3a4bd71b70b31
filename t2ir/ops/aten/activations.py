"""Activations without a one-to-one NNEF op: softplus, elu/selu/celu, hardswish/hardsigmoid,
mish, prelu. Each is written so that no branch overflows to inf or NaN in f16 where the
other branch is the one selected."""

from __future__ import annotations

from t2ir.ir import Node, Value
from t2ir.ops.aten._util import unsqueeze_to_rank
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.types import DType

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def softplus_of(ctx: LowerContext, x: Value) -> Value:
    """log(1 + exp(x)) as max(x, 0) + log(1 + exp(-|x|)): exact and never overflows."""
    t = x.type
    tail = ctx.emit("nnef.exp", [ctx.emit("nnef.neg", [ctx.emit("nnef.abs", [x], t)], t)], t)
    tail = ctx.emit("nnef.log", [ctx.emit("nnef.add", [tail], t, y=1.0)], t)
    return ctx.emit("nnef.add", [ctx.emit("nnef.relu", [x], t), tail], t)


@builtin("aten.softplus")
def softplus(node: Node, ctx: LowerContext) -> Value:
    """torch: x where beta * x > threshold, else log(1 + exp(beta * x)) / beta."""
    x = ctx.cast(ctx.args["self"], ctx.out.dtype)
    t = x.type
    beta, threshold = float(ctx.arg("beta", 1.0)), float(ctx.arg("threshold", 20.0))
    bx = x if beta == 1.0 else ctx.emit("nnef.mul", [x], t, y=beta)
    y = softplus_of(ctx, bx)
    if beta != 1.0:
        y = ctx.emit("nnef.div", [y], t, y=beta)
    linear = ctx.emit("nnef.gt", [bx], t.with_dtype(DType.bool), y=threshold)
    return ctx.emit("nnef.select", [linear, x, y], t)


def elu_of(ctx: LowerContext, x: Value, alpha: float, scale: float = 1.0, input_scale: float = 1.0) -> Value:
    """scale * (x if x > 0 else alpha * (exp(x * input_scale) - 1))."""
    t = x.type
    if scale == 1.0 and input_scale == 1.0 and alpha == 1.0:  # tract's elu ignores an alpha attribute
        return ctx.emit("nnef.elu", [x], t)
    neg = x if input_scale == 1.0 else ctx.emit("nnef.mul", [x], t, y=float(input_scale))
    neg = ctx.emit("nnef.mul", [ctx.emit("nnef.sub", [ctx.emit("nnef.exp", [neg], t)], t, y=1.0)], t,
                   y=float(alpha * scale))
    pos = x if scale == 1.0 else ctx.emit("nnef.mul", [x], t, y=float(scale))
    return ctx.emit("nnef.select", [ctx.emit("nnef.gt", [x], t.with_dtype(DType.bool), y=0.0), pos, neg], t)


@builtin("aten.elu")
def elu(node: Node, ctx: LowerContext) -> Value:
    """alpha * (exp(x) - 1) below zero; tract's elu only for alpha = scale = 1."""
    x = ctx.cast(ctx.args["self"], ctx.out.dtype)
    return elu_of(ctx, x, float(ctx.arg("alpha", 1.0)), float(ctx.arg("scale", 1.0)),
                  float(ctx.arg("input_scale", 1.0)))


@builtin("aten.selu")
def selu(node: Node, ctx: LowerContext) -> Value:
    """elu with torch's fixed alpha and scale."""
    return elu_of(ctx, ctx.cast(ctx.args["self"], ctx.out.dtype), SELU_ALPHA, SELU_SCALE)


@builtin("aten.celu")
def celu(node: Node, ctx: LowerContext) -> Value:
    """alpha * (exp(x / alpha) - 1) below zero."""
    alpha = float(ctx.arg("alpha", 1.0))
    return elu_of(ctx, ctx.cast(ctx.args["self"], ctx.out.dtype), alpha, 1.0, 1.0 / alpha)


@builtin("aten.hardswish")
def hardswish(node: Node, ctx: LowerContext) -> Value:
    """tract's hard_swish (= torch's)."""
    return ctx.emit("tract_core.hard_swish", [ctx.cast(ctx.args["self"], ctx.out.dtype)], ctx.out)


@builtin("aten.hardsigmoid")
def hardsigmoid(node: Node, ctx: LowerContext) -> Value:
    """clamp(x / 6 + 1/2, 0, 1)."""
    x = ctx.cast(ctx.args["self"], ctx.out.dtype)
    t = x.type
    y = ctx.emit("nnef.add", [ctx.emit("nnef.div", [x], t, y=6.0)], t, y=0.5)
    return ctx.emit("nnef.clamp", [y], t, a=0.0, b=1.0)


@builtin("aten.mish")
def mish(node: Node, ctx: LowerContext) -> Value:
    """x * tanh(softplus(x))."""
    x = ctx.cast(ctx.args["self"], ctx.out.dtype)
    return ctx.emit("nnef.mul", [x, ctx.emit("nnef.tanh", [softplus_of(ctx, x)], x.type)], x.type)


@builtin("aten.prelu", "aten._prelu_kernel")
def prelu(node: Node, ctx: LowerContext) -> Value:
    """x if x > 0 else w * x, with w per channel (axis 1) or one shared value."""
    x, w = ctx.args["self"], ctx.args["weight"]
    t = ctx.out
    w = ctx.cast(w, t.dtype)
    if x.rank < 2 and w.rank == 1:  # no channel axis: one shared value, of x's rank
        w = ctx.emit("nnef.reshape", [w], w.type.with_shape((1,) * x.rank), shape=[1] * x.rank)
    elif w.rank == 1 and w.shape[0] != 1:
        shape = (1, w.shape[0]) + (1,) * (x.rank - 2)
        w = ctx.emit("nnef.reshape", [w], w.type.with_shape(shape), shape=list(shape))
    scaled = ctx.emit("nnef.mul", [x, unsqueeze_to_rank(ctx, w, x.rank)], t)
    return ctx.emit("nnef.select", [ctx.emit("nnef.gt", [x], t.with_dtype(DType.bool), y=0.0), x, scaled], t)
