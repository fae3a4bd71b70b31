"""A handful of the swept models (docs/models.md), exported with a dynamic batch (and image size
where the model allows it) and checked in tract at two sizes against PyTorch eager. They need
the `vision` extra (torchvision, timm)."""

from __future__ import annotations

import importlib.util

import pytest

from t2ir.tools.model_sweep import ModelSpec, run_one

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None or importlib.util.find_spec("timm") is None,
    reason="needs the vision extra: pip install 't2ir[vision]'")]

MODELS = [
    ModelSpec("torchvision", "classification", "resnet18", (1, 3, 96, 96), (2, 3)),
    ModelSpec("torchvision", "classification", "mobilenet_v3_small", (1, 3, 96, 96), (2, 3)),
    ModelSpec("torchvision", "segmentation", "lraspp_mobilenet_v3_large", (1, 3, 96, 96), (2, 3)),
    ModelSpec("torchvision", "detection-backbone", "fasterrcnn_mobilenet_v3_large_fpn", (1, 3, 128, 128), (2, 3)),
    ModelSpec("torchvision", "video", "r3d_18", (1, 3, 4, 56, 56), (2, 3, 4)),
    ModelSpec("timm", "timm", "vit_tiny_patch16_224", (1, 3, 224, 224), (2, 3)),
]


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.name)
def test_model(spec, tmp_path):
    result = run_one(spec, tmp_path)
    assert result.status == "passed", result.reason
    assert "batch" in result.dynamic and len(result.sizes) == 2
