"""fuse-transformer-ops: RMSNorm, rotary embedding and SiLU patterns become t2ir.rms_norm,
t2ir.rope and t2ir.silu, which tract runs as its rms_norm, apply_rope and silu operators; the
decomposed GPT-2 tanh-GELU becomes aten.gelu(approximate="tanh") (tract's gelu_approx)."""

from __future__ import annotations

import math
from typing import Optional

import t2ir.ops.transformer  # noqa: F401  (translations of the t2ir ops this pass builds)
from t2ir.ir import Derived, Graph, Value
from t2ir.ops.aliases import ADD, CASTS, CONCATS, MUL
from t2ir.passes.pattern import any_, lit, op, skip, var
from t2ir.passes.patterns import concat_on_last_axis, const, number, on_last_axis, root_const, square
from t2ir.passes.rewrite import Match, RewritePass, rule
from t2ir.types import TensorType, dims_equal

x = var("x")


def plus(p, name: str):
    """p + a number captured as `name`, in either order."""
    return op(ADD, p, number(name), commute=True)


def times(p, factor: float):
    """p * factor, in either order."""
    return op(MUL, p, lit(factor), commute=True)


# ---- RMSNorm -------------------------------------------------------------------------------

MEAN_OF_SQUARES = op("aten.mean.dim", square(x), keepdim=True, where=on_last_axis())
RMS_CORE = (op(MUL, x, op("aten.rsqrt", plus(MEAN_OF_SQUARES, "eps")), commute=True)
            | op("aten.div.Tensor", x, op("aten.sqrt", plus(MEAN_OF_SQUARES, "eps"))))


@rule(RMS_CORE)
def rms_norm(m: Match) -> Value:
    """x * rsqrt(mean(x^2, -1, keepdim) + eps) | x / sqrt(...) -> t2ir.rms_norm(x)"""
    y = m.op("t2ir.rms_norm", [m.x], m.x.type, axis=m.x.rank - 1, eps=float(m.eps))
    return m.cast(y, m.out.dtype)


def _one_use_cast(node) -> bool:
    return node.op in CASTS and node.outputs[0].num_uses == 1


# A norm weight: a rank-1 constant, or Gemma's `1 + w` (baked into a new constant).
NORM_WEIGHT = const("w", rank=1) | op(ADD, const("base", rank=1), number("shift"), commute=True, name="w")
RMS_WEIGHTED = op(MUL, skip(_one_use_cast, op("t2ir.rms_norm", x, one_use=True, name="norm")), NORM_WEIGHT,
                  commute=True)


@rule(RMS_WEIGHTED)
def rms_norm_weight(m: Match) -> Optional[Value]:
    """rms_norm(x) [-> cast] * w | * (1 + w) -> t2ir.rms_norm(x, w)"""
    attrs = m.norm.producer.attrs
    if not dims_equal(m.w.shape[0], m.x.shape[attrs["axis"]]):
        return None
    w = m.w if m.get("base") is None else baked_shift(m.graph, m.base, float(m.shift), m.w.type)
    y = m.op("t2ir.rms_norm", [m.x, w], m.x.type, name="rms_norm", **attrs)
    return m.cast(y, m.out.dtype)


def baked_shift(g: Graph, base: Value, shift: float, t: TensorType) -> Value:
    """A constant holding `base + shift`, computed when the weights are written; a weight shared
    by several norms is baked once."""
    c = root_const(base).const
    label = f"{c.label}.plus{shift:g}"
    found = next((v for v in g.consts if v.const.label == label and v.type == t), None)
    if found is not None:
        return found
    dtype = t.dtype
    source = Derived(lambda w: (w.float() + shift).to(dtype.torch), (c.source,), what=f"{c.label} + {shift}")
    return g.add_const(f"{root_const(base).name}.plus{shift:g}", t, source, label=label)


# ---- rotary embedding ------------------------------------------------------------------------

def last_axis_slice(src, start, end):
    return op("aten.slice.Tensor", src, dim=any_(), start=start, end=end, where=on_last_axis())


# rotate_half(x) = cat([-x[..., D/2:], x[..., :D/2]], -1)
ROTATE_HALF = op(CONCATS, [op("aten.neg", last_axis_slice(x, lit(name="upper"), any_("upper_end"))),
                           last_axis_slice(x, 0, lit(name="half"))], dim=any_(), where=concat_on_last_axis)
ROPE = op(ADD, op(MUL, x, var("cos"), commute=True), op(MUL, ROTATE_HALF, var("sin"), commute=True), commute=True)


@rule(ROPE)
def rope(m: Match) -> Optional[Value]:
    """x * cos + rotate_half(x) * sin -> t2ir.rope(x, cos, sin)"""
    d = m.x.shape[-1]
    if not isinstance(d, int) or d % 2 or m.half != d // 2 or m.upper != d // 2:
        return None
    if not (m.upper_end is None or (isinstance(m.upper_end, int) and m.upper_end >= d)):
        return None
    fits = all(v.shape[-1] == d and v.rank <= m.x.rank for v in (m.cos, m.sin))
    if not fits or m.out.shape != m.x.shape:
        return None
    return m.op("t2ir.rope", [m.x, m.cos, m.sin], m.out)


# ---- activations -----------------------------------------------------------------------------

@rule(op("aten.silu", x) | op(MUL, x, op("aten.sigmoid", x), commute=True))
def silu(m: Match) -> Optional[Value]:
    """aten.silu(x) | x * sigmoid(x) -> t2ir.silu(x)"""
    return m.op("t2ir.silu", [m.x], m.out) if m.x.type == m.out else None


# 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
CUBE = op("aten.pow.Tensor_Scalar", x, lambda e: e in (3, 3.0))
TANH_ARG = times(op(ADD, x, times(CUBE, 0.044715), commute=True), math.sqrt(2 / math.pi))
GELU_TANH = op(MUL, times(x, 0.5), op(ADD, op("aten.tanh", TANH_ARG), lit(1.0), commute=True), commute=True)


@rule(GELU_TANH)
def gelu_tanh(m: Match) -> Optional[Value]:
    """(0.5 * x) * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) -> aten.gelu(x, approximate="tanh")"""
    return m.op("aten.gelu", [m.x], m.out, approximate="tanh") if m.x.type == m.out else None


FuseTransformerOps = RewritePass("fuse-transformer-ops", [rms_norm, rms_norm_weight, rope, silu, gelu_tanh])
