"""Decoder layers traced once and stamped: the same graph as tracing every layer, checked in tract
against transformers, and a fall back to tracing every layer when layers differ by position."""

from __future__ import annotations

import collections
import logging
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(__file__))

from llm_models import TINY_CONFIGS  # noqa: E402
from test_llm_export import F32_ATOL, compare_with_transformers, export_llm  # noqa: E402
from t2ir.frontend.causal_lm import StampingWarning, lift_causal_lm  # noqa: E402
from t2ir.frontend.layer_stamping import plan_layers  # noqa: E402

LAYERS = 8


def deep_model(arch: str) -> torch.nn.Module:
    config = TINY_CONFIGS[arch]()
    config.num_hidden_layers = LAYERS
    for name in ("layer_types", "no_rope_layers"):  # per-layer lists follow the depth
        value = getattr(config, name, None)
        if isinstance(value, list):
            setattr(config, name, [value[i % len(value)] for i in range(LAYERS)])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def op_counts(graph) -> collections.Counter:
    return collections.Counter(n.op for n in graph.nodes)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "smollm3", "gpt2"])
def test_stamped_graph_is_the_fully_traced_one(arch, tmp_path: Path):
    model = deep_model(arch)
    plan = plan_layers(model, model.config.get_text_config(decoder=True))
    assert plan is not None and plan.copies, "nothing to stamp"
    logging.disable(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StampingWarning)
        stamped = lift_causal_lm(model)
    full = lift_causal_lm(model, every_layer=True)
    assert op_counts(stamped) == op_counts(full)
    assert [v.name for v in stamped.inputs] == [v.name for v in full.inputs]
    assert [(v.name, str(v.type)) for v in stamped.outputs] == [(v.name, str(v.type)) for v in full.outputs]
    assert sorted(c.const.label for c in stamped.consts) == sorted(c.const.label for c in full.consts)
    exp = export_llm(model, tmp_path)  # the stamped export, through the whole pipeline, in tract
    logits_diff, cache_diff = compare_with_transformers(exp)
    assert logits_diff <= F32_ATOL and cache_diff <= F32_ATOL, (logits_diff, cache_diff)


def test_a_layer_that_differs_by_position_falls_back_to_tracing_every_layer(tmp_path: Path):
    model = deep_model("llama")
    last = model.model.layers[-1]
    plain_forward = last.forward

    def doubled(*args, **kwargs):  # only the last layer does this: its position, not its structure
        out = plain_forward(*args, **kwargs)
        return out * 2 if isinstance(out, torch.Tensor) else (out[0] * 2, *out[1:])

    last.forward = doubled
    with pytest.warns(StampingWarning, match="trace differently"):
        exp = export_llm(model, tmp_path)
    logits_diff, cache_diff = compare_with_transformers(exp)
    assert logits_diff <= F32_ATOL and cache_diff <= F32_ATOL, (logits_diff, cache_diff)
