"""The torch operators `t2ir::lstm`, `t2ir::gru`, `t2ir::rnn_tanh`, `t2ir::rnn_relu`.

torch.export unrolls aten's RNN ops over the time axis, which pins the sequence length to the
example's. nn.LSTM / nn.GRU / nn.RNN are traced to these operators instead (see
`t2ir.ops.rnn_hooks`): they have aten's schemas and run aten's kernels, but their fake
implementations only compute output shapes, so the sequence length stays symbolic. The same
translation (`t2ir.ops.aten.rnn`) handles both spellings.
"""

from __future__ import annotations

import functools

import torch

_LSTM = ("lstm(Tensor input, Tensor[] hx, Tensor[] params, bool has_biases, int num_layers, float dropout, "
         "bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor, Tensor)")
_ONE_STATE = ("(Tensor input, Tensor hx, Tensor[] params, bool has_biases, int num_layers, float dropout, "
              "bool train, bool bidirectional, bool batch_first) -> (Tensor, Tensor)")
ONE_STATE_CELLS = ("gru", "rnn_tanh", "rnn_relu")


def _output_like(input: torch.Tensor, h0: torch.Tensor, bidirectional: bool, batch_first: bool) -> torch.Tensor:
    """[T, B, D * H_out] (or [B, T, D * H_out]) for an input [T, B, I] and a state [L * D, B, H_out]."""
    features = h0.shape[2] * (2 if bidirectional else 1)
    return input.new_empty((*input.shape[:2], features))


@functools.lru_cache(maxsize=None)
def define_rnn_ops() -> torch.library.Library:
    """Define the operators once per process (translations and tracing both need them)."""
    lib = torch.library.Library("t2ir", "FRAGMENT")
    lib.define(_LSTM)

    def lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        return tuple(t.clone() for t in torch.ops.aten.lstm.input(
            input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first))

    def lstm_fake(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        return _output_like(input, hx[0], bidirectional, batch_first), hx[0].new_empty(hx[0].shape), \
            hx[1].new_empty(hx[1].shape)

    lib.impl("lstm", lstm, "CompositeExplicitAutograd")
    torch.library.register_fake("t2ir::lstm", lstm_fake, lib=lib)
    for cell in ONE_STATE_CELLS:
        lib.define(cell + _ONE_STATE)
        aten_op = getattr(torch.ops.aten, cell).input

        def run(*args, aten_op=aten_op):
            return tuple(t.clone() for t in aten_op(*args))

        def fake(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
            return _output_like(input, hx, bidirectional, batch_first), hx.new_empty(hx.shape)

        lib.impl(cell, run, "CompositeExplicitAutograd")
        torch.library.register_fake(f"t2ir::{cell}", fake, lib=lib)
    return lib
