"""A vision-language checkpoint exported by `export-llm` through its text path: token ids in,
logits out, what the composite computes for a prompt without images (t2ir.llm.vision_language)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from architectures import TOLERANCE, check_in_tract, export, quiet, tiny_vision_language_config  # noqa: E402

quiet()


def _saved(model_type: str, folder: Path) -> Path:
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(tiny_vision_language_config(model_type)).save_pretrained(folder)
    return folder


def _reference(folder: Path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder).eval()


@pytest.mark.parametrize("model_type", ["llava", "qwen2_5_vl"])
def test_text_path_matches_the_composite(tmp_path, model_type):
    """LLaVA (a Llama decoder under the composite's names) and Qwen2.5-VL (whose decoder has no
    causal-LM class of its own, with rotary sections over 3-D positions): prefill, decode steps
    and a chunk on a past match the composite in tract, and the reference cases t2ir writes pass."""
    folder = _saved(model_type, tmp_path / "ckpt")
    summary = export(folder, tmp_path / "out", check_io="approximate")
    assert summary.check_passed
    result = check_in_tract(summary.out_dir / "model" / "model.nnef.tgz", _reference(folder))
    assert result.max_diff <= TOLERANCE["f32"], (result.logits_diff, result.cache_diff)


def test_paligemma_decoder_generates_what_the_composite_generates(tmp_path):
    """PaliGemma numbers positions from 1 (its prepare_inputs_for_generation adds one) and its
    decoder attends both ways over the prompt: a prefill and decode steps match the composite
    (logits and caches, whose keys carry the absolute positions), and the tract graph's greedy
    tokens are the composite's `generate`. (A chunk of several tokens on a past is left out:
    transformers masks it causally there, the graph attends both ways within it.)"""
    from t2ir.llm.generate import TractGenerator

    folder = _saved("paligemma", tmp_path / "ckpt")
    summary = export(folder, tmp_path / "out")
    result = check_in_tract(summary.out_dir / "model" / "model.nnef.tgz", _reference(folder), chunk=False)
    assert result.max_diff <= TOLERANCE["f32"], (result.logits_diff, result.cache_diff)
    prompt = [5, 17, 42, 9, 33]
    got = list(TractGenerator(summary.out_dir).tokens(prompt, 5))
    with torch.no_grad():
        want = _reference(folder).generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False)
    assert got == want[0, len(prompt):].tolist()
