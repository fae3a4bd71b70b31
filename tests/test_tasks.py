"""Image and audio models of transformers' task mappings (tests/tasks.py; the whole sweep is
bench/sweep_tasks.py, docs/tasks.md): built tiny from their config classes, exported with the
batch (and audio's time axis) dynamic, and run in tract at two sizes against PyTorch eager. The
types here are ones that once failed: Conformer's relative-position shift, Swin's three heads
per stage, and the spectrogram transformer's filter-bank input (DPT's readout projection, slower
to run, is an operator case: tests/op_cases.py, `readout_projection`)."""

from __future__ import annotations

import pytest
import torch

from tasks import TOLERANCE, build_task_model, export_and_check, tied_topk


@pytest.mark.parametrize("name", ["ctc/wav2vec2-conformer", "image-classification/swin",
                                  "audio-classification/audio-spectrogram-transformer"])
def test_task_model_matches_pytorch_in_tract(name, tmp_path):
    task, model_type = name.split("/")
    model, example = build_task_model(task, model_type)
    assert export_and_check(model, example, tmp_path / "model") <= TOLERANCE


def test_a_top_k_whose_choice_among_equal_values_is_arbitrary_is_noticed():
    """RT-DETR's query selection picks 300 of 2100 anchors whose random-weight scores are mostly
    equal; a difference after such a top-k is reported as that, not as a conversion error."""
    found, plain, method = [], torch.topk, torch.Tensor.topk
    with tied_topk(found):
        torch.topk(torch.tensor([[3.0, 1.0, 2.0]]), 2)
        torch.tensor([0.5, -1.0, 2.0, 0.0]).topk(2, largest=False)
    assert found == []
    with tied_topk(found):
        torch.tensor([[1.0, 2.0, 2.0, 0.0]]).topk(1, dim=1)
    assert len(found) == 1 and "1 values outside equal to the k-th" in found[0]
    assert torch.topk is plain and torch.Tensor.topk is method  # restored
