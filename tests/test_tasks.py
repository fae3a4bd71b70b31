"""Image and audio models of transformers' task mappings (tests/tasks.py; the whole sweep is
bench/sweep_tasks.py, docs/tasks.md): built tiny from their config classes, exported with the
batch (and audio's time axis) dynamic, and run in tract at two sizes against PyTorch eager. The
types here are ones that once failed: Conformer's relative-position shift, Swin's three heads
per stage, and the spectrogram transformer's filter-bank input (DPT's readout projection, slower
to run, is an operator case: tests/op_cases.py, `readout_projection`)."""

from __future__ import annotations

import pytest

from tasks import TOLERANCE, build_task_model, export_and_check


@pytest.mark.parametrize("name", ["ctc/wav2vec2-conformer", "image-classification/swin",
                                  "audio-classification/audio-spectrogram-transformer"])
def test_task_model_matches_pytorch_in_tract(name, tmp_path):
    task, model_type = name.split("/")
    model, example = build_task_model(task, model_type)
    assert export_and_check(model, example, tmp_path / "model") <= TOLERANCE
