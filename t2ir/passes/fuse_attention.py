"""fuse-attention: `aten.scaled_dot_product_attention` and eager attention (matmul, scale, softcap,
mask, softmax, matmul) become one `t2ir.sdpa` node, which tract runs as its sdpa operator.

Grouped-query key/value repetition is absorbed (tract's sdpa groups heads natively). A mask that
is provably the KV-cache causal mask (key position <= query position, with query positions
`P + arange(S)` and key positions `arange(P + S)`) becomes `causal=true`; any other mask (sliding
windows, padding) stays an input of the node. Soft-capping stays an attribute: tract's sdpa has
none, so the t2ir.sdpa translation lowers a soft-capped node to explicit matmul/tanh/softmax.

Eager logits are read by `attention_logits` whatever their order: scales, soft-capping, additive
position biases (ALiBi) next to the mask, `baddbmm`, masked fills, heads merged into the batch
axis around the softmax. Every bias and fill becomes part of the one float mask tract's sdpa
takes, so ALiBi runs inside tract's operator, in prefill and decode alike.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from t2ir.ir import Graph, Value
from t2ir.ops.aliases import RESHAPES, SOFTMAX
from t2ir.options import ExportOptions
from t2ir.passes.attention_logits import MASKED_BIAS, MATMULS, additive_mask, read_logits, with_heads
from t2ir.passes.base import PassResult
from t2ir.passes.pattern import Pattern, any_, lit, op, skip, var
from t2ir.passes.patterns import (is_noop_or_cast, is_number, on_last_axis, positions, repeat_kv, skip_noops,
                                  through_casts)
from t2ir.passes.rewrite import Match, RewritePass, rule
from t2ir.types import DType, TensorType, dims_equal


# ---- masks -----------------------------------------------------------------------------------

ZERO = lit(0) | op({"aten.zeros", "aten.zeros_like", "aten.new_zeros"}, dtype=any_()) \
    | op({"aten.full", "aten.full_like", "aten.new_full"}, fill_value=0, dtype=any_())
# where(cond, 0, -big): the boolean "may attend" mask behind an additive one.
ADDITIVE = op({"aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar"},
              var("allowed"), through_casts(ZERO), lit(where=lambda b: is_number(b) and b <= MASKED_BIAS))
# ones(bool) & x: transformers starts mask conjunctions from an all-true value.
ALL_TRUE = op({"aten.new_ones", "aten.ones", "aten.ones_like"}, dtype=any_())
AND_ALL_TRUE = op({"aten.__and__.Tensor", "aten.bitwise_and.Tensor", "aten.logical_and"}, ALL_TRUE,
                  through_casts(var("allowed")), commute=True)


def allowed_positions(mask: Value) -> Value:
    """The boolean mask behind an additive one, without casts and all-true conjunctions."""
    m = skip_noops(mask, casts=True)
    if m.dtype != DType.bool:
        found = ADDITIVE.first(m)
        if found is None:
            return m
        m = skip_noops(found["allowed"], casts=True)
    found = AND_ALL_TRUE.first(m)
    return m if found is None or found["allowed"].shape != m.shape else skip_noops(found["allowed"], casts=True)


def is_kv_causal(mask: Value, q: Value, k: Value) -> bool:
    """True when `mask` allows exactly key j <= query i + (Skv - Sq): tract's bottom-right causal."""
    m = allowed_positions(mask)
    p = m.producer
    if m.dtype != DType.bool or p is None or p.op not in ("aten.le.Tensor", "aten.ge.Tensor"):
        return False
    key, query = p.inputs if p.op == "aten.le.Tensor" else reversed(p.inputs)
    kp, qp = positions(key), positions(query)
    if kp is None or qp is None or kp.rank != m.rank or qp.rank != m.rank:
        return False
    sq, skv = q.shape[-2], k.shape[-2]
    if kp.axis != m.rank - 1 or qp.axis != m.rank - 2 or not dims_equal(kp.length, skv) or not dims_equal(qp.length, sq):
        return False
    return dims_equal(qp.offset - kp.offset, skv - sq)


# ---- patterns --------------------------------------------------------------------------------

def kv(name: str) -> Pattern:
    """A key or value operand, with transformers' repeat_kv taken off when it is there."""
    return repeat_kv(var(name)) | var(name)


SDPA = op("aten.scaled_dot_product_attention", var("q", rank=4), kv("k"), kv("v"), attn_mask=any_("mask"),
          dropout_p=0.0, is_causal=any_("is_causal"), scale=any_("scale"), enable_gqa=any_())

PROBS = op(SOFTMAX, through_casts(var("logits")), dim=any_(), dtype=any_(), half_to_float=any_(),
           where=on_last_axis())
# probabilities @ v, maybe with the heads merged into the batch axis around the softmax (Bloom)
EAGER = op(MATMULS, skip(lambda n: is_noop_or_cast(n) or n.op in RESHAPES, PROBS), kv("v"))


@rule(SDPA)
def sdpa(m: Match) -> Optional[Value]:
    """aten.scaled_dot_product_attention(q, repeat_kv(k), repeat_kv(v), mask) -> t2ir.sdpa(q, k, v[, mask])"""
    if m.is_causal:
        # PyTorch's is_causal is top-left aligned: the same as ours only when Sq == Skv.
        if m.mask is not None or not dims_equal(m.q.shape[-2], m.k.shape[-2]):
            return None
    scale = 1.0 / math.sqrt(m.q.shape[-1]) if m.scale is None else float(m.scale)
    return build(m, m.q, m.k, m.v, m.mask, scale, causal=bool(m.is_causal))


@rule(EAGER)
def eager(m: Match) -> Optional[Value]:
    """softmax(scale * q @ k^T [softcap] + biases [masked]) @ v -> t2ir.sdpa(q, k, v[, mask], softcap=)"""
    logits = read_logits(m.logits)
    if logits is None or logits.tanh:
        return None
    lead = tuple(m.logits.shape[:-2])
    q, k, v = (with_heads(x, lead) for x in (logits.q, logits.k, m.v))
    if q is None or k is None or v is None or q.rank != 4:
        return None
    mask = additive_mask(m.graph, logits, m.logits.dtype)
    if mask is None and (logits.terms or logits.masked):
        return None
    out = m.out if v is m.v else m.out.with_shape((*lead, q.shape[-2], v.shape[-1]))
    y = build(m, q, k, v, mask, logits.scale, softcap=logits.softcap, out=out)
    if y is None or out is m.out:
        return y
    return m.op("aten.reshape", [y], m.out, shape=list(m.out.shape))


def build(m: Match, q: Value, k: Value, v: Value, mask: Optional[Value], scale: float, *, causal: bool = False,
          softcap: Optional[float] = None, out: Optional[TensorType] = None) -> Optional[Value]:
    if not dims_equal(k.shape[1], v.shape[1]) or not dims_equal(k.shape[-2], v.shape[-2]):
        return None
    if mask is not None and is_kv_causal(mask, q, k):
        mask, causal = None, True
    attrs: dict[str, Any] = dict(scale=scale, causal=causal)
    if softcap is not None:
        attrs["softcap"] = softcap
    return m.op("t2ir.sdpa", [q, k, v] + ([mask] if mask is not None else []), out or m.out, **attrs)


class FuseAttention(RewritePass):
    """The rules' counts, plus how many fused nodes are causal, soft-capped, grouped or masked."""

    def __init__(self):
        super().__init__("fuse-attention", [sdpa, eager])

    def run(self, graph: Graph, options: ExportOptions) -> PassResult:
        result = super().run(graph, options)
        if not result.changed:
            return result
        stats = dict(result.stats)
        for node in graph.nodes:
            if node.op != "t2ir.sdpa":
                continue
            kinds = [k for k in ("causal", "softcap") if node.attrs.get(k)]
            if not dims_equal(node.inputs[0].shape[1], node.inputs[1].shape[1]):
                kinds.append("gqa")
            if len(node.inputs) > 3:
                kinds.append("masked")
            for k in kinds:
                stats[k] = stats.get(k, 0) + 1
        return PassResult(True, stats)
