"""Which form fused attention takes in tract (ExportOptions.attention), checked in tract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import t2ir


class DecoupledKeys(torch.nn.Module):
    """Keys built as [a per-head part | one rotary part shared by every head], the layout of
    multi-head latent attention (DeepSeek-V2/V3, MiniCPM3, ...)."""

    def forward(self, q, k_nope, k_rope, v):
        k = torch.cat([k_nope, k_rope.expand(-1, k_nope.shape[1], -1, -1)], dim=-1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class PlainKeys(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _export(module, args, tmp_path, attention):
    names = ["q", "k_nope", "k_rope", "v"] if len(args) == 4 else ["q", "k", "v"]
    result = t2ir.export(module, args, tmp_path / "m.nnef.tgz", input_names=names, check_io=True,
                         dynamic_axes={n: {2: "S"} for n in names}, options=t2ir.ExportOptions(attention=attention))
    return sum(n.op == "tract_transformers.sdpa" for n in result.graph.nodes)


@pytest.mark.parametrize("attention,sdpa_nodes", [("auto", 1), ("matmul", 0), ("sdpa", 1)])
def test_keys_split_along_the_head_dimension(tmp_path, attention, sdpa_nodes):
    """auto gives tract's sdpa operator to keys concatenated along the head dimension: tract
    0.23.9's optimizer splits a matmul over that concat and fails on the parts when the keys come
    from a KV cache (docs/architectures.md: axk1); matmul still works when asked for."""
    args = (torch.randn(1, 4, 6, 16), torch.randn(1, 4, 6, 8), torch.randn(1, 1, 6, 8), torch.randn(1, 4, 6, 8))
    assert _export(DecoupledKeys(), args, tmp_path, attention) == sdpa_nodes


def test_auto_runs_plain_attention_as_matmuls(tmp_path):
    args = (torch.randn(1, 4, 6, 16), torch.randn(1, 4, 6, 16), torch.randn(1, 4, 6, 16))
    assert _export(PlainKeys(), args, tmp_path, "auto") == 0
