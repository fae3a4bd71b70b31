"""Checkpoint tensors -> model parameters the way transformers' from_pretrained maps them
(t2ir.llm.weight_map), checked tensor by tensor against from_pretrained itself."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))

from architectures import quiet, save_checkpoint, tiny_config  # noqa: E402
from t2ir.errors import T2IRError  # noqa: E402
from t2ir.frontend.causal_lm import build_meta_model  # noqa: E402
from t2ir.llm.checkpoint import load_config, open_checkpoint  # noqa: E402
from t2ir.llm.weight_map import WeightMap  # noqa: E402

quiet()

CONVERSIONS = [
    "mixtral",     # per-expert w1/w3/w2 stacked (MergeModulelist, Concatenate), block_sparse_moe renamed mlp
    "gpt_neox",    # embed_out renamed lm_head
    "sarvam_moe",  # fused query_key_value split into q/k/v (Split), experts stacked
    "granitemoe",  # input_linear/output_linear renamed gate_up_proj/down_proj
    "qwen2",       # nothing to convert (the module's names), tied lm_head
]


def _weight_map(folder):
    ckpt = open_checkpoint(folder)
    return WeightMap(build_meta_model(load_config(ckpt)), ckpt)


@pytest.mark.parametrize("model_type", CONVERSIONS)
def test_every_parameter_equals_from_pretrained(tmp_path, model_type):
    from transformers import AutoModelForCausalLM

    folder = save_checkpoint(tiny_config(model_type), tmp_path / "ckpt")
    weights = _weight_map(folder)
    reference = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    meta = weights.model.state_dict()
    for name, tensor in meta.items():
        if name not in weights.sources:  # buffers computed by the model, not stored
            assert name not in {k for k, _ in weights.model.named_parameters()}, name
            continue
        assert torch.equal(weights.source(name).load(), reference[name]), name
    assert not weights.unused


def test_converted_source_says_what_it_does(tmp_path):
    weights = _weight_map(save_checkpoint(tiny_config("mixtral"), tmp_path / "ckpt"))
    described = weights.source("model.layers.0.mlp.experts.gate_up_proj").describe()
    assert "MergeModulelist" in described and "experts.0.w1.weight" in described


def test_missing_tensor_is_named(tmp_path):
    folder = save_checkpoint(tiny_config("gpt_neox"), tmp_path / "ckpt")
    tensors = load_file(folder / "model.safetensors")
    del tensors["embed_out.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    weights = _weight_map(folder)
    with pytest.raises(T2IRError, match="'lm_head.weight' is missing from the checkpoint"):
        weights.source("lm_head.weight")


def test_conversion_that_cannot_build_names_tensor_and_conversion(tmp_path):
    folder = save_checkpoint(tiny_config("mixtral"), tmp_path / "ckpt")
    tensors = load_file(folder / "model.safetensors")
    key = "model.layers.0.block_sparse_moe.experts.1.w1.weight"
    tensors[key] = tensors[key][:, :-1].contiguous()  # one column short: stacking fails
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(T2IRError) as err:
        _weight_map(folder).source("model.layers.0.mlp.experts.gate_up_proj").load()
    message = str(err.value)
    assert "model.layers.0.mlp.experts.gate_up_proj" in message and "MergeModulelist" in message
