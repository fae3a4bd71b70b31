"""Reading eager attention's logits as `scale * (q @ k^T)` [soft-capped] plus additive terms.

Models write the softmax input in many orders: scale before or after the mask, ALiBi or other
position biases added next to the causal mask (`(q k^T + alibi) * s + mask`), `baddbmm(bias, q,
k^T, beta, alpha)`, `masked_fill(mask, min)`, heads merged into the batch axis and split again
around the mask (Bloom). All of them are `scale * q k^T + bias` for softmax, with the bias a sum
of the terms met on the way (each times the scales applied after it). `read_logits` walks the
expression back from the softmax and returns that form; `additive_mask` builds the bias as one
value, the float mask tract's sdpa takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

from t2ir.ir import Graph, Value
from t2ir.ops.aten.attention import NEG_LARGE
from t2ir.ops.aliases import ADD, DIV, MUL, RESHAPES, SUB, TRANSPOSES
from t2ir.passes.pattern import arguments, op, var
from t2ir.passes.patterns import is_noop, is_number, repeat_kv, swaps_last_two
from t2ir.types import DType, TensorType, dims_equal

# An additive bias this negative makes exp() underflow to exactly 0 in f16 and f32 softmax.
MASKED_BIAS = -1e4
MATMULS = frozenset({"aten.matmul", "aten.bmm"})
FILLS = frozenset({"aten.masked_fill.Scalar"})
KEEPS = frozenset({"aten.where.ScalarOther"})  # where(keep, logits, -big)
KEY = op(TRANSPOSES, repeat_kv(var("k")) | var("k"), where=swaps_last_two)


@dataclass
class Term:
    """`factor * value`, its leading axes still to be reshaped to `lead` (heads split from batch)."""

    value: Value
    factor: float = 1.0
    lead: Optional[tuple] = None


@dataclass
class Logits:
    """softmax input = softcap(scale * q @ k^T) + sum(terms), -inf where a `masked` value is true."""

    q: Value
    k: Value
    scale: float = 1.0
    softcap: Optional[float] = None
    tanh: bool = False           # a tanh was crossed, its cap factor not yet
    terms: list[Term] = field(default_factory=list)
    masked: list[tuple[Value, bool]] = field(default_factory=list)  # (bool value, true means masked)
    lead: Optional[tuple] = None  # leading shape the logits were reshaped to (heads split from batch)

    def scaled(self, c: float) -> Optional["Logits"]:
        if c <= 0:
            return None
        if self.tanh:  # the cap: softcap(s q k^T) = cap * tanh(s q k^T / cap), so s = s_inner * cap
            if self.terms or self.masked:
                return None
            return replace(self, scale=self.scale * c, softcap=c, tanh=False)
        if self.softcap is not None:
            return None
        return replace(self, scale=self.scale * c, terms=[replace(t, factor=t.factor * c) for t in self.terms])


def _number(a: dict, key: str) -> Optional[float]:
    v = a.get(key)
    return float(v) if is_number(v) else None


def read_logits(v: Value) -> Optional[Logits]:
    """The logits `v` as scale * q k^T + bias, or None when it is something else."""
    node = v.producer
    if node is None:
        return None
    if is_noop(node, casts=True):
        return read_logits(node.inputs[0])
    a = arguments(node)
    if node.op in MATMULS:
        found = KEY.first(a.get("other", a.get("mat2")))
        return Logits(a["self"], found["k"]) if found is not None and a["self"].rank >= 3 else None
    if node.op == "aten.baddbmm":
        found = KEY.first(a["batch2"])
        beta, alpha = a.get("beta", 1), a.get("alpha", 1)
        if found is None or not is_number(beta) or not is_number(alpha):
            return None
        terms = [Term(a["self"], float(beta))] if beta else []
        return Logits(a["batch1"], found["k"], float(alpha), terms=terms)
    if node.op == "aten.tanh":
        inner = read_logits(a["self"])
        if inner is None or inner.terms or inner.masked or inner.tanh or inner.softcap is not None:
            return None
        return replace(inner, tanh=True)
    if node.op in MUL | DIV:
        c = _number(a, "other")
        inner = read_logits(a["self"]) if c is not None else None
        if inner is None and node.op in MUL and _number(a, "self") is not None and isinstance(a["other"], Value):
            c, inner = _number(a, "self"), read_logits(a["other"])
        if inner is None or not c:
            return None
        return inner.scaled(c if node.op in MUL else 1.0 / c)
    if node.op in ADD | SUB:
        return _with_term(a, node.op in SUB)
    if node.op in FILLS and is_number(a.get("value")) and a["value"] <= MASKED_BIAS:
        inner = read_logits(a["self"])
        return None if inner is None or inner.tanh else replace(inner, masked=inner.masked + [(a["mask"], True)])
    if node.op in KEEPS and is_number(a.get("other")) and a["other"] <= MASKED_BIAS:
        inner = read_logits(a["self"])
        return None if inner is None or inner.tanh else replace(inner, masked=inner.masked + [(a["condition"], False)])
    if node.op in RESHAPES:
        return _split_heads(node.inputs[0], v)
    return None


def _with_term(a: dict, subtract: bool) -> Optional[Logits]:
    x, y = a["self"], a["other"]
    if (a.get("alpha") or 1) != 1:
        return None
    inner = read_logits(x) if isinstance(x, Value) else None
    term = y
    if inner is None and not subtract and isinstance(y, Value):
        inner, term = read_logits(y), x
    if inner is None or inner.tanh:
        return None
    if not isinstance(term, Value):  # a constant shift of every logit: softmax ignores it
        return inner if is_number(term) else None
    return replace(inner, terms=inner.terms + [Term(term, -1.0 if subtract else 1.0)])


def _split_heads(src: Value, out: Value) -> Optional[Logits]:
    """[B*H, Sq, Skv] -> [B, H, Sq, Skv] (or back): the same logits with other leading axes."""
    if src.rank < 3 or out.rank < 3 or not all(dims_equal(a, b) for a, b in zip(src.shape[-2:], out.shape[-2:])):
        return None
    if not dims_equal(math.prod(src.shape[:-2]), math.prod(out.shape[:-2])):
        return None
    inner = read_logits(src)
    if inner is None or inner.tanh:
        return None
    lead = tuple(out.shape[:-2])
    return replace(inner, lead=lead, terms=[t if t.lead is not None else replace(t, lead=lead) for t in inner.terms])


def with_heads(v: Value, lead: tuple) -> Optional[Value]:
    """The rank-4 tensor that `v` ([B*H, L, D], merged heads) was reshaped from, if its leading
    axes are `lead` ([B, H]); `v` itself when it already has them."""
    if len(v.shape) - 2 == len(lead):
        return v
    node = v.producer
    while node is not None and is_noop(node, casts=False):
        node = node.inputs[0].producer
    if node is None or node.op not in RESHAPES:
        return None
    src = node.inputs[0]
    if src.rank != len(lead) + 2 or not all(dims_equal(a, b) for a, b in zip(src.shape[-2:], v.shape[-2:])):
        return None
    return src if all(dims_equal(a, b) for a, b in zip(src.shape[:-2], lead)) else None


def _broadcast(a: tuple, b: tuple) -> tuple:
    a, b = (1,) * (len(b) - len(a)) + tuple(a), (1,) * (len(a) - len(b)) + tuple(b)
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def additive_mask(g: Graph, logits: Logits, dtype: DType) -> Optional[Value]:
    """The bias of `logits` as one value: the float mask, or a boolean "may attend" when the
    logits are only masked (so a causal mask can still be recognised as such)."""
    bias: Optional[Value] = None
    for term in logits.terms:
        t = _with_lead(g, term)
        if t is None:
            return None
        if term.factor != 1:
            t = g.op("aten.mul.Tensor", [t], t.type.with_dtype(dtype), other=term.factor, name="mask_scaled")
        bias = t if bias is None else g.op("aten.add.Tensor", [bias, t],
                                           TensorType(dtype, _broadcast(bias.shape, t.shape)), name="mask_sum")
    allowed: Optional[Value] = None
    for flag, masks in logits.masked:
        keep = g.op("aten.logical_not", [flag], flag.type, name="may_attend") if masks else flag
        allowed = keep if allowed is None else g.op(
            "aten.logical_and", [allowed, keep], TensorType(DType.bool, _broadcast(allowed.shape, keep.shape)),
            name="may_attend")
    if bias is None or allowed is None:
        return bias if allowed is None else allowed
    out = TensorType(bias.dtype, _broadcast(bias.shape, allowed.shape))
    return g.op("aten.where.ScalarOther", [allowed, bias], out, other=NEG_LARGE, name="mask")


def _with_lead(g: Graph, term: Term) -> Optional[Value]:
    """The term with the leading axes of the logits (heads split from the batch axis)."""
    t = term.value
    if term.lead is None or t.rank - 2 == len(term.lead):
        return t
    if dims_equal(math.prod(t.shape[:-2]), math.prod(term.lead)):
        lead = tuple(term.lead)
    elif all(d == 1 for d in t.shape[:-2]):
        lead = (1,) * len(term.lead)
    else:
        return None
    shape = (*lead, *t.shape[-2:])
    return g.op("aten.reshape", [t], t.type.with_shape(shape), shape=list(shape), name="mask_heads")
