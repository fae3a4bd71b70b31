"""t2ir's scans behind transformers' kernel names compute what transformers' own PyTorch fallbacks
compute, from a non-zero initial state (the carried state of a chunk on a past). The chunked and
the recurrent forms are one recurrence; 6 tokens with a chunk size of 4 take transformers'
padding and its loop over chunks."""

from __future__ import annotations

import importlib

import pytest
import torch

from t2ir.frontend import recurrent

B, S, H, DK, DV = 1, 6, 2, 8, 4


def _transformers(model: str, name: str):
    return getattr(importlib.import_module(f"transformers.models.{model}.modeling_{model}"), name)


def _delta_inputs(per_channel_decay: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    decay = -torch.rand(B, S, H, *([DK] if per_channel_decay else []), generator=gen)
    return dict(query=rand(B, S, H, DK), key=rand(B, S, H, DK), value=rand(B, S, H, DV), g=decay,
                beta=torch.rand(B, S, H, generator=gen), initial_state=rand(B, H, DK, DV),
                output_final_state=True, use_qk_l2norm_in_kernel=True)


@pytest.mark.parametrize("model, name, per_channel_decay", [
    ("qwen3_next", "torch_chunk_gated_delta_rule", False),
    ("qwen3_next", "torch_recurrent_gated_delta_rule", False),
    ("kimi_linear", "chunk_kimi_delta_attention", True),
    ("kimi_linear", "recurrent_kimi_delta_attention", True),
])
def test_delta_rules_match_transformers(model, name, per_channel_decay):
    inputs = _delta_inputs(per_channel_decay)
    extra = {"chunk_size": 4} if "chunk" in name else {}
    want_out, want_state = _transformers(model, name)(**inputs, **extra)
    got_out, got_state = recurrent.gated_delta_rule(**inputs)
    torch.testing.assert_close(got_out, want_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_state, want_state, atol=1e-5, rtol=1e-5)


def test_mamba2_state_space_scan_matches_transformers():
    gen = torch.Generator().manual_seed(0)
    heads, head_dim, groups, state = 4, 8, 2, 6
    inputs = dict(hidden_states=torch.randn(B, S, heads, head_dim, generator=gen),
                  dt=torch.randn(B, S, heads, generator=gen), A=-torch.rand(heads, generator=gen),
                  B=torch.randn(B, S, groups, state, generator=gen), C=torch.randn(B, S, groups, state, generator=gen),
                  chunk_size=4, D=torch.randn(heads, generator=gen), dt_bias=torch.randn(heads, generator=gen),
                  initial_states=torch.randn(B, heads, head_dim, state, generator=gen), dt_softplus=True,
                  dt_limit=(0.0, 2.0), return_final_states=True)
    want_out, want_state = _transformers("bamba", "mamba2_chunk_scan")(**inputs)
    got_out, got_state = recurrent.chunk_scan(**inputs)
    torch.testing.assert_close(got_out, want_out, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_state, want_state, atol=1e-4, rtol=1e-4)
