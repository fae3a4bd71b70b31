"""t2ir's own transformer ops, built by fuse-transformer-ops, and their tract translations.

- `t2ir.rms_norm(x[, weight], axis=, eps=)`: x / sqrt(mean(x^2, axis) + eps) [* weight], computed
  in x's dtype (tract accumulates in f32 internally). weight is rank 1 along `axis`.
- `t2ir.rope(x, cos, sin)`: x * cos + rotate_half(x) * sin on the last axis, rotate_half being
  HF's half split `cat(-x[..., D/2:], x[..., :D/2])`; cos/sin are full width D and broadcast
  numpy-style against x.
- `t2ir.silu(x)`: x * sigmoid(x).
"""

from __future__ import annotations

from t2ir.ir import Node, Value
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin


@builtin("t2ir.rms_norm")
def rms_norm(node: Node, ctx: LowerContext) -> Value:
    x, *weight = node.inputs
    axis = int(node.attrs["axis"]) % x.rank
    eps = float(node.attrs.get("eps", 1e-6))
    x = ctx.cast(x, ctx.out.dtype)
    y = ctx.emit("tract_core.rms_norm", [x], ctx.out, axis=axis, eps=eps)
    if not weight:
        return y
    # rms_norm then a multiply, not tract_core_scaled_rms_norm: that one runs 1.7x slower on CPU
    # (tract 0.23.9, [1, 512, 256]); the weight gets x's rank (tract broadcasts left-aligned).
    w = ctx.cast(weight[0], ctx.out.dtype)
    shape = tuple(d if i == axis else 1 for i, d in enumerate(x.shape))
    w = ctx.emit("nnef.reshape", [w], w.type.with_shape(shape), shape=list(shape))
    return ctx.emit("nnef.mul", [y, w], ctx.out)


@builtin("t2ir.rope")
def rope(node: Node, ctx: LowerContext) -> Value:
    # tract fails at run time when cos/sin do not have x's dtype.
    x, cos, sin = (ctx.cast(v, ctx.out.dtype) for v in node.inputs)
    return ctx.emit("tract_transformers.apply_rope", [x, cos, sin], ctx.out)


@builtin("t2ir.silu")
def silu(node: Node, ctx: LowerContext) -> Value:
    return ctx.emit("tract_core.silu", [ctx.cast(node.inputs[0], ctx.out.dtype)], ctx.out)

