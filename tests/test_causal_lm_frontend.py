"""Exported causal LMs with explicit KV caches must match transformers' own cached generation loop."""

from __future__ import annotations

import functools
import os
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

sys.path.insert(0, os.path.dirname(__file__))

from llm_models import TINY_CONFIGS, tiny_model  # noqa: E402
from t2ir.frontend.cache_layout import cache_input_names, empty_caches  # noqa: E402
from t2ir.frontend.causal_lm import (  # noqa: E402
    build_meta_model,
    cache_layout_of,
    dim_symbols,
    export_causal_lm,
)

ATOL = 1e-5
PREFILL, DECODE_STEPS = 7, 3

# transformers 5.24 refuses sdpa for Gemma-2 (attention soft-capping is eager/flex only).
UNSUPPORTED = {("gemma2", "sdpa")}
CASES = [(arch, attn) for arch in TINY_CONFIGS for attn in ("sdpa", "eager") if (arch, attn) not in UNSUPPORTED]


@pytest.mark.parametrize("arch,attn", sorted(UNSUPPORTED))
def test_unsupported_attention_is_refused_by_transformers(arch: str, attn: str) -> None:
    """Documented in docs/passes.md: these combinations do not exist upstream (tested, not skipped)."""
    with pytest.raises(ValueError, match="does not support an attention implementation"):
        tiny_model(arch, attn)


@functools.cache
def _exported(arch: str, attn: str) -> tuple[torch.nn.Module, torch.export.ExportedProgram]:
    """Export once per (arch, attn): export dominates the runtime, and several tests inspect the same program."""
    model = tiny_model(arch, attn)
    return model, export_causal_lm(model)


def _empty_caches(model, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """P=0 caches for the prefill step."""
    return empty_caches(cache_layout_of(model), dtype)


def _max_diffs(model, ep) -> tuple[float, float]:
    """Prefill then greedy decode, in lockstep with transformers using its own DynamicCache.

    The reference derives positions from its cache (no position_ids given), so the wrapper's P + arange(S)
    is checked rather than shared. Returns (logits diff, cache diff); for sliding-window layers transformers
    keeps only the last window-1 positions, so caches are compared on the reference's tail.
    """
    num_layers = len(cache_layout_of(model))
    ids = torch.randint(3, model.config.vocab_size, (1, PREFILL), generator=torch.Generator().manual_seed(1))
    ref_cache = DynamicCache(config=model.config)
    past = _empty_caches(model)
    run = ep.module()
    logits_diff = cache_diff = 0.0
    with torch.no_grad():
        for _ in range(1 + DECODE_STEPS):
            ref = model(input_ids=ids, cache=ref_cache, use_cache=True)
            out = run(ids, *past)
            assert out[0].shape == ref.logits.shape
            logits_diff = max(logits_diff, (out[0] - ref.logits).abs().max().item())
            for i in range(num_layers):
                layer = ref_cache.layers[i]
                for got, want in ((out[1 + 2 * i], layer.keys), (out[2 + 2 * i], layer.values)):
                    assert got.shape[2] == past[2 * i].shape[2] + ids.shape[1]
                    cache_diff = max(cache_diff, (got[:, :, -want.shape[2] :] - want).abs().max().item())
            past = list(out[1:])
            ids = ref.logits[:, -1:].argmax(-1)
    return logits_diff, cache_diff


@pytest.mark.parametrize("arch,attn", CASES)
def test_prefill_and_decode_match_transformers(arch: str, attn: str) -> None:
    model, ep = _exported(arch, attn)
    logits_diff, cache_diff = _max_diffs(model, ep)
    assert logits_diff <= ATOL and cache_diff <= ATOL, (logits_diff, cache_diff)


def test_named_inputs_and_checkpoint_parameter_names() -> None:
    model, ep = _exported("qwen2", "sdpa")  # tied lm_head
    layout = cache_layout_of(model)
    num_layers = len(layout)
    assert list(ep.graph_signature.user_inputs) == ["input_ids", *cache_input_names(layout)]
    # Parameters keep transformers' checkpoint names; a tied pair is two names for one tensor.
    assert set(ep.state_dict) == set(model.state_dict())
    assert ep.state_dict["lm_head.weight"] is ep.state_dict["model.embed_tokens.weight"]
    assert len(ep.graph_signature.user_outputs) == 1 + 2 * num_layers
    # One graph for prefill and decode: S >= 1 and P >= 0 stay symbolic.
    dims = dim_symbols(ep)
    assert (ep.range_constraints[dims["S"]].lower, ep.range_constraints[dims["P"]].lower) == (1, 0)
    assert str(ep.range_constraints[dims["S"]].upper) == str(ep.range_constraints[dims["P"]].upper) == "int_oo"


def test_logits_to_keep_projects_last_position_only() -> None:
    model = tiny_model("gemma2", "eager")  # final logit soft-capping must follow the slice
    ep = export_causal_lm(model, num_logits_to_keep=1)
    lm_head = next(
        spec.arg.name for spec in ep.graph_signature.input_specs if spec.target == "lm_head.weight"
    )
    (head,) = [n for n in ep.graph.nodes if n.target == torch.ops.aten.linear.default and n.args[1].name == lm_head]
    assert head.args[0].meta["val"].shape[1] == 1  # sliced before the vocab projection
    ids = torch.randint(3, 128, (1, PREFILL), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = ep.module()(ids, *_empty_caches(model))
        ref = model(input_ids=ids)
    assert out[0].shape == (1, 1, model.config.vocab_size)
    assert (out[0] - ref.logits[:, -1:]).abs().max().item() <= ATOL


@pytest.mark.parametrize("arch,attn", [("mistral", "sdpa"), ("gemma3", "eager")])
def test_sliding_window_shorter_than_sequence(arch: str, attn: str) -> None:
    """Full-length caches + window mask reproduce transformers' truncating sliding-window caches."""
    config = TINY_CONFIGS[arch]()
    config.sliding_window = 4
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
    logits_diff, cache_diff = _max_diffs(model, export_causal_lm(model))
    assert logits_diff <= ATOL and cache_diff <= ATOL, (logits_diff, cache_diff)


def test_meta_model_rebuilds_buffers_an_enclosing_module_sets() -> None:
    """FalconH1's mixers hold a MuP vector their model's _init_weights copies in: on the meta
    device it is rebuilt from the enclosing modules' _init_weights, equal to an eager build's."""
    from architectures import tiny_config

    config = tiny_config("falcon_h1")
    meta = build_meta_model(config, torch.float32)
    eager = AutoModelForCausalLM.from_config(config)
    for name, buffer in eager.named_buffers():
        if name.endswith("mup_vector"):
            assert torch.equal(meta.get_buffer(name), buffer), name
    assert any(name.endswith("mup_vector") for name, _ in eager.named_buffers())


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_meta_model_exports_same_graph(arch: str) -> None:
    real, ep_real = _exported(arch, "sdpa")
    meta = build_meta_model(TINY_CONFIGS[arch](), torch.float32)
    assert all(p.is_meta for p in meta.parameters())
    ep_meta = export_causal_lm(meta)
    assert ep_meta.graph_module.code == ep_real.graph_module.code
    assert [(n.op, n.target) for n in ep_meta.graph.nodes] == [(n.op, n.target) for n in ep_real.graph.nodes]
    # Computed buffers (rotary inv_freq, embed_scale) are real and equal to the eagerly built model's.
    assert set(ep_meta.constants) == set(ep_real.constants) and ep_meta.constants
    for name, value in ep_meta.constants.items():
        assert not value.is_meta and torch.equal(value, ep_real.constants[name]), name
    # Weights stay meta, tie preserved, to be filled from the checkpoint by name.
    assert set(ep_meta.state_dict) == set(ep_real.state_dict)
    assert all(t.is_meta for t in ep_meta.state_dict.values())
    if real.config.tie_word_embeddings:
        assert ep_meta.state_dict["lm_head.weight"] is ep_meta.state_dict["model.embed_tokens.weight"]
