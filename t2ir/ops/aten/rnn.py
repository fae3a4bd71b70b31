"""Recurrent layers (aten.lstm / gru / rnn_tanh / rnn_relu and their `t2ir::` twins) as tract
scans: one `tract_core_scan` per layer and direction, over a sequence of any length.

The input projection of the whole sequence is one matmul before the scan; the scan's body (an
NNEF fragment) adds the recurrent term and applies the cell. Backward directions scan with
chunk -1. `reset_every_turn = 1`: each call of the model starts from its initial state (tract
would otherwise carry the state across calls of a stateful runner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from t2ir.errors import TranslationError
from t2ir.ir import Node, Value
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin, register_nnef_op
from t2ir.types import TensorType

_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _gate(i: int, t: str = "g") -> str:
    """Gate i of a [B, G, H] tensor `t`, as [B, H]."""
    return f"squeeze(slice({t}, axes = [1], begin = [{i}], end = [{i + 1}]), axes = [1])"


def _fragment(name: str, params: str, results: str, body: str) -> str:
    lines = "\n".join("    " + line.strip() for line in body.strip().splitlines())
    return f"fragment {name}( {params} )\n-> ( {results} )\n{{\n{lines}\n}}"


_T = "tensor<scalar>"
_STEPS = {
    # gx: the input projection of one step [1, B, G*H]; h, c: states [B, H]; w_hh [G*H, H]
    "lstm": _fragment("t2ir_lstm_step", f"gx: {_T}, h: {_T}, c: {_T}, w_hh: {_T}",
                      f"y: {_T}, h_next: {_T}, c_next: {_T}", f"""
        g = reshape(add(squeeze(gx, axes = [0]), matmul(h, w_hh, transposeB = true)), shape = [0, 4, -1]);
        c_next = add(mul(sigmoid({_gate(1)}), c), mul(sigmoid({_gate(0)}), tanh({_gate(2)})));
        h_next = mul(sigmoid({_gate(3)}), tanh(c_next));
        y = unsqueeze(h_next, axes = [0]);"""),
    # the same with a projection of the hidden state (proj_size): w_hr [P, H]
    "lstm_proj": _fragment("t2ir_lstm_proj_step", f"gx: {_T}, h: {_T}, c: {_T}, w_hh: {_T}, w_hr: {_T}",
                           f"y: {_T}, h_next: {_T}, c_next: {_T}", f"""
        g = reshape(add(squeeze(gx, axes = [0]), matmul(h, w_hh, transposeB = true)), shape = [0, 4, -1]);
        c_next = add(mul(sigmoid({_gate(1)}), c), mul(sigmoid({_gate(0)}), tanh({_gate(2)})));
        h_next = matmul(mul(sigmoid({_gate(3)}), tanh(c_next)), w_hr, transposeB = true);
        y = unsqueeze(h_next, axes = [0]);"""),
    # b_hh [1, 3H] stays inside: the new gate reads r * (W_hn h + b_hn)
    "gru": _fragment("t2ir_gru_step", f"gx: {_T}, h: {_T}, w_hh: {_T}, b_hh: {_T}", f"y: {_T}, h_next: {_T}", f"""
        x3 = reshape(squeeze(gx, axes = [0]), shape = [0, 3, -1]);
        g = reshape(add(matmul(h, w_hh, transposeB = true), b_hh), shape = [0, 3, -1]);
        r = sigmoid(add({_gate(0, "x3")}, {_gate(0)}));
        z = sigmoid(add({_gate(1, "x3")}, {_gate(1)}));
        n = tanh(add({_gate(2, "x3")}, mul(r, {_gate(2)})));
        h_next = add(mul(sub(1.0, z), n), mul(z, h));
        y = unsqueeze(h_next, axes = [0]);"""),
    "rnn_tanh": _fragment("t2ir_rnn_tanh_step", f"gx: {_T}, h: {_T}, w_hh: {_T}", f"y: {_T}, h_next: {_T}", """
        h_next = tanh(add(squeeze(gx, axes = [0]), matmul(h, w_hh, transposeB = true)));
        y = unsqueeze(h_next, axes = [0]);"""),
    "rnn_relu": _fragment("t2ir_rnn_relu_step", f"gx: {_T}, h: {_T}, w_hh: {_T}", f"y: {_T}, h_next: {_T}", """
        h_next = relu(add(squeeze(gx, axes = [0]), matmul(h, w_hh, transposeB = true)));
        y = unsqueeze(h_next, axes = [0]);"""),
}
for _kind, _text in _STEPS.items():
    register_nnef_op(f"fragment.t2ir_{_kind}_step", [], fragment=_text, origin="builtin")


@dataclass
class _Weights:
    """One layer and direction's parameters, in torch's `_flat_weights` order."""

    w_ih: Value
    w_hh: Value
    b_ih: Optional[Value]
    b_hh: Optional[Value]
    w_hr: Optional[Value]


def _split_params(params: list[Value], layers: int, directions: int, has_biases: bool) -> list[_Weights]:
    per = len(params) // (layers * directions)
    proj = per - (4 if has_biases else 2) == 1
    out = []
    for k in range(layers * directions):
        p = iter(params[k * per:(k + 1) * per])
        w_ih, w_hh = next(p), next(p)
        b_ih, b_hh = (next(p), next(p)) if has_biases else (None, None)
        out.append(_Weights(w_ih, w_hh, b_ih, b_hh, next(p) if proj else None))
    return out


def _unsqueeze(ctx: LowerContext, v: Value, axes: list[int]) -> Value:
    shape = list(v.shape)
    for a in axes:
        shape.insert(a, 1)
    return ctx.emit("nnef.unsqueeze", [v], v.type.with_shape(tuple(shape)), axes=axes)


def _input_projection(ctx: LowerContext, x: Value, w: _Weights, kind: str) -> Value:
    """x [T, B, I] @ w_ih^T + b_ih (+ b_hh, except for GRU where it sits inside the cell)."""
    t, b = x.shape[0], x.shape[1]
    g = w.w_ih.shape[0]
    gx_t = x.type.with_shape((t, b, g))
    gx = ctx.emit("nnef.matmul", [x, _unsqueeze(ctx, ctx.cast(w.w_ih, x.dtype), [0])], gx_t, transposeB=True)
    for bias in (w.b_ih, w.b_hh if kind != "gru" else None):
        if bias is not None:
            gx = ctx.emit("nnef.add", [gx, _unsqueeze(ctx, ctx.cast(bias, x.dtype), [0, 1])], gx_t)
    return gx


def _state(ctx: LowerContext, h0: Value, index: int) -> Value:
    """Slice `index` of an initial state [L * D, B, H], as [B, H]."""
    one = h0.type.with_shape((1,) + tuple(h0.shape[1:]))
    s = ctx.emit("nnef.slice", [h0], one, axes=[0], begin=[index], end=[index + 1])
    return ctx.emit("nnef.squeeze", [s], h0.type.with_shape(tuple(h0.shape[1:])), axes=[0])


def _scan(ctx: LowerContext, kind: str, gx: Value, states: list[Value], w: _Weights, backward: bool,
          out_size) -> list[Value]:
    """One layer and direction: (outputs [T, B, H_out], final states [B, H_out] / [B, H])."""
    step = "lstm_proj" if w.w_hr is not None else kind
    chunk = -1 if backward else 1
    full = [("w_hh", ctx.cast(w.w_hh, gx.dtype))]
    if w.w_hr is not None:
        full.append(("w_hr", ctx.cast(w.w_hr, gx.dtype)))
    if kind == "gru":
        b_hh = w.b_hh if w.b_hh is not None else None
        if b_hh is None:
            import torch

            b_hh = ctx.const(f"{ctx.node.outputs[0].name}_no_bias", torch.zeros(w.w_hh.shape[0],
                                                                                 dtype=gx.dtype.torch))
        full.append(("b_hh", _unsqueeze(ctx, ctx.cast(b_hh, gx.dtype), [0])))
    names = ["h", "c"][:len(states)]
    inputs = [gx, *states, *(v for _, v in full)]
    t, b = gx.shape[0], gx.shape[1]
    out_types = [gx.type.with_shape((t, b, out_size))] + [s.type for s in states]
    if w.w_hr is not None:
        out_types[1] = out_types[1].with_shape((b, out_size))
    return ctx.emit_multi(
        "tract_core.scan", inputs, out_types, body=f"fragment.t2ir_{step}_step",
        scan=[("gx", 0, 0, chunk)],
        full=[(name, 1 + len(states) + i) for i, (name, _) in enumerate(full)],
        state=[(n, 1 + i, f"{n}_next") for i, n in enumerate(names)],
        output=[("y", "full", 0, chunk)] + [(f"{n}_next", "last", 0, 1) for n in names],
        skip=0, reset_every_turn=1, external_state=0)


@builtin("aten.lstm.input", "t2ir.lstm", "aten.gru.input", "t2ir.gru", "aten.rnn_tanh.input", "t2ir.rnn_tanh",
         "aten.rnn_relu.input", "t2ir.rnn_relu")
def rnn(node: Node, ctx: LowerContext) -> list[Value]:
    """A stack of (bidirectional) recurrent layers: each layer scans the previous one's output."""
    from t2ir.ops.rnn_library import define_rnn_ops

    define_rnn_ops()  # the schema of the t2ir:: spellings
    kind = node.op.split(".")[1]
    a = ctx.args
    if a["train"] and a["dropout"]:
        raise TranslationError("a recurrent layer with dropout in training mode cannot be exported",
                               "call model.eval() before exporting")
    layers, directions = int(a["num_layers"]), 2 if a["bidirectional"] else 1
    hx = list(a["hx"]) if isinstance(a["hx"], (list, tuple)) else [a["hx"]]
    weights = _split_params(list(a["params"]), layers, directions, bool(a["has_biases"]))
    x = ctx.cast(a["input"], ctx.out.dtype)
    batch_first = bool(a["batch_first"])
    if batch_first:
        x = ctx.emit("nnef.transpose", [x], x.type.with_shape((x.shape[1], x.shape[0], x.shape[2])), axes=[1, 0, 2])
    finals: list[list[Value]] = [[] for _ in hx]
    for layer in range(layers):
        outs = []
        for d in range(directions):
            k = layer * directions + d
            w = weights[k]
            out_size = hx[0].shape[2]
            gx = _input_projection(ctx, x, w, kind)
            states = [_state(ctx, ctx.cast(h, x.dtype), k) for h in hx]
            y, *last = _scan(ctx, kind, gx, states, w, backward=d == 1, out_size=out_size)
            outs.append(y)
            for f, v in zip(finals, last):
                f.append(v)
        x = outs[0] if len(outs) == 1 else ctx.emit(
            "nnef.concat", outs, outs[0].type.with_shape(tuple(outs[0].shape[:2]) + (outs[0].shape[2] * 2,)), axis=2)
    if batch_first:
        x = ctx.emit("nnef.transpose", [x], ctx.out, axes=[1, 0, 2])
    results = [x]
    for f, o in zip(finals, node.outputs[1:]):
        results.append(ctx.emit("nnef.stack", f, o.type, axis=0) if len(f) > 1 else _unsqueeze(ctx, f[0], [0]))
    return results
