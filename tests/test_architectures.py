"""A representative dozen of transformers' causal LMs through `export-llm` as a user runs it: a
tiny random model saved by save_pretrained (transformers' original checkpoint format), exported
with the default attention, and run in tract against transformers' own cached loop (prefill from
an empty cache, decode steps feeding tract's caches back, a chunk with past).

bench/sweep_architectures.py runs the same check on every model type (docs/architectures.md).
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from architectures import TOLERANCE, check_in_tract, export, quiet, reference_model, save_checkpoint, tiny_config  # noqa: E402
from t2ir.frontend.cache_layout import RecurrentStateError  # noqa: E402

quiet()

# what each one stands for
DOZEN = {
    "mixtral": "MoE fused into tract_moe_ffn (softmax, renormalised top-k); per-expert checkpoint keys stacked",
    "qwen2_moe": "MoE with a sigmoid-gated shared expert, top-k without renormalisation",
    "gpt_oss": "MoE with router and expert biases, interleaved clamped gate; eager-only, attention sinks",
    "gpt_bigcode": "multi-query attention: one key/value head",
    "bloom": "ALiBi in merged-heads eager attention (baddbmm), eager-only",
    "falcon": "in-place ops in the model code, fused qkv",
    "gpt_neox": "checkpoint head renamed (embed_out -> lm_head), partial rotary",
    "gemma2": "eager-only: attention and final logit soft-capping, sliding layers",
    "gemma3_text": "sliding-window layers shorter than the sequence, per-layer rope",
    "granitemoe": "MoE whose checkpoint names its experts input_linear/output_linear (renamed on load)",
    "cohere2": "sliding and full layers, parallel attention/MLP block",
    "olmoe": "MoE with q/k norms, top-k without renormalisation",
    "ernie4_5_moe": "MoE whose routing tract has no gate for: the model's choice handed to tract_moe_ffn",
    "openai-gpt": "no KV cache at all: a graph of the whole sequence; its position bound tightened past a guard",
    "llama4_text": "complex-number rotary carried as real pairs; a size guard torch cannot prove, checked on sizes",
    "lfm3": "short-convolution layers: their fixed-size states carried as graph IO beside the key/value caches",
    "modernbert-decoder": "get_decoder() returns a Linear (transformers' guess), not the decoder with its config",
}
SLOW = {"gpt_oss", "olmoe", "llama4_text"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("architectures")
    made: dict[str, Path] = {}

    def get(model_type: str) -> Path:
        if model_type not in made:
            made[model_type] = save_checkpoint(tiny_config(model_type), root / model_type / "checkpoint")
        return made[model_type]

    return get


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


@pytest.mark.parametrize("model_type", _params(DOZEN))
def test_export_matches_transformers(checkpoints, tmp_path, model_type):
    folder = checkpoints(model_type)
    summary = export(folder, tmp_path / "out")
    result = check_in_tract(summary.out_dir / "model" / "model.nnef.tgz", reference_model(folder, "auto", "f32"))
    assert result.max_diff <= TOLERANCE["f32"], (result.logits_diff, result.cache_diff)
    ops = summary.ops_after
    assert ops.get("tract_transformers.sdpa", 0) + ops.get("nnef.softmax", 0) > 0  # attention was fused or decomposed
    if model_type in ("mixtral", "qwen2_moe", "gpt_oss", "granitemoe", "olmoe", "ernie4_5_moe"):
        assert ops.get("tract_transformers.moe_ffn", 0) > 0, ops


@pytest.mark.parametrize("model_type", ["mixtral", "bloom"])
def test_f16_with_f32_norm_and_attention(checkpoints, tmp_path, model_type):
    folder = checkpoints(model_type)
    summary = export(folder, tmp_path / "out", dtype="f16")
    result = check_in_tract(summary.out_dir / "model" / "model.nnef.tgz", reference_model(folder, "auto", "f16"), "f16")
    assert result.max_diff <= TOLERANCE["f16"], (result.logits_diff, result.cache_diff)


def test_alibi_is_the_sdpa_mask(checkpoints, tmp_path):
    """Bloom's ALiBi bias and causal mask become the float mask of the fused attention, layer by
    layer, in both of its forms: tract's sdpa operator and matmuls + softmax (the check above runs
    the default form in prefill, decode and chunked steps; this export is checked in tract too)."""
    layers = tiny_config("bloom").n_layer
    summary = export(checkpoints("bloom"), tmp_path / "out", attention="sdpa", check_io="approximate")
    assert summary.check_passed, [(c.case, c.output, c.max_abs_diff) for c in summary.checks if not c.passed]
    passes = {p["name"]: p["stats"] for p in json.loads((summary.out_dir / "manifest.json").read_text())["passes"]}
    assert passes["fuse-attention"] == {"eager": layers, "masked": layers}
    assert summary.ops_after.get("tract_transformers.sdpa") == layers and "nnef.softmax" not in summary.ops_after


@pytest.mark.parametrize("model_type", ["mixtral", "ernie4_5_moe"])
def test_q4_0_packs_expert_weights(checkpoints, tmp_path, model_type):
    """Q4_0 covers the expert stacks (tract_moe_ffn's linear layout, padded for the model's own
    routing in ernie) and the report lists them; the check compares with transformers on the
    dequantized weights."""
    summary = export(checkpoints(model_type), tmp_path / "out", compression="q4_0", check_io="approximate")
    assert summary.check_passed, [(c.case, c.output, c.max_abs_diff) for c in summary.checks if not c.passed]
    experts = [e for e in summary.quant_report.tensors if ".mlp.experts." in e.name]
    config = tiny_config(model_type)
    num_experts = getattr(config, "num_local_experts", None) or config.moe_num_experts
    assert len(experts) >= 3 and all(e.status == "packed" and e.encoding == "q4_0" for e in experts), experts
    assert all(len(e.shape) == 3 and e.shape[0] == num_experts for e in experts)
    text = io.StringIO()
    summary.quant_report.print(text)
    assert "experts.gate_up_proj.gate" in text.getvalue()


def test_multi_query_cache_has_one_head(checkpoints, tmp_path):
    from t2ir.tract_run import io_facts, load_model

    summary = export(checkpoints("gpt_bigcode"), tmp_path / "out")
    inputs, outputs = io_facts(load_model(summary.out_dir / "model" / "model.nnef.tgz"))
    assert [f.name for f in inputs][:3] == ["input_ids", "in_cache_key_0", "in_cache_value_0"]
    assert all(f.dims[1] == 1 for f in inputs[1:])
    assert [f.name for f in outputs][:2] == ["outputs", "out_cache_key_0"]


def test_generate_without_a_cache_reads_the_whole_sequence(checkpoints, tmp_path):
    """A model with no cache (GPT-1) has input_ids as its only input; `generate` feeds the whole
    sequence at each step and picks the tokens transformers' greedy search picks."""
    import torch

    from t2ir.llm.generate import TractGenerator
    from t2ir.tract_run import io_facts, load_model

    folder = checkpoints("openai-gpt")
    summary = export(folder, tmp_path / "out")
    inputs, _ = io_facts(load_model(summary.out_dir / "model" / "model.nnef.tgz"))
    assert [f.name for f in inputs] == ["input_ids"]
    prompt = [5, 17, 42, 9]
    got = list(TractGenerator(summary.out_dir).tokens(prompt, 5))
    reference = reference_model(folder, "auto", "f32")
    ids = torch.tensor([prompt])
    for _ in range(5):
        with torch.no_grad():
            ids = torch.cat([ids, reference(input_ids=ids).logits[:, -1:].argmax(-1)], 1)
    assert got == ids[0, len(prompt):].tolist()
    from t2ir.llm.bench import bench

    (tg,) = bench(summary.out_dir, prompt_sizes=(), gen_sizes=(3,), repetitions=1)
    assert tg.test == "tg3" and all(s > 0 for s in tg.seconds)


def test_state_space_model_gets_one_error_line(tmp_path):
    """A recurrent state t2ir cannot scan from (ZAYA's, computed in the model's own code rather
    than through a transformers kernel hook) is refused with what is missing."""
    folder = save_checkpoint(tiny_config("zaya"), tmp_path / "zaya")
    with pytest.raises(RecurrentStateError) as err:
        export(folder, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and "selective_scan_fn" in message


# Bamba's default config has Mamba layers only, on which transformers' own cache fails: one attention layer
@pytest.mark.parametrize("model_type, overrides", [("jamba", {}), ("qwen3_next", {}), ("bamba", {"attn_layer_indices": [1]})])
def test_recurrent_states_scan_from_the_carried_state(tmp_path, model_type, overrides):
    """Mamba's selective scan (in Jamba, beside attention and MoE layers), Mamba-2's (Bamba,
    whose attention takes its positions from the position_ids generate passes: without them it
    starts at 0 on every call) and Qwen3-Next's gated delta rule run as tract scans that start
    from the recurrent state the graph takes: the
    reference cases (a prompt, then chunks and one token on its past) pass in tract, and
    prefill, decode steps and a chunk on a past match transformers (its token-by-token path for
    the chunk: its sequence path restarts Mamba's state from zeros); `generate` picks
    transformers' greedy tokens."""
    import torch

    from t2ir.llm.generate import TractGenerator
    from t2ir.tract_run import io_facts, load_model

    config = tiny_config(model_type)
    for key, value in overrides.items():
        setattr(config, key, value)
    folder = save_checkpoint(config, tmp_path / model_type)
    summary = export(folder, tmp_path / "out", check_io="approximate")
    assert summary.check_passed, [(c.case, c.output, c.max_abs_diff) for c in summary.checks if not c.passed]
    assert summary.ops_after.get("tract_core.scan", 0) > 0
    path = summary.out_dir / "model" / "model.nnef.tgz"
    inputs, outputs = io_facts(load_model(path))
    states = [f for f in inputs if f.name.startswith("in_cache_recurrent")]
    assert states and all(all(isinstance(d, int) for d in f.dims) for f in states)
    assert [f.name.replace("in_", "out_", 1) for f in inputs[1:]] == [f.name.split(".")[0] for f in outputs[1:]]
    reference = reference_model(folder, "auto", "f32")
    result = check_in_tract(path, reference)
    assert result.max_diff <= TOLERANCE["f32"], (result.logits_diff, result.cache_diff)
    prompt = [5, 17, 42, 9]
    got = list(TractGenerator(summary.out_dir).tokens(prompt, 4))
    with torch.no_grad():
        want = reference.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False)
    assert got == want[0, len(prompt):].tolist()


def test_convolution_states_through_cases_bench_and_generate(tmp_path):
    """LFM2's convolution states are fixed-size IO ([1, channels, length], no P); the reference
    cases (each past computed by running its prefix, as a state is no prefix of a longer one)
    pass in tract; `t2ir bench` steps on a past; `generate` picks transformers' greedy tokens."""
    import torch

    from t2ir.llm.bench import Bench
    from t2ir.llm.generate import TractGenerator
    from t2ir.tract_run import io_facts, load_model

    config = tiny_config("lfm2", num_layers=4)  # LFM2's own pattern: its default config has attention only
    config.layer_types = ["conv", "conv", "full_attention", "conv"]
    config.full_attn_idxs = [2]
    folder = save_checkpoint(config, tmp_path / "lfm2")
    summary = export(folder, tmp_path / "out", check_io="approximate")
    assert summary.check_passed, [(c.case, c.output, c.max_abs_diff) for c in summary.checks if not c.passed]
    inputs, outputs = io_facts(load_model(summary.out_dir / "model" / "model.nnef.tgz"))
    states = [f for f in inputs if f.name.startswith("in_cache_conv")]
    assert states and all(all(isinstance(d, int) for d in f.dims) for f in states)
    assert [f.name.replace("in_", "out_", 1) for f in inputs[1:]] == [f.name for f in outputs[1:]]
    assert Bench(summary.out_dir).step(2, 5) > 0
    prompt = [5, 17, 42, 9]
    got = list(TractGenerator(summary.out_dir).tokens(prompt, 4))
    with torch.no_grad():
        want = reference_model(folder, "auto", "f32").generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False)
    assert got == want[0, len(prompt):].tolist()


def test_sparse_attention_indexer_keys_are_carried(tmp_path):
    """DeepSeek-V3.2's sparse attention keeps indexer keys [1, P, dim] beside keys and values;
    they are graph IO that grows with P like keys. With a top-k of 3 positions (below the
    sequence), tract attends to the positions the indexer picks, as transformers does."""
    from t2ir.tract_run import io_facts, load_model

    config = tiny_config("deepseek_v32")
    config.index_topk = 3
    folder = save_checkpoint(config, tmp_path / "dsa")
    summary = export(folder, tmp_path / "out", check_io="approximate")
    assert summary.check_passed, [(c.case, c.output, c.max_abs_diff) for c in summary.checks if not c.passed]
    path = summary.out_dir / "model" / "model.nnef.tgz"
    inputs, outputs = io_facts(load_model(path))
    indexer = [f for f in inputs if f.name.startswith("in_cache_indexer_keys_")]
    assert len(indexer) == config.num_hidden_layers and all(f.dims[1] == "P" for f in indexer), inputs
    # tract's transformers registry renames the concats it takes over ("out_cache_indexer_keys_0.concat-2")
    assert [f.name.replace("in_", "out_", 1) for f in inputs[1:]] == [f.name.split(".")[0] for f in outputs[1:]]
    result = check_in_tract(path, reference_model(folder, "auto", "f32"))
    assert result.max_diff <= TOLERANCE["f32"], (result.logits_diff, result.cache_diff)
