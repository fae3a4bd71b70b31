"""fuse-moe: a mixture-of-experts layer (router, top-k, experts, weighted sum) becomes one
node that tract runs as its `tract_moe_ffn` operator.

The frontend traces each expert projection as `t2ir.expert_linear` (t2ir.frontend.moe); around
them stay the model's own router and gating code. Two rules, same pattern:

- `moe-ffn`: the routing is one of tract's gate modes -> `t2ir.moe_ffn` (router inside tract's
  operator): top-k over `x @ wg^T (+ bias)` with softmax then top-k (`softmax_all`), softmax,
  top-k and renormalisation or top-k then softmax over the k (`softmax_topk`), sigmoid
  (`sigmoid`), the logits themselves (`raw`);
- `moe-experts`: any other routing the model computes (grouped or biased selection, scaled
  weights) -> `t2ir.moe_experts`, which hands the model's own choice to tract's operator (see its
  translation in t2ir/ops/experts.py).

Both need experts tract can run: `act(x W1^T + b1) * (x W3^T + b3)` with act = silu, gelu (tanh)
or relu, gate and up stored stacked (halves, or interleaved columns), or an ungated `act(x W^T)`;
gpt-oss's clamped gate `(clamp(u, -l, l) + 1) * g * sigmoid(alpha * g)`, g = min(gate, l);
expert biases. Other experts keep the traced ops, and each `t2ir.expert_linear` lowers to a
gather of the selected experts: exact, but without tract's MoE kernel or Q4_0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from t2ir.ir import Graph, Node, TensorSource, Value
from t2ir.ops.aliases import ADD, DIV, MUL, SOFTMAX
from t2ir.passes.pattern import any_, lit, op, var
from t2ir.passes.patterns import INT_MAX, is_number, root_const, skip_noops
from t2ir.passes.rewrite import Match, RewritePass, rule
from t2ir.types import TensorType

# sum over the k slots of expert outputs times their routing weights
DOWN = (op("t2ir.expert_linear", var("hidden"), var("index"), var("down"), bias=None, transposed=any_("down_transposed"))
        | op("t2ir.expert_linear", var("hidden"), var("index"), var("down"), var("down_bias"),
             transposed=any_("down_transposed")))
WEIGHTED = op(MUL, DOWN,
              op("aten.unsqueeze", var("weights"), dim=lambda d: d in (-1, 2)), commute=True)
MOE_SUM = op("aten.sum.dim_IntList", WEIGHTED, dim=lambda d: list(d) in ([1], [-2]), keepdim=False, dtype=any_())

ACTIVATIONS = {"t2ir.silu": "silu", "aten.silu": "silu", "aten.relu": "relu"}

# gpt-oss: (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g), g = clamp(gate, max=limit)
GATE = op("aten.clamp", var("gate"), min=None, max=lit(name="limit", where=is_number), name="g")
GLU = op(MUL, GATE, op("aten.sigmoid", op(MUL, var("g"), lit(name="alpha", where=is_number), commute=True)),
         commute=True)
UP = op(ADD, op("aten.clamp", var("up"), min=lit(name="low", where=is_number), max=lit(name="limit")), lit(1),
        commute=True)
CLAMPED_GLU = op(MUL, UP, GLU, commute=True)

Part = tuple[int, int, int]  # (start, stop, step) of a projection's output rows


@dataclass
class Experts:
    """The up projection(s) feeding the activation: what tract calls w1 (gate) and w3 (up)."""

    x: Value
    stacked: Value                  # [E, out, in] constant ([E, in, out] when transposed)
    bias: Optional[Value]           # [E, out] constant
    transposed: bool
    activation: str
    gate: Optional[Part] = None     # None: ungated, `act(x W^T)`
    up: Optional[Part] = None
    attrs: Optional[dict] = None    # act_alpha / act_limit of the clamped gate


def _producer(v: Value, *ops: str) -> Optional[Node]:
    node = skip_noops(v, casts=True).producer
    return node if node is not None and node.op in ops else None


def _activation(node: Node) -> Optional[str]:
    if node.op in ACTIVATIONS:
        return ACTIVATIONS[node.op]
    if node.op == "aten.gelu" and node.attrs.get("approximate") == "tanh":
        return "gelu"
    return None


def _part(v: Value) -> Optional[tuple[Value, Part]]:
    """(source, rows) when `v` is a slice of the last axis: a split output or a strided slice."""
    v = skip_noops(v)
    node = v.producer
    if node is None:
        return None
    src = node.inputs[0]
    width = src.shape[-1]
    if not isinstance(width, int) or node.attrs.get("dim", 0) not in (-1, src.rank - 1):
        return None
    if node.op in ("aten.split.Tensor", "aten.split_with_sizes", "aten.chunk") and len(node.outputs) == 2:
        half = node.outputs[0].shape[-1]
        if half * 2 != width or node.outputs[1].shape[-1] != half:
            return None
        return (src, (0, half, 1)) if v is node.outputs[0] else (src, (half, width, 1))
    if node.op == "aten.slice.Tensor":
        start, end, step = node.attrs.get("start") or 0, node.attrs.get("end"), node.attrs.get("step") or 1
        end = width if end is None or end >= INT_MAX or end > width else end
        return (src, (start, end, step)) if isinstance(start, int) and isinstance(end, int) else None
    return None


def _gate_and_up(gate: Value, up: Value) -> Optional[tuple[Value, Part, Part]]:
    """The stacked projection output that `gate` and `up` are two disjoint halves of."""
    a, b = _part(gate), _part(up)
    if a is None or b is None or a[0] is not b[0]:
        return None
    width = a[0].shape[-1]
    rows = set(range(*a[1])) | set(range(*b[1]))
    if len(range(*a[1])) * 2 != width or len(rows) != width:
        return None
    return a[0], a[1], b[1]


def _up_projection(v: Value, index: Value) -> Optional[tuple[Value, Value, Optional[Value], bool]]:
    """(x, stacked weight, bias, transposed) when `v` is `t2ir.expert_linear(x, index, W[, b])`."""
    node = _producer(v, "t2ir.expert_linear")
    if node is None or node.inputs[1] is not index or root_const(node.inputs[2]) is None:
        return None
    bias = node.inputs[3] if len(node.inputs) > 3 else None
    if bias is not None and root_const(bias) is None:
        return None
    return node.inputs[0], node.inputs[2], bias, bool(node.attrs.get("transposed"))


def find_experts(hidden: Value, index: Value) -> Optional[Experts]:
    """act(gate) * up, the clamped gate, or act(up) alone, on one stacked expert projection."""
    node = skip_noops(hidden, casts=True).producer
    if node is None:
        return None
    clamped = CLAMPED_GLU.first(hidden)
    if clamped is not None and float(clamped["low"]) == -float(clamped["limit"]):
        pair = _gate_and_up(clamped["gate"], clamped["up"])
        found = _up_projection(pair[0], index) if pair is not None else None
        if found is not None:
            attrs = {"act_alpha": float(clamped["alpha"]), "act_limit": float(clamped["limit"])}
            return Experts(*found, activation="swiglu", gate=pair[1], up=pair[2], attrs=attrs)
    if node.op in MUL and len(node.inputs) == 2:
        for act_in, up in (node.inputs, node.inputs[::-1]):
            act = skip_noops(act_in, casts=True).producer
            name = _activation(act) if act is not None else None
            pair = _gate_and_up(act.inputs[0], up) if name is not None else None
            found = _up_projection(pair[0], index) if pair is not None else None
            if found is not None:
                return Experts(*found, activation="swiglu" if name == "silu" else name, gate=pair[1], up=pair[2])
        return None
    name = _activation(node)
    found = _up_projection(node.inputs[0], index) if name is not None else None
    return Experts(*found, activation=name) if found is not None else None


@dataclass
class Routing:
    router: Value                 # wg [E, H]
    bias: Optional[Value]
    gate: str


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


def _last_axis(node: Node) -> bool:
    return node.attrs.get("dim", -1) in (-1, node.inputs[0].rank - 1)


def find_routing(weights: Value, index: Value, x: Value, k: int) -> Optional[Routing]:
    """tract's gate mode for how `weights` and `index` were chosen, or None when it has none."""
    top = _producer(index, "aten.topk")
    if top is None or top.outputs[1] is not index or top.attrs.get("k") != k or top.attrs.get("largest") is False \
            or not _last_axis(top):
        return None
    scores, values = top.inputs[0], top.outputs[0]
    w = skip_noops(weights, casts=True)
    score_node = skip_noops(scores, casts=True).producer
    scored = score_node is not None and score_node.op in (*SOFTMAX, "aten.sigmoid")
    if scored and not (score_node.op == "aten.sigmoid" or _last_axis(score_node)):
        return None
    after = _producer(w, *SOFTMAX, "aten.sigmoid")
    if w is values:  # the top-k scores are the weights
        gate, logits = ({"aten.sigmoid": "sigmoid"}.get(score_node.op, "softmax_all"), score_node.inputs[0]) \
            if scored else ("raw", scores)
    elif scored and score_node.op in SOFTMAX and _is_renormalised(w, values):
        gate, logits = "softmax_topk", score_node.inputs[0]
    elif not scored and after is not None and skip_noops(after.inputs[0], casts=True) is values:
        gate, logits = ("sigmoid" if after.op == "aten.sigmoid" else "softmax_topk"), scores
    else:
        return None
    found = _router(logits, x)
    return Routing(found[0], found[1], gate) if found is not None else None


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
    """Expert weights or biases cut from a stacked tensor (`of`, its label) into tract's "linear"
    layout: output rows `part` of `[E, out, in]` (`[E, in, out]` read transposed) or of `[E, out]`,
    with zero rows (`pad_out`) and zero input columns (`pad_in`) appended: room for the routing
    logits that t2ir.moe_experts passes along the input."""

    stacked: TensorSource
    of: str
    part: Optional[Part]
    transposed: bool
    pad_out: int = 0
    pad_in: int = 0

    def load(self) -> Any:
        return self.cut(self.stacked.load())

    def describe(self) -> str:
        rows = f" rows {self.part[0]}:{self.part[1]}:{self.part[2]}" if self.part else ""
        pad = f" zero-padded by {self.pad_out} rows, {self.pad_in} columns" if self.pad_out or self.pad_in else ""
        return f"{self.of}{' transposed' if self.transposed else ''}{rows}{pad}"

    def cut(self, stacked: Any) -> Any:
        import torch.nn.functional as F

        w = stacked.transpose(1, 2) if self.transposed else stacked
        w = (w if self.part is None else w[:, slice(*self.part)]).contiguous()
        if not (self.pad_out or self.pad_in):
            return w
        return F.pad(w, (0, self.pad_in) + ((0, self.pad_out) if w.dim() == 3 else ()))

    def put_back(self, stacked: Any, part: Any) -> Any:
        """`stacked` with this slice replaced by `part` (e.g. its dequantized form), padding dropped."""
        out = stacked.clone()
        view = out.transpose(1, 2) if self.transposed else out
        rows = part.shape[1] - (self.pad_out if part.dim() == 3 else self.pad_in)
        part = part[:, :rows] if part.dim() == 2 else part[:, :rows, :part.shape[2] - self.pad_in]
        view[:, slice(*self.part) if self.part else slice(None)] = part
        return out


def expert_tensor(g: Graph, stacked: Value, part: Optional[Part], name: str, transposed: bool = False,
                  pad_out: int = 0, pad_in: int = 0) -> Value:
    """A constant cut from a stacked expert tensor (see ExpertSlice); itself when nothing is cut."""
    c = root_const(stacked)
    if part is None and not transposed and not pad_out and not pad_in:
        return c
    shape = list(c.shape)
    if transposed:
        shape[1], shape[2] = shape[2], shape[1]
    if part is not None:
        shape[1] = len(range(*part))
    if len(shape) == 3:
        shape[1] += pad_out
        shape[2] += pad_in
    else:
        shape[1] += pad_in
    suffix = ".".join(filter(None, [name, f"padded{pad_out}x{pad_in}" if pad_out or pad_in else ""]))
    label = f"{c.const.label}.{suffix}"
    found = next((v for v in g.consts if v.const.label == label), None)
    if found is not None:
        return found
    source = ExpertSlice(c.const.source, c.const.label, part, transposed, pad_out, pad_in)
    return g.add_const(f"{c.name}.{suffix}", TensorType(c.dtype, tuple(shape)), source, label=label)


def _layer(m: Match) -> Optional[Experts]:
    """The experts of the matched layer, when tract's operator can run them."""
    index = m.index
    experts = find_experts(m.hidden, index)
    down_bias = m.get("down_bias")
    if experts is None or index.rank != 2 or not isinstance(index.shape[-1], int) or experts.x.rank != 2 \
            or root_const(m.down) is None or (down_bias is not None and root_const(down_bias) is None):
        return None
    return experts


def _expert_inputs(m: Match, experts: Experts, pad: int = 0) -> tuple[list[Value], dict[str, Value]]:
    """tract's w1, w2[, w3] and the expert biases by keyword; `pad` widens the input and output
    features (zeros) for the routing logits of t2ir.moe_experts."""
    g, t, down_t = m.graph, experts.transposed, bool(m.down_transposed)
    down = expert_tensor(g, m.down, None, "t" if down_t else "", down_t, pad_out=pad)
    if experts.gate is None:
        weights = [expert_tensor(g, experts.stacked, None, "t" if t else "", t, pad_in=pad), down]
    else:
        weights = [expert_tensor(g, experts.stacked, experts.gate, "gate", t, pad_in=pad), down,
                   expert_tensor(g, experts.stacked, experts.up, "up", t, pad_in=pad)]
    biases = {}
    if experts.bias is not None:
        biases["w1_bias"] = expert_tensor(g, experts.bias, experts.gate, "gate")
        if experts.gate is not None:
            biases["w3_bias"] = expert_tensor(g, experts.bias, experts.up, "up")
    if m.get("down_bias") is not None:
        biases["w2_bias"] = expert_tensor(g, m.down_bias, None, "", pad_in=pad)
    return weights, biases


def _moe_node(m: Match, op_name: str, inputs: list[Value], biases: dict[str, Value], experts: Experts,
              **attrs: Any) -> Value:
    y = m.op(op_name, inputs + list(biases.values()), experts.x.type, k=m.index.shape[-1],
             activation=experts.activation, gated=experts.gate is not None, biases=list(biases),
             **attrs, **(experts.attrs or {}))
    return m.cast(y, m.out.dtype)


@rule(MOE_SUM)
def moe_ffn(m: Match) -> Optional[Value]:
    """sum_k(expert_linear(act(expert_linear(x, i, W13)), i, W2) * w[..., None]) with (w, i) = top-k
    routing of x @ wg^T -> t2ir.moe_ffn(x, wg, w1, w2[, w3][, biases])"""
    experts = _layer(m)
    routing = find_routing(m.weights, m.index, experts.x, m.index.shape[-1]) if experts is not None else None
    if routing is None:
        return None
    weights, biases = _expert_inputs(m, experts)
    if routing.bias is not None:
        biases = {"wg_bias": routing.bias, **biases}
    return _moe_node(m, "t2ir.moe_ffn", [experts.x, routing.router, *weights], biases, experts, gate=routing.gate)


@rule(MOE_SUM)
def moe_experts(m: Match) -> Optional[Value]:
    """the same with any routing the model computes (grouped, biased, scaled top-k)
    -> t2ir.moe_experts(x, index, weights, w1, w2[, w3][, biases]), expert inputs padded for the
    routing logits (see its translation)"""
    experts = _layer(m)
    if experts is None:
        return None
    num_experts = root_const(experts.stacked).shape[0]
    pad = -(-num_experts // ROUTING_BLOCK) * ROUTING_BLOCK
    weights, biases = _expert_inputs(m, experts, pad)
    return _moe_node(m, "t2ir.moe_experts", [experts.x, m.index, m.weights, *weights], biases, experts,
                     routing_width=pad)


# Routing logits ride along the input in whole Q4_0 blocks (32 values), so the expert weights
# padded for them keep their blocks aligned.
ROUTING_BLOCK = 32

FuseMoe = RewritePass("fuse-moe", [moe_ffn, moe_experts])
