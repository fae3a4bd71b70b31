"""fuse-transformer-ops: RMSNorm, rotary embedding and SiLU patterns become t2ir.rms_norm,
t2ir.rope and t2ir.silu, which tract runs as its rms_norm, apply_rope and silu operators; the
decomposed GPT-2 tanh-GELU becomes aten.gelu(approximate="tanh") (tract's gelu_approx)."""

from __future__ import annotations

import math
from typing import Any, Optional

import t2ir.ops.transformer  # noqa: F401  (translations of the t2ir ops this pass builds)
from t2ir.ir import Derived, Graph, Node, Value
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.patterns import (CASTS, args, axis_of, cast_to, is_dead, is_number, op_of, operands,
                                  other_operand, plus_number, producer, replace_value, root_const)
from t2ir.passes.rewrite import fuse, rule, single_user
from t2ir.types import dims_equal

MULS = {"aten.mul.Tensor", "aten.mul.Scalar"}


# ---- RMSNorm -------------------------------------------------------------------------------

def _squared(v: Value) -> Optional[Value]:
    """x for x**2, x*x or square(x)."""
    p = producer(v)
    if p is None:
        return None
    if p.op == "aten.pow.Tensor_Scalar" and args(p).get("exponent") in (2, 2.0):
        return p.inputs[0]
    if p.op == "aten.square":
        return p.inputs[0]
    if p.op in MULS and len(p.inputs) == 2 and p.inputs[0] is p.inputs[1]:
        return p.inputs[0]
    return None


def _rms_denominator(v: Value, inverse: bool) -> Optional[tuple[Value, float, int]]:
    """(x, eps, axis) for rsqrt(mean(x^2, -1, keepdim) + eps) (sqrt(...) when not `inverse`)."""
    p = producer(v)
    if p is None or p.op != ("aten.rsqrt" if inverse else "aten.sqrt"):
        return None
    add = producer(p.inputs[0])
    if add is None or add.op != "aten.add.Tensor":
        return None
    mean, eps = operands(add)
    if not isinstance(mean, Value):
        mean, eps = eps, mean
    if not isinstance(mean, Value) or not is_number(eps) or op_of(mean) != "aten.mean.dim":
        return None
    m = args(mean.producer)
    x = _squared(mean.producer.inputs[0])
    dims = m.get("dim") or []
    if x is None or not m.get("keepdim") or len(dims) != 1 or axis_of(dims[0], x.rank) != x.rank - 1:
        return None
    return x, float(eps), x.rank - 1


def _rms_core(node: Node) -> Optional[tuple[Value, float, int]]:
    """(x, eps, axis) when `node` is x * rsqrt(mean(x^2) + eps) or x / sqrt(mean(x^2) + eps)."""
    a, b = operands(node)
    if node.op == "aten.div.Tensor" and isinstance(a, Value) and isinstance(b, Value):
        found = _rms_denominator(b, inverse=False)
        return found if found and found[0] is a else None
    for x, d in ((a, b), (b, a)):
        if isinstance(x, Value) and isinstance(d, Value):
            found = _rms_denominator(d, inverse=True)
            if found and found[0] is x:
                return found
    return None


def _norm_weight(g: Graph, v: Any, width) -> Optional[Value]:
    """A rank-1 constant weight of length `width`, or Gemma's `1 + w` baked into a new constant."""
    if not isinstance(v, Value) or v.rank != 1 or not dims_equal(v.shape[0], width):
        return None
    if root_const(v) is not None:
        return v
    split = plus_number(v)
    base = root_const(split[0]) if split and isinstance(split[0], Value) else None
    if base is None:
        return None
    one = split[1]
    dtype, shift = v.dtype, float(one)
    label = f"{base.const.label}.plus{shift:g}"
    baked = next((c for c in g.consts if c.const.label == label and c.type == v.type), None)
    if baked is not None:  # a weight shared by several norms is baked once
        return baked
    src = Derived(lambda t: (t.float() + shift).to(dtype.torch), (base.const.source,), what=f"{base.const.label} + {shift}")
    return g.add_const(f"{base.name}.plus{shift:g}", v.type, src, label=label)


def _next(v: Value, ops) -> Optional[Node]:
    user = single_user(v)
    return user if user is not None and user.op in ops else None


@rule("rms-norm", ops={"aten.mul.Tensor", "aten.div.Tensor"},
      doc="x * rsqrt(mean(x^2, -1, keepdim) + eps) [-> cast] [* w | * (1 + w)] [-> cast] -> t2ir.rms_norm(x, w)")
def fuse_rms_norm(g: Graph, node: Node, _opts: Any) -> bool:
    core = None if is_dead(g, node) else _rms_core(node)
    if core is None:
        return False
    x, eps, axis = core
    end, weight = node.output, None
    cast = _next(end, CASTS)
    after_cast = cast.output if cast is not None else end
    mul = _next(after_cast, MULS)
    if mul is not None:
        weight = _norm_weight(g, other_operand(mul, after_cast), x.shape[axis])
    if weight is not None:
        end = mul.output
        tail = _next(end, CASTS)
        end = tail.output if tail is not None else end
    if is_dead(g, end.producer):  # already replaced by an earlier match of this core
        return False
    with g.inserting_before(end.producer):
        inputs = [x] + ([weight] if weight is not None else [])
        y = g.op("t2ir.rms_norm", inputs, x.type, name="rms_norm", axis=axis, eps=eps)
        y = cast_to(g, y, end.dtype)
    replace_value(g, end, y)
    return True


# ---- rotary embedding ------------------------------------------------------------------------

def _slice_of(v: Value) -> Optional[tuple[Value, Any, Any]]:
    """(x, start, end) of x[..., start:end] on the last axis."""
    p = producer(v)
    if p is None or p.op != "aten.slice.Tensor":
        return None
    a = args(p)
    x = a["self"]
    if axis_of(a.get("dim") or 0, x.rank) != x.rank - 1 or (a.get("step") or 1) != 1:
        return None
    return x, a.get("start") or 0, a.get("end")


def _rotated(v: Value) -> Optional[Value]:
    """x for rotate_half(x) = cat([-x[..., D/2:], x[..., :D/2]], -1)."""
    p = producer(v)
    if p is None or p.op not in ("aten.cat", "aten.concat") or len(p.inputs) != 2:
        return None
    if axis_of(args(p).get("dim") or 0, v.rank) != v.rank - 1:
        return None
    neg, first = p.inputs
    if op_of(neg) != "aten.neg":
        return None
    second, low = _slice_of(neg.producer.inputs[0]), _slice_of(first)
    if second is None or low is None or second[0] is not low[0]:
        return None
    x = low[0]
    d = x.shape[-1]
    if not isinstance(d, int) or d % 2:
        return None
    half = d // 2
    full = second[2] is None or (isinstance(second[2], int) and second[2] >= d)
    if low[1] != 0 or low[2] != half or second[1] != half or not full:
        return None
    return x


@rule("rope", ops={"aten.add.Tensor"}, doc="x * cos + rotate_half(x) * sin -> t2ir.rope(x, cos, sin)")
def fuse_rope(g: Graph, node: Node, _opts: Any) -> bool:
    a, b = operands(node)
    if is_dead(g, node) or op_of(a) not in MULS or op_of(b) not in MULS:
        return False
    for direct, rotated in ((a, b), (b, a)):
        ra, rb = operands(rotated.producer)
        for r, sin in ((ra, rb), (rb, ra)):
            x = _rotated(r) if isinstance(r, Value) else None
            cos = other_operand(direct.producer, x) if x is not None else None
            if not isinstance(cos, Value) or not isinstance(sin, Value):
                continue
            if cos.shape[-1] != x.shape[-1] or sin.shape[-1] != x.shape[-1] or cos.rank > x.rank or sin.rank > x.rank:
                continue
            if node.output.shape != x.shape:
                continue
            with g.inserting_before(node):
                y = g.op("t2ir.rope", [x, cos, sin], node.output.type, name="rope")
            replace_value(g, node.output, y)
            return True
    return False


# ---- activations -----------------------------------------------------------------------------

@rule("silu", ops={"aten.silu", "aten.mul.Tensor"}, doc="aten.silu(x) | x * sigmoid(x) -> t2ir.silu(x)")
def fuse_silu(g: Graph, node: Node, _opts: Any) -> bool:
    if is_dead(g, node):
        return False
    if node.op == "aten.silu":
        x = node.inputs[0]
    else:
        a, b = operands(node)
        x = next((s for s, t in ((a, b), (b, a)) if isinstance(t, Value) and op_of(t) == "aten.sigmoid"
                  and t.producer.inputs[0] is s), None)
        if x is None:
            return False
    if x.type != node.output.type:
        return False
    with g.inserting_before(node):
        y = g.op("t2ir.silu", [x], node.output.type, name="silu")
    replace_value(g, node.output, y)
    return True


def _scaled(v: Any, factor: float) -> Optional[Value]:
    """x for x * factor (either operand order)."""
    p = producer(v)
    if p is None or p.op not in MULS:
        return None
    a, b = operands(p)
    for x, c in ((a, b), (b, a)):
        if isinstance(x, Value) and is_number(c) and math.isclose(c, factor, rel_tol=1e-6):
            return x
    return None


def _gelu_tanh_input(v: Any) -> Optional[Value]:
    """x for 1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))."""
    split = plus_number(v)
    if split is None or split[1] != 1.0:
        return None
    t = split[0]
    inner = _scaled(t.producer.inputs[0], math.sqrt(2 / math.pi)) if op_of(t) == "aten.tanh" else None
    if inner is None or op_of(inner) != "aten.add.Tensor" or len(inner.producer.inputs) != 2:
        return None
    for x, cube in (inner.producer.inputs, reversed(inner.producer.inputs)):
        c = _scaled(cube, 0.044715)
        if c is not None and op_of(c) == "aten.pow.Tensor_Scalar" and c.producer.inputs[0] is x \
                and args(c.producer).get("exponent") in (3, 3.0):
            return x
    return None


@rule("gelu-tanh", ops={"aten.mul.Tensor"},
      doc="(0.5 * x) * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) -> aten.gelu(x, approximate=\"tanh\")")
def fuse_gelu_tanh(g: Graph, node: Node, _opts: Any) -> bool:
    if is_dead(g, node):
        return False
    a, b = operands(node)
    for half, rest in ((a, b), (b, a)):
        x = _scaled(half, 0.5)
        if x is not None and _gelu_tanh_input(rest) is x and x.type == node.output.type:
            with g.inserting_before(node):
                y = g.op("aten.gelu", [x], node.output.type, name="gelu", approximate="tanh")
            replace_value(g, node.output, y)
            return True
    return False


RULES = [fuse_rms_norm, fuse_rope, fuse_silu, fuse_gelu_tanh]


class FuseTransformerOps(Pass):
    name = "fuse-transformer-ops"

    def run(self, graph: Graph, options: Any) -> PassResult:
        fired = fuse(graph, RULES, options)
        return PassResult(bool(fired), fired)
