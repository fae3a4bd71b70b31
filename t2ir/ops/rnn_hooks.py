"""Module hooks for nn.RNN, nn.GRU and nn.LSTM: traced as one `t2ir::<cell>` operator each
(`t2ir.ops.rnn_library`), so that the sequence length can stay dynamic."""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence

from t2ir.ops.registry import register_module
from t2ir.ops.rnn_library import define_rnn_ops

_OPS = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def trace_rnn(module: torch.nn.RNNBase, input, hx=None):
    """What the module's forward computes, through one operator call (packed sequences keep
    the module's own forward: their lengths are data)."""
    if isinstance(input, PackedSequence):
        return type(module).forward(module, input, hx)
    define_rnn_ops()
    is_lstm = module.mode == "LSTM"
    batched = input.dim() == 3
    batch_dim = 0 if module.batch_first else 1
    if not batched:
        input = input.unsqueeze(batch_dim)
        if hx is not None:
            hx = tuple(h.unsqueeze(1) for h in hx) if is_lstm else hx.unsqueeze(1)
    if hx is None:
        layers = module.num_layers * (2 if module.bidirectional else 1)
        batch = input.shape[batch_dim]
        out_size = module.proj_size or module.hidden_size
        h0 = input.new_zeros((layers, batch, out_size))
        hx = (h0, input.new_zeros((layers, batch, module.hidden_size))) if is_lstm else h0
    op = getattr(torch.ops.t2ir, _OPS[module.mode])
    output, *states = op(input, list(hx) if is_lstm else hx, module._flat_weights, module.bias, module.num_layers,
                         float(module.dropout), module.training, module.bidirectional, module.batch_first)
    if not batched:
        output = output.squeeze(batch_dim)
        states = [s.squeeze(1) for s in states]
    return output, (tuple(states) if is_lstm else states[0])


for _cls in (torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM):
    register_module(_cls, origin="builtin")(trace_rnn)
