"""fuse-attention: `aten.scaled_dot_product_attention` and eager attention (matmul, scale, softcap,
mask, softmax, matmul) become one `t2ir.sdpa` node, which tract runs as its sdpa operator.

Grouped-query key/value repetition is absorbed (tract's sdpa groups heads natively). A mask that
is provably the KV-cache causal mask (key position <= query position, with query positions
`P + arange(S)` and key positions `arange(P + S)`) becomes `causal=true`; any other mask (sliding
windows, padding) stays an input of the node. Soft-capping stays an attribute: tract's sdpa has
none, so the t2ir.sdpa translation lowers a soft-capped node to explicit matmul/tanh/softmax.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from t2ir.ir import Graph, Value
from t2ir.ops.aliases import ADD, DIV, MUL, SOFTMAX, TRANSPOSES
from t2ir.options import ExportOptions
from t2ir.passes.base import PassResult
from t2ir.passes.pattern import Pattern, any_, lit, op, var
from t2ir.passes.patterns import (is_number, on_last_axis, positions, repeat_kv, skip_noops, swaps_last_two,
                                  through_casts)
from t2ir.passes.rewrite import Match, RewritePass, rule
from t2ir.types import DType, dims_equal

# An additive bias this negative makes exp() underflow to exactly 0 in f16 and f32 softmax.
MASKED_BIAS = -1e4


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


def scaled(p: Pattern, name: str) -> Pattern:
    """p * f or p / d, with the Python number captured as `name` or `name_div`."""
    return op(MUL, p, lit(name=name, where=is_number), commute=True) | op(DIV, p, lit(name=f"{name}_div",
                                                                                    where=lambda d: is_number(d) and d != 0))


def factor(m: Match, name: str) -> Optional[float]:
    if m.get(name) is not None:
        return float(m[name])
    if m.get(f"{name}_div") is not None:
        return 1.0 / float(m[f"{name}_div"])
    return None


SDPA = op("aten.scaled_dot_product_attention", var("q", rank=4), kv("k"), kv("v"), attn_mask=any_("mask"),
          dropout_p=0.0, is_causal=any_("is_causal"), scale=any_("scale"), enable_gqa=any_())

QK = op("aten.matmul", var("q", rank=4), op(TRANSPOSES, kv("k"), where=swaps_last_two))
SCORES = scaled(QK, "scale") | QK
# Gemma-2: tanh(scores / cap) * cap
CAPPED = scaled(op("aten.tanh", scaled(SCORES, "inv_cap")), "cap")
LOGITS = CAPPED | SCORES
MASKED = op(ADD, through_casts(LOGITS), var("mask"), commute=True) | LOGITS
PROBS = op(SOFTMAX, through_casts(MASKED), dim=any_(), dtype=any_(), half_to_float=any_(), where=on_last_axis())
EAGER = op("aten.matmul", through_casts(PROBS), kv("v"))


@rule(SDPA)
def sdpa(m: Match) -> Optional[Value]:
    """aten.scaled_dot_product_attention(q, repeat_kv(k), repeat_kv(v), mask) -> t2ir.sdpa(q, k, v[, mask])"""
    if m.is_causal:
        # PyTorch's is_causal is top-left aligned: the same as ours only when Sq == Skv.
        if m.mask is not None or not dims_equal(m.q.shape[-2], m.k.shape[-2]):
            return None
    scale = 1.0 / math.sqrt(m.q.shape[-1]) if m.scale is None else float(m.scale)
    return build(m, m.mask, scale, causal=bool(m.is_causal))


@rule(EAGER)
def eager(m: Match) -> Optional[Value]:
    """softmax(q @ k^T * scale [softcap] + mask) @ v -> t2ir.sdpa(q, k, v[, mask], softcap=)"""
    softcap = factor(m, "cap")
    if softcap is not None and not math.isclose(factor(m, "inv_cap") * softcap, 1.0, rel_tol=1e-6):
        return None
    scale = factor(m, "scale")
    return build(m, m.get("mask"), 1.0 if scale is None else scale, softcap=softcap)


def build(m: Match, mask: Optional[Value], scale: float, *, causal: bool = False,
          softcap: Optional[float] = None) -> Optional[Value]:
    q, k, v = m.q, m.k, m.v
    if not dims_equal(k.shape[1], v.shape[1]) or not dims_equal(k.shape[-2], v.shape[-2]):
        return None
    if mask is not None and is_kv_causal(mask, q, k):
        mask, causal = None, True
    attrs: dict[str, Any] = dict(scale=scale, causal=causal)
    if softcap is not None:
        attrs["softcap"] = softcap
    return m.op("t2ir.sdpa", [q, k, v] + ([mask] if mask is not None else []), m.out, **attrs)


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
