"""Any causal LM transformers ships, made tiny, saved, exported with `export-llm` and checked in tract.

Shared by the test suite (a representative dozen) and bench/sweep_architectures.py (all of them):

    config = tiny_config("mixtral")                  # the config class's defaults, shrunk
    folder = save_checkpoint(config, tmp / "ckpt")   # save_pretrained: transformers' original format
    result = export_and_check(folder, tmp / "out", attn="auto", dtype="f32")

The check runs transformers' own cached loop as the reference: a prefill from an empty cache, decode
steps that feed tract's own output caches back, then a chunk of several tokens on top of the past.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch

PREFILL, DECODE_STEPS, CHUNK = 7, 3, 4
TOLERANCE = {"f32": 1e-4, "f16": 1e-2}  # f16: with f32 norm + attention, against f32 on f16-rounded weights
MAX_PARAMETERS = 20_000_000  # a shrunk config still larger would take minutes and gigabytes: not swept

# Size fields of transformers configs, made small. Any field a config class does not have is ignored;
# the class is rebuilt from the shrunk values so that derived fields are recomputed.
SMALL = dict(
    hidden_size=64, d_model=64, n_embd=64, n_embed=64, embed_dim=64, emb_dim=64, embedding_dim=64, model_dim=64,
    dim=64, attention_hidden_size=64, n_heads=4,
    rotary_dim=8, intermediate_size=96, ffn_hidden_size=96, ffn_dim=96, decoder_ffn_dim=96, encoder_ffn_dim=96, n_inner=96,
    moe_intermediate_size=32, shared_expert_intermediate_size=48, expert_hidden_size=32,
    num_attention_heads=4, n_head=4, num_heads=4, decoder_attention_heads=4, encoder_attention_heads=4,
    num_key_value_heads=2, head_dim=16, vocab_size=256, max_position_embeddings=128, n_positions=128,
    max_seq_len=128, num_local_experts=4, num_experts=4, n_routed_experts=4, moe_num_experts=4,
    num_experts_per_tok=2, num_experts_per_token=2, num_expert_group=2, moe_topk=2, top_k=2, moe_k=2, n_group=2, topk_group=1, kv_lora_rank=16, q_lora_rank=32,
    qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, sliding_window=4, attention_chunk_size=4,
    first_k_dense_replace=1, n_groups=2, conv_kernel=4, state_size=8, mamba_d_state=8, mamba_n_heads=4, mamba_d_head=16,
    mamba_d_conv=4, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
    linear_value_head_dim=16, linear_num_heads=4, linear_head_dim=16, global_head_dim=32, num_kv_shared_layers=1, hidden_size_per_layer_input=16,
    vocab_size_per_layer_input=256,
)
# A second set of sizes for a sweep that checks the results do not hang on the first one's numbers:
# a grouped-query ratio of 3, an odd vocabulary, value heads narrower than query/key heads, more
# experts picked, a sliding window inside the prompt, 3 layers.
OTHER = dict(
    SMALL, hidden_size=96, d_model=96, n_embd=96, n_embed=96, embed_dim=96, emb_dim=96, embedding_dim=96, model_dim=96,
    dim=96, attention_hidden_size=96, n_heads=6, num_attention_heads=6, n_head=6, num_heads=6,
    decoder_attention_heads=6, encoder_attention_heads=6, num_key_value_heads=2, intermediate_size=80,
    ffn_hidden_size=80, ffn_dim=80, decoder_ffn_dim=80, encoder_ffn_dim=80, n_inner=80, vocab_size=301,
    moe_intermediate_size=24, shared_expert_intermediate_size=40, expert_hidden_size=24, num_local_experts=6,
    num_experts=6, n_routed_experts=6, moe_num_experts=6, num_experts_per_tok=3, num_experts_per_token=3, num_expert_group=3, moe_topk=3, top_k=3, moe_k=3,
    n_group=3, topk_group=2, kv_lora_rank=24, q_lora_rank=40, qk_nope_head_dim=16, v_head_dim=8, sliding_window=6,
    attention_chunk_size=6, conv_kernel=3, state_size=4, mamba_d_state=4, mamba_n_heads=6, global_head_dim=48,
    vocab_size_per_layer_input=301,
)
# `T2IR_TINY_SIZES=other` makes tiny_config use OTHER (bench/sweep_architectures.py --sizes other).
SIZE_PROFILES = {"small": (SMALL, 2), "other": (OTHER, 3)}
# Fields some defaults leave unset although the model cannot run without them.
REQUIRED = ("num_experts_per_tok", "n_group", "topk_group", "vocab_size")
NUM_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers")
PER_LAYER_LISTS = ("layer_types", "layers_block_type", "hybrid_override_pattern", "block_types",
                   "attn_type_list", "mlp_layer_types", "no_rope_layers")
TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id")


def quiet() -> None:
    """transformers and torch.export log a lot for random tiny models."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)


def causal_lm_types() -> dict[str, str]:
    """model_type -> causal-LM class name, from transformers' auto mapping."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _shrunk_periods(d: dict, n: int) -> dict:
    """Layer kinds placed by a period and an offset (Jamba's attention every 8 layers from the
    4th): every other layer from the second when the kept layers would miss them."""
    out = {}
    for key, period in d.items():
        offset = d.get(key.replace("_period", "_offset"))
        if key.endswith("_period") and isinstance(period, int) and isinstance(offset, int) and offset >= n:
            out[key], out[key.replace("_period", "_offset")] = 2, 1
    return out


def _shrunk_layers(value, n: int):
    """The first n entries of a per-layer list, keeping one of each kind it holds."""
    if not isinstance(value, (list, tuple, str)) or len(value) <= n:
        return value
    kinds = list(dict.fromkeys(value))
    picked = list(value[:n])
    for i, kind in enumerate(kinds[:n]):
        if kind not in picked:
            picked[n - 1 - i] = kind
    return "".join(picked) if isinstance(value, str) else type(value)(picked)


def tiny_config(model_type: str, num_layers: int | None = None, decoder: bool = True):
    """The config class's defaults with small sizes (4 layers for hybrids so every layer kind shows);
    `decoder` turns encoder architectures into causal LMs (their decoder mode). The sizes are
    SMALL's, or those T2IR_TINY_SIZES names in SIZE_PROFILES."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return shrunk_config(CONFIG_MAPPING[model_type](), num_layers, decoder)


def shrunk_config(default, num_layers: int | None = None, decoder: bool = True):
    """`default` (a config) with tiny_config's small sizes."""
    sizes, default_layers = SIZE_PROFILES[os.environ.get("T2IR_TINY_SIZES", "small")]
    num_layers = num_layers or default_layers
    d = default.to_dict()
    kw = {k: v for k, v in sizes.items() if isinstance(d.get(k), int) and not isinstance(d.get(k), bool) and d[k] > v}
    if "head_dim" in d and d["head_dim"] is None:
        kw["head_dim"] = sizes["head_dim"]
    kw.update({k: sizes[k] for k in REQUIRED if k in d and d[k] is None})
    if "qk_rope_head_dim" in d and "head_dim" in d:  # MLA: rotary runs on head_dim = the rope part
        kw["head_dim"] = kw.get("qk_rope_head_dim", d["qk_rope_head_dim"])
    if "kv_lora_rank" in d and "num_key_value_heads" in d:  # MLA expands the latent to every head
        kw["num_key_value_heads"] = kw.get("num_attention_heads", d.get("num_attention_heads"))
    kinds = {str(x) for key in PER_LAYER_LISTS for x in (d.get(key) or []) if isinstance(d.get(key), (list, tuple, str))}
    # layers that reuse an earlier layer's cache (Gemma 3n) come on top of one producer of each kind
    shared = sizes["num_kv_shared_layers"] if isinstance(d.get("num_kv_shared_layers"), int) and d["num_kv_shared_layers"] else 0
    layers = max(num_layers, min(len(kinds), 4) + shared)
    # layers a head reads by index (BEiT's and DPT's out_indices) are kept
    read = [i for key, v in d.items() if key.endswith("out_indices") and isinstance(v, (list, tuple))
            for i in v if isinstance(i, int)]
    layers = max([layers, *(i + 1 for i in read)])
    for key in NUM_LAYERS:
        if isinstance(d.get(key), int) and d[key] > layers:
            kw[key] = layers
    for key in PER_LAYER_LISTS:
        if key in d:
            kw[key] = _shrunk_layers(d[key], layers)
    kw.update(_shrunk_periods(d, layers))
    vocab = kw.get("vocab_size", d.get("vocab_size"))
    for i, key in enumerate(TOKEN_IDS):
        if isinstance(d.get(key), int) and vocab and d[key] >= vocab:
            kw[key] = vocab - 1 - i
    config = _first_that_builds(type(default), d, kw)
    if decoder and getattr(config, "is_decoder", None) is False:
        config.is_decoder = True  # encoder architectures serve as causal LMs in decoder mode
    return config


def tiny_vision_language_config(model_type: str):
    """A vision-language config (LLaVA, PaliGemma, ...) whose text config is tiny_config's for its
    text model type and whose vision tower is one small layer."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    default = CONFIG_MAPPING[model_type]()
    text = tiny_config(default.get_text_config(decoder=True).model_type)
    rope = dict(getattr(text, "rope_parameters", None) or {})
    if "mrope_section" in rope or "mrope_section" in getattr(type(text), "ignore_keys_at_rope_validation", ()):
        # rotary frequencies in sections (temporal, height, width) that fill half the head size
        half = (getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads) // 2
        rope["mrope_section"] = [half - 2 * (half // 4), half // 4, half // 4]
        text.rope_parameters = rope
    config = type(default)(text_config=text.to_dict())
    vision = getattr(config, "vision_config", None)
    small = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                 patch_size=14)
    for key, value in small.items():
        if vision is not None and hasattr(vision, key):
            setattr(vision, key, value)
    return config


def _first_that_builds(config_class, d: dict, kw: dict):
    """The config with the shrunk sizes; when the class's validation refuses them (Bamba: mamba
    heads x head size must be expand x hidden size), the first that builds of: the shrunk sizes
    less one (it takes its default, or the value the class derives for it), then with one of them
    halved or doubled (Mamba-2: hidden size x expand = heads x head size)."""
    try:
        return _built(config_class, d, kw)
    except Exception as error:
        sizes = [key for key in kw if key in SMALL]
        candidates = [{k: v for k, v in kw.items() if k != key} for key in sizes]
        candidates += [{**kw, key: kw[key] * factor} for factor in (0.5, 2) for key in sizes if kw[key] % 2 == 0]
        for candidate in candidates:
            try:
                return _built(config_class, d, {k: int(v) if isinstance(v, float) else v for k, v in candidate.items()})
            except Exception:
                continue
        raise error


def _built(config_class, d: dict, kw: dict):
    skip = {"transformers_version", "model_type", "architectures"} | _derived_fields(config_class, d, kw)
    try:
        return config_class(**{**{k: v for k, v in d.items() if k not in skip}, **kw})
    except Exception:
        return config_class(**{k: v for k, v in kw.items() if k not in PER_LAYER_LISTS})


def _derived_fields(config_class, d: dict, kw: dict) -> set[str]:
    """Fields the config class computes from the sizes (Zamba2's attention_head_dim, Bamba's
    mamba_d_head, MLA's qk_head_dim): those that change when the class is given the shrunk sizes
    alone. Passing on the default's value would keep a number made for the full-size model.
    Nested settings (rope parameters, per-layer overrides) stay the default's."""
    for given in (kw, {k: v for k, v in kw.items() if k not in PER_LAYER_LISTS}):
        try:
            probe = config_class(**given).to_dict()
            break
        except Exception:
            continue
    else:
        return set()
    try:  # the class's own defaults: a sub-config's values set by its parent (DETR's backbone name) are not derived
        base = config_class().to_dict()
    except Exception:
        base = d
    return {k for k, v in probe.items() if k in d and k not in kw and v != base.get(k, d[k]) and not isinstance(v, dict)}


def build_model(config, attn: str = "auto", seed: int = 0, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    kwargs = {} if attn == "auto" else {"attn_implementation": attn}
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    randomize_zero_init(model, seed)
    return model.eval()


class TooLarge(Exception):
    pass


def build_random_eager(make, config, max_parameters: int = MAX_PARAMETERS) -> torch.nn.Module:
    """`make(config, **kwargs)` (a `from_config`) in eager attention with random weights, none of
    them all zero; TooLarge when the shrunk config still has sizes the shrinking does not reach
    (counted on meta, before anything is allocated)."""
    with torch.device("meta"):
        size = sum(p.numel() for p in make(config).parameters())
    if size > max_parameters:
        raise TooLarge(f"the shrunk config still has {size / 1e6:.0f} M parameters (sizes it does not shrink)")
    torch.manual_seed(0)
    model = make(config, attn_implementation="eager").eval()
    randomize_zero_init(model, 0)
    return model


def randomize_zero_init(model: torch.nn.Module, seed: int) -> None:
    """Some weights start at zero (router biases, gates of zero-initialised branches) and would hide
    whole code paths from the check: give every all-zero float parameter small random values."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def save_checkpoint(config, folder: Path, seed: int = 0) -> Path:
    """A random tiny model saved by save_pretrained (its default, transformers' original format)."""
    model = build_model(config, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    return folder


@dataclass
class CheckResult:
    logits_diff: float
    cache_diff: float
    steps: int

    @property
    def max_diff(self) -> float:
        return max(self.logits_diff, self.cache_diff)


def export(folder: Path, out: Path, *, attn: str = "auto", dtype: str = "f32", **options):
    from t2ir.llm.exporter import export_llm
    from t2ir.options import LLMExportOptions

    f16 = dtype != "f32"
    opts = LLMExportOptions(model_dir=folder, out_dir=out, dtype=dtype, attn_implementation=attn, tests=False,
                            f32_norm=f16, f32_attn=f16, overwrite=True, **options)
    return export_llm(opts)


def reference_model(folder: Path, attn: str, dtype: str):
    """transformers' own load of the checkpoint; f16 exports are compared in f32 on f16-rounded weights."""
    from transformers import AutoModelForCausalLM

    kwargs = {} if attn == "auto" else {"attn_implementation": attn}
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    if dtype != "f32":
        model = model.to(torch.float16).float()
    return model


def _reference_step(reference, ids: torch.Tensor, cache, cached: bool, past_length: int):
    """transformers' logits for `ids` after the cached past, given the positions its generate
    passes (P .. P + S - 1 to a decoder that takes position_ids, as the model's
    prepare_inputs_for_generation shifts them). A chunk on a recurrent state runs
    one token at a time: transformers' PyTorch sequence path for state-space layers (Mamba's)
    starts from a zero state whatever the cache holds, its one-token step reads the state."""
    if not cached:
        return reference(input_ids=ids).logits
    takes_positions = ("position_ids" in inspect.signature(reference.forward).parameters
                       and not getattr(reference.config, "is_encoder_decoder", False))

    def step(chunk: torch.Tensor, start: int) -> torch.Tensor:
        positions = {}
        if takes_positions:  # as generate computes them, then prepares them for this model (PaliGemma: + 1)
            given = torch.arange(start, start + chunk.shape[1])[None]
            positions["position_ids"] = reference.prepare_inputs_for_generation(chunk, position_ids=given)["position_ids"]
        return reference(input_ids=chunk, cache=cache, use_cache=True, **positions).logits

    recurrent = any(getattr(layer, "is_recurrent_states_initialized", {}).get(0) for layer in cache.layers)
    if ids.shape[1] == 1 or not recurrent:
        return step(ids, past_length)
    return torch.cat([step(ids[:, i:i + 1], past_length + i) for i in range(ids.shape[1])], dim=1)


def check_in_tract(model_path: Path, reference, dtype: str = "f32", chunk: bool = True) -> CheckResult:
    """Prefill, DECODE_STEPS greedy steps feeding tract's caches back, then (with `chunk`) a CHUNK
    on top of the past."""
    from transformers import DynamicCache

    from t2ir.tract_run import io_facts, load_model, run_tract

    tract_model = load_model(model_path)
    inputs, _ = io_facts(tract_model)
    runnable = tract_model.into_runnable()
    np_dtype = np.float16 if dtype != "f32" else np.float32
    past = [np.zeros([0 if isinstance(d, str) else d for d in f.dims], np_dtype) for f in inputs[1:]]
    vocab = reference.config.get_text_config(decoder=True).vocab_size
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (1, PREFILL), generator=gen)
    cache = DynamicCache(config=reference.config)
    logits_diff = cache_diff = 0.0
    steps = past_length = 0
    cached = len(inputs) > 1  # a model without a cache reads the whole sequence at each step
    for step in range(1 + DECODE_STEPS + chunk):
        with torch.no_grad():
            logits = _reference_step(reference, ids, cache, cached, past_length)
        past_length += ids.shape[1]
        got = run_tract(runnable, [ids.numpy(), *past])
        want = logits[:, -got[0].shape[1]:].float().numpy()
        if got[0].shape != want.shape:
            raise AssertionError(f"tract logits {got[0].shape} vs transformers {want.shape}")
        logits_diff = max(logits_diff, float(np.abs(got[0].astype(np.float64) - want).max()))
        cache_diff = max(cache_diff, _cache_diff(got[1:], inputs[1:], cache))
        past = got[1:]
        steps += 1
        new = logits[:, -1:].argmax(-1)
        if step == DECODE_STEPS:
            new = torch.cat([new, torch.randint(3, vocab, (1, CHUNK - 1), generator=gen)], 1)
        ids = new if cached else torch.cat([ids, new], 1)
    return CheckResult(logits_diff, cache_diff, steps)


def _cache_diff(got: list[np.ndarray], facts, cache) -> float:
    """Max difference of tract's caches with transformers' on the positions the reference keeps,
    for the layers whose reference cache is plain keys/values of the same layout."""
    layers = getattr(cache, "layers", None) or []
    worst = 0.0
    for out, fact in zip(got, facts):
        kind, index = re.fullmatch(r"out_cache_(\w+)_(\d+)", fact.name.replace("in_cache_", "out_cache_")).groups()
        layer = layers[int(index)] if int(index) < len(layers) else None
        if kind not in ("key", "value"):  # a state of the same shape as transformers': a convolution
            # or recurrent state (per slot), or another growing state (DSA's indexer keys), an attribute
            slotted = re.fullmatch(r"(conv|recurrent)(\d*)", kind)
            ref = (getattr(layer, f"{slotted[1]}_states", None) or {}).get(int(slotted[2] or 0)) if slotted \
                else getattr(layer, kind, None)
            if isinstance(ref, torch.Tensor) and tuple(ref.shape) == out.shape:
                worst = max(worst, float(np.abs(out.astype(np.float64) - ref.float().numpy()).max()))
            continue
        ref = getattr(layer, "keys" if kind == "key" else "values", None)
        if not isinstance(ref, torch.Tensor) or ref.dim() != 4 or ref.shape[1] != out.shape[1] \
                or ref.shape[3] != out.shape[3] or ref.shape[2] > out.shape[2]:
            continue
        tail = out[:, :, out.shape[2] - ref.shape[2]:].astype(np.float64)
        worst = max(worst, float(np.abs(tail - ref.float().numpy()).max()))
    return worst
