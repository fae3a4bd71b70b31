"""Tiny random causal-LM configs covering the decoder architectures t2ir targets."""

from __future__ import annotations

from typing import Callable

import torch
import transformers
from transformers import AutoModelForCausalLM, PretrainedConfig

# Shared tiny geometry: hidden 64, 2 layers, 4 heads of 16, 2 kv heads (GQA), MLP 128, vocab 128.
_COMMON = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=128,
    max_position_embeddings=64,
    head_dim=16,
)
# Token ids kept inside the tiny vocabulary (defaults such as 32000 would break nn.Embedding(padding_idx)).
_TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _cfg(cls_name: str, **overrides) -> PretrainedConfig:
    """Build `transformers.<cls_name>` from the shared geometry plus overrides (None drops a key)."""
    kwargs = {**_COMMON, **_TOKENS, **overrides}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return getattr(transformers, cls_name)(**kwargs)


TINY_CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "llama": lambda: _cfg("LlamaConfig", tie_word_embeddings=False),
    "qwen2": lambda: _cfg("Qwen2Config", head_dim=None, tie_word_embeddings=True),
    "qwen3": lambda: _cfg("Qwen3Config", tie_word_embeddings=True),
    # Mistral: sliding window on every layer, kept larger than the test sequences.
    "mistral": lambda: _cfg("MistralConfig", sliding_window=32),
    # Phi-3: fused qkv / gate_up projections; no native head_dim attribute.
    "phi3": lambda: _cfg("Phi3Config", head_dim=None),
    # Gemma: (1 + w) RMSNorm, sqrt(hidden) embedding scale, tied lm_head, MQA-style default kept as GQA here.
    "gemma": lambda: _cfg("GemmaConfig"),
    # Gemma-2: alternating sliding/full layers, attention + final logit soft-capping, query_pre_attn_scalar.
    "gemma2": lambda: _cfg(
        "Gemma2Config",
        sliding_window=32,
        query_pre_attn_scalar=16,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
    ),
    # Gemma-3 text: hybrid layers with per-layer-type rope, q/k norms; force one sliding + one full layer.
    "gemma3": lambda: _cfg(
        "Gemma3TextConfig",
        sliding_window=32,
        query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "full_attention"],
    ),
    "olmo2": lambda: _cfg("Olmo2Config", head_dim=None),
    # Granite: non-trivial multipliers so each scaling is exercised.
    "granite": lambda: _cfg(
        "GraniteConfig",
        head_dim=None,
        embedding_multiplier=2.0,
        residual_multiplier=0.5,
        attention_multiplier=0.25,
        logits_scaling=4.0,
    ),
    # StableLM: LayerNorm with bias, partial rotary (25%), qkv bias and per-head q/k layernorm.
    "stablelm": lambda: _cfg("StableLmConfig", head_dim=None, use_qkv_bias=True, qk_layernorm=True),
    # GPT-2: learned positions, Conv1D projections, no GQA (4 heads of 16).
    "gpt2": lambda: transformers.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_inner=128, vocab_size=128, n_positions=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    ),
    # SmolLM3: second layer is NoPE (no rotary embedding).
    "smollm3": lambda: _cfg("SmolLM3Config", head_dim=None, no_rope_layers=[1, 0]),
}


def tiny_model(
    arch: str, attn: str = "sdpa", dtype: torch.dtype = torch.float32, seed: int = 0
) -> torch.nn.Module:
    """Deterministic tiny random causal LM in eval mode, so every test sees identical weights."""
    config = TINY_CONFIGS[arch]()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
    return model.eval()
