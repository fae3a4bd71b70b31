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
from dataclasses import dataclass
from typing import Any, Optional

from t2ir.ir import Graph, Node, Value
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.patterns import (args, axis_of, is_dead, is_number, op_of, operands, positions, producer,
                                  replace_value, skip_noops, strip_repeat_kv, transposes_last_two)
from t2ir.passes.rewrite import fuse, rule
from t2ir.types import DType, dims_equal

# An additive bias this negative makes exp() underflow to exactly 0 in f16 and f32 softmax.
MASKED_BIAS = -1e4
SOFTMAX = {"aten.softmax.int", "aten._softmax", "aten.softmax"}


@dataclass
class Attention:
    """What the fused node needs, gathered from either pattern."""

    q: Value
    k: Value
    v: Value
    mask: Optional[Value]
    scale: float
    softcap: Optional[float] = None
    causal: bool = False


# ---- masks -----------------------------------------------------------------------------------

def _is_zero(x: Any) -> bool:
    if is_number(x):
        return x == 0
    p = producer(skip_noops(x, casts=True)) if isinstance(x, Value) else None
    if p is None:
        return False
    if p.op in ("aten.zeros", "aten.zeros_like", "aten.new_zeros"):
        return True
    return p.op in ("aten.full", "aten.full_like", "aten.new_full") and args(p).get("fill_value") == 0


def _bool_of_additive(m: Value) -> Optional[Value]:
    """cond for where(cond, 0, -big): the boolean 'may attend' mask behind an additive one."""
    p = producer(m)
    if p is None or not p.op.startswith("aten.where"):
        return None
    a = args(p)
    cond, keep, drop = a["condition"], a["self"], a["other"]
    if _is_zero(keep) and is_number(drop) and drop <= MASKED_BIAS:
        return cond
    return None


def _drop_all_true(v: Value) -> Value:
    """x for `ones(bool) & x` (HF starts mask conjunctions from an all-true scalar)."""
    p = producer(v)
    if p is None or p.op not in ("aten.__and__.Tensor", "aten.bitwise_and.Tensor", "aten.logical_and"):
        return v
    a, b = operands(p)
    for one, x in ((a, b), (b, a)):
        op = op_of(one) if isinstance(one, Value) else ""
        if op in ("aten.new_ones", "aten.ones", "aten.ones_like") and isinstance(x, Value) and x.shape == v.shape:
            return skip_noops(x, casts=True)
    return v


def is_kv_causal(mask: Value, q: Value, k: Value) -> bool:
    """True when `mask` allows exactly key j <= query i + (Skv - Sq): tract's bottom-right causal."""
    m = skip_noops(mask, casts=True)
    if m.dtype != DType.bool:
        m = _bool_of_additive(m)
        if m is None:
            return False
        m = skip_noops(m, casts=True)
    m = _drop_all_true(m)
    p = producer(m)
    if p is None or p.op not in ("aten.le.Tensor", "aten.ge.Tensor"):
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

def _from_aten_sdpa(node: Node) -> Optional[Attention]:
    a = args(node)
    q, k, v, mask = a["query"], a["key"], a["value"], a.get("attn_mask")
    if (a.get("dropout_p") or 0.0) != 0.0 or q.rank != 4:
        return None
    if a.get("is_causal"):
        # PyTorch's is_causal is top-left aligned: the same as ours only when Sq == Skv.
        if mask is not None or not dims_equal(q.shape[-2], k.shape[-2]):
            return None
    scale = a.get("scale")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return Attention(q, strip_repeat_kv(k), strip_repeat_kv(v), mask, scale, causal=bool(a.get("is_causal")))


def _scalar_factor(v: Value) -> Optional[tuple[Value, float]]:
    """(x, f) for v = x * f or x / (1/f) with a Python scalar f."""
    node = producer(v)
    if node is None or node.op not in ("aten.mul.Tensor", "aten.div.Tensor"):
        return None
    a, b = operands(node)
    if node.op == "aten.mul.Tensor" and is_number(a):
        a, b = b, a
    if not isinstance(a, Value) or not is_number(b) or b == 0:
        return None
    return a, (float(b) if node.op == "aten.mul.Tensor" else 1.0 / float(b))


def _scores(s: Value) -> Optional[tuple[Value, Value, float, Optional[float]]]:
    """(q, k, scale, softcap) for [tanh(]q @ k^T [* scale][ / cap) * cap]."""
    softcap = None
    outer = _scalar_factor(s)
    if outer is not None and op_of(outer[0]) == "aten.tanh":
        inner = _scalar_factor(outer[0].producer.inputs[0])
        if inner is not None and math.isclose(inner[1] * outer[1], 1.0, rel_tol=1e-6):
            softcap, s = outer[1], inner[0]
    scale = 1.0
    factor = _scalar_factor(s)
    if factor is not None:
        s, scale = factor
    p = producer(s)
    if p is None or p.op != "aten.matmul" or s.rank != 4:
        return None
    q, kt = p.inputs
    t = producer(kt)
    if t is None or not transposes_last_two(t):
        return None
    return q, t.inputs[0], scale, softcap


def _from_eager(node: Node) -> Optional[Attention]:
    """`node` is the final probs @ v matmul."""
    probs, v = node.inputs if len(node.inputs) == 2 else (None, None)
    if probs is None or probs.rank != 4:
        return None
    sm = producer(skip_noops(probs, casts=True))
    if sm is None or sm.op not in SOFTMAX or axis_of(args(sm)["dim"], probs.rank) != probs.rank - 1:
        return None
    x, mask = skip_noops(sm.inputs[0], casts=True), None
    found = _scores(x)
    if found is None and op_of(x) == "aten.add.Tensor" and len(x.producer.inputs) == 2:
        a, b = x.producer.inputs
        for s, m in ((a, b), (b, a)):
            found = _scores(skip_noops(s, casts=True))
            if found is not None:
                mask = m
                break
    if found is None:
        return None
    q, k, scale, softcap = found
    return Attention(q, strip_repeat_kv(k), strip_repeat_kv(v), mask, scale, softcap)


def _build(g: Graph, node: Node, att: Attention) -> bool:
    if not dims_equal(att.k.shape[1], att.v.shape[1]) or not dims_equal(att.k.shape[-2], att.v.shape[-2]):
        return False
    if att.mask is not None and is_kv_causal(att.mask, att.q, att.k):
        att.mask, att.causal = None, True
    attrs: dict[str, Any] = dict(scale=att.scale, causal=att.causal)
    if att.softcap is not None:
        attrs["softcap"] = att.softcap
    inputs = [att.q, att.k, att.v] + ([att.mask] if att.mask is not None else [])
    with g.inserting_before(node):
        y = g.op("t2ir.sdpa", inputs, node.output.type, name="sdpa", **attrs)
    replace_value(g, node.output, y)
    return True


@rule("sdpa", ops={"aten.scaled_dot_product_attention"},
      doc="aten.scaled_dot_product_attention(q, repeat_kv(k), repeat_kv(v), mask) -> t2ir.sdpa(q, k, v[, mask])")
def fuse_aten_sdpa(g: Graph, node: Node, _opts: Any) -> bool:
    att = None if is_dead(g, node) else _from_aten_sdpa(node)
    return att is not None and _build(g, node, att)


@rule("eager", ops={"aten.matmul"},
      doc="softmax(q @ k^T * scale [softcap] + mask) @ v -> t2ir.sdpa(q, k, v[, mask], softcap=)")
def fuse_eager(g: Graph, node: Node, _opts: Any) -> bool:
    att = None if is_dead(g, node) else _from_eager(node)
    return att is not None and _build(g, node, att)


RULES = [fuse_aten_sdpa, fuse_eager]


class FuseAttention(Pass):
    name = "fuse-attention"

    def run(self, graph: Graph, options: Any) -> PassResult:
        fired = fuse(graph, RULES, options)
        if not fired:
            return PassResult(False)
        stats = dict(fired)
        for node in graph.nodes:
            if node.op == "t2ir.sdpa":
                for key in ("causal", "softcap"):
                    if node.attrs.get(key):
                        stats[key] = stats.get(key, 0) + 1
                if not dims_equal(node.inputs[0].shape[1], node.inputs[1].shape[1]):
                    stats["gqa"] = stats.get("gqa", 0) + 1
                if len(node.inputs) > 3:
                    stats["masked"] = stats.get("masked", 0) + 1
        return PassResult(True, stats)
