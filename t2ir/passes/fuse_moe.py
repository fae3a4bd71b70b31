"""fuse-moe: a mixture-of-experts layer (router, top-k, experts, weighted sum) becomes one
`t2ir.moe_ffn` node, which tract runs as its `tract_moe_ffn` operator.

The frontend traces each expert projection as `t2ir.expert_linear` (t2ir.frontend.moe); around
them stay the model's own router and gating code. The rule fuses a layer when tract's operator
computes exactly the same thing:

- routing: top-k over `x @ wg^T` (router bias allowed) read as tract's gate modes: softmax then
  top-k (`softmax_all`), softmax then top-k then renormalised, or top-k then softmax over the k
  (`softmax_topk`), sigmoid (`sigmoid`), the logits themselves (`raw`);
- experts: gated `act(x W1^T) * (x W3^T)` with act = silu, gelu (tanh) or relu, stored as one
  stacked `gate_up` tensor (gate rows first) or as separate up weights without a gate;
- no expert biases.

Anything else (grouped or biased top-k selection, scaled routing weights, clamped gates, expert
biases) keeps the traced ops, and each `t2ir.expert_linear` lowers to a gather of the selected
experts: exact, but without tract's MoE kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from t2ir.ir import Graph, Node, TensorSource, Value
from t2ir.ops.aliases import DIV, MUL, SOFTMAX
from t2ir.passes.patterns import root_const, skip_noops
from t2ir.passes.pattern import any_, op, var
from t2ir.passes.rewrite import Match, RewritePass, rule
from t2ir.types import TensorType

# sum over the k slots of expert outputs times their routing weights
WEIGHTED = op(MUL, op("t2ir.expert_linear", var("hidden"), var("index"), var("down"), bias=None,
                      transposed=any_("down_transposed")),
              op("aten.unsqueeze", var("weights"), dim=lambda d: d in (-1, 2)), commute=True)
MOE_SUM = op("aten.sum.dim_IntList", WEIGHTED, dim=lambda d: list(d) in ([1], [-2]), keepdim=False, dtype=any_())

ACTIVATIONS = {"t2ir.silu": "silu", "aten.silu": "silu", "aten.relu": "relu"}


@dataclass
class Experts:
    """The up projection(s) feeding the activation: what tract calls w1 (gate) and w3 (up)."""

    x: Value
    stacked: Value               # the [E, 2I, H] (or [E, I, H] without gate) constant
    transposed: bool
    activation: str
    gated: bool


def _producer(v: Value, *ops: str) -> Optional[Node]:
    node = skip_noops(v, casts=True).producer
    return node if node is not None and node.op in ops else None


def _activation(node: Node) -> Optional[str]:
    if node.op in ACTIVATIONS:
        return ACTIVATIONS[node.op]
    if node.op == "aten.gelu" and node.attrs.get("approximate") == "tanh":
        return "gelu"
    return None


def _halves(a: Value, b: Value) -> Optional[Value]:
    """The tensor that `a` and `b` are the first and second halves of (last axis), or None."""
    na, nb = skip_noops(a).producer, skip_noops(b).producer
    if na is None or na is not nb or na.op not in ("aten.split.Tensor", "aten.chunk", "aten.split_with_sizes"):
        return None
    src = na.inputs[0]
    if len(na.outputs) != 2 or skip_noops(a) is not na.outputs[0] or skip_noops(b) is not na.outputs[1]:
        return None
    dim = na.attrs.get("dim", 0)
    if dim not in (-1, src.rank - 1):
        return None
    width = src.shape[-1]
    if not isinstance(width, int) or width % 2 or na.outputs[0].shape[-1] != width // 2:
        return None
    return src


def _up_projection(v: Value, index: Value) -> Optional[tuple[Value, Value, bool]]:
    """(x, stacked weight, transposed) when `v` is `t2ir.expert_linear(x, index, W)` without bias."""
    node = _producer(v, "t2ir.expert_linear")
    if node is None or node.inputs[1] is not index or len(node.inputs) != 3 or root_const(node.inputs[2]) is None:
        return None
    return node.inputs[0], node.inputs[2], bool(node.attrs.get("transposed"))


def find_experts(hidden: Value, index: Value) -> Optional[Experts]:
    """act(gate) * up with gate/up the halves of one stacked projection, or act(up) alone."""
    node = skip_noops(hidden, casts=True).producer
    if node is None:
        return None
    if node.op in MUL and len(node.inputs) == 2:
        for act_in, up in (node.inputs, node.inputs[::-1]):
            act = skip_noops(act_in, casts=True).producer
            name = _activation(act) if act is not None else None
            if name is None:
                continue
            stacked = _halves(act.inputs[0], up)
            found = _up_projection(stacked, index) if stacked is not None else None
            if found is not None:
                return Experts(found[0], found[1], found[2], "swiglu" if name == "silu" else name, True)
        return None
    name = _activation(node)
    found = _up_projection(node.inputs[0], index) if name is not None else None
    return Experts(found[0], found[1], found[2], name, False) if found is not None else None


@dataclass
class Routing:
    router: Value                 # wg [E, H]
    bias: Optional[Value]
    gate: str


def _topk(v: Value) -> Optional[Node]:
    node = skip_noops(v, casts=True).producer
    return node if node is not None and node.op == "aten.topk" else None


def _router(logits: Value, x: Value) -> Optional[tuple[Value, Optional[Value]]]:
    """wg (and its bias) when `logits` is `x @ wg^T (+ b)` on the experts' own input."""
    node = _producer(logits, "aten.linear")
    if node is None or skip_noops(node.inputs[0], casts=True) is not skip_noops(x, casts=True):
        return None
    weight = node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if root_const(weight) is None or (bias is not None and root_const(bias) is None):
        return None
    return weight, bias


def find_routing(weights: Value, index: Value, x: Value, k: int) -> Optional[Routing]:
    """tract's gate mode for how `weights` and `index` were chosen, or None when it has none."""
    top = _topk(index)
    if top is None or top.outputs[1] is not index or top.attrs.get("k") != k or top.attrs.get("largest", True) is False \
            or top.attrs.get("dim", -1) not in (-1, top.inputs[0].rank - 1):
        return None
    scores, values = top.inputs[0], top.outputs[0]
    w = skip_noops(weights, casts=True)
    score_node = skip_noops(scores, casts=True).producer
    if w is values:  # the top-k scores are the weights
        if score_node is not None and score_node.op in SOFTMAX:
            gate, logits = "softmax_all", score_node.inputs[0]
        elif score_node is not None and score_node.op == "aten.sigmoid":
            gate, logits = "sigmoid", score_node.inputs[0]
        else:
            gate, logits = "raw", scores
    elif _is_renormalised(w, values) and score_node is not None and score_node.op in SOFTMAX:
        gate, logits = "softmax_topk", score_node.inputs[0]
    elif (after := _producer(w, *SOFTMAX, "aten.sigmoid")) is not None and skip_noops(after.inputs[0], casts=True) is values:
        gate, logits = ("sigmoid" if after.op == "aten.sigmoid" else "softmax_topk"), scores
    else:
        return None
    if score_node is not None and score_node.op in SOFTMAX and not _last_axis(score_node):
        return None
    found = _router(logits, x)
    return Routing(found[0], found[1], gate) if found is not None else None


def _last_axis(node: Node) -> bool:
    return node.attrs.get("dim", -1) in (-1, node.inputs[0].rank - 1)


def _is_renormalised(w: Value, values: Value) -> bool:
    """w = values / values.sum(-1, keepdim=True)"""
    node = w.producer
    if node is None or node.op not in DIV or skip_noops(node.inputs[0], casts=True) is not values:
        return False
    total = _producer(node.inputs[1], "aten.sum.dim_IntList")
    return total is not None and skip_noops(total.inputs[0], casts=True) is values \
        and list(total.attrs.get("dim") or []) in ([-1], [values.rank - 1]) and total.attrs.get("keepdim") is True


@dataclass
class ExpertSlice(TensorSource):
    """A [E, out, in] expert weight cut from a stacked one (`of`, its label): the output rows
    `rows` (gate or up half) of the stack, read transposed when the stack is [E, in, out]."""

    stacked: TensorSource
    of: str
    rows: Optional[tuple[int, int]]
    transposed: bool

    def load(self) -> Any:
        return self.cut(self.stacked.load())

    def describe(self) -> str:
        where = f" rows {self.rows[0]}:{self.rows[1]}" if self.rows else ""
        return f"{self.of}{' transposed' if self.transposed else ''}{where}"

    def cut(self, stacked: Any) -> Any:
        w = stacked.transpose(1, 2) if self.transposed else stacked
        return (w if self.rows is None else w[:, self.rows[0]:self.rows[1]]).contiguous()

    def put_back(self, stacked: Any, part: Any) -> Any:
        """`stacked` with this slice replaced by `part` (e.g. its dequantized form)."""
        out = stacked.clone()
        view = out.transpose(1, 2) if self.transposed else out
        if self.rows is None:
            view.copy_(part)
        else:
            view[:, self.rows[0]:self.rows[1]] = part
        return out


def expert_weight(g: Graph, stacked: Value, rows: Optional[tuple[int, int]], transposed: bool) -> Value:
    """A [E, out, in] constant (tract's "linear" layout) cut from a stacked experts weight:
    `rows` selects output rows (gate or up half); `transposed` weights are [E, in, out]."""
    c = root_const(stacked)
    if rows is None and not transposed:
        return c
    shape = list(c.shape)
    if transposed:
        shape[1], shape[2] = shape[2], shape[1]
    part = "" if rows is None else (".gate" if rows[0] == 0 else ".up")
    if rows is not None:
        shape[1] = rows[1] - rows[0]
    label = f"{c.const.label}{part}{'.t' if transposed else ''}"
    found = next((v for v in g.consts if v.const.label == label), None)
    if found is not None:
        return found
    source = ExpertSlice(c.const.source, c.const.label, rows, transposed)
    return g.add_const(f"{c.name}{part}", TensorType(c.dtype, tuple(shape)), source, label=label)


@rule(MOE_SUM)
def moe_ffn(m: Match) -> Optional[Value]:
    """sum_k(expert_linear(act(expert_linear(x, i, W13)), i, W2) * w[..., None]) with (w, i) = top-k
    routing of x @ wg^T -> t2ir.moe_ffn(x, wg, w1, w2[, w3])"""
    index, k = m.index, m.index.shape[-1]
    experts = find_experts(m.hidden, index)
    if experts is None or m.index.rank != 2 or not isinstance(k, int) or root_const(m.down) is None:
        return None
    routing = find_routing(m.weights, index, experts.x, k)
    if routing is None or experts.x.rank != 2:
        return None
    width = root_const(experts.stacked).shape[2 if experts.transposed else 1]
    if experts.gated:
        half = width // 2
        w1 = expert_weight(m.graph, experts.stacked, (0, half), experts.transposed)
        w3 = [expert_weight(m.graph, experts.stacked, (half, width), experts.transposed)]
    else:
        w1, w3 = expert_weight(m.graph, experts.stacked, None, experts.transposed), []
    w2 = expert_weight(m.graph, m.down, None, bool(m.down_transposed))
    inputs = [experts.x, routing.router, w1, w2, *w3] + ([routing.bias] if routing.bias is not None else [])
    y = m.op("t2ir.moe_ffn", inputs, experts.x.type, k=k, gate=routing.gate, activation=experts.activation,
             gated=experts.gated, router_bias=routing.bias is not None)
    return m.cast(y, m.out.dtype)


FuseMoe = RewritePass("fuse-moe", [moe_ffn])
