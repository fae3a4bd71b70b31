"""A handful of the swept models (docs/models.md), exported with a dynamic batch (and image size
where the model allows it) and checked in tract at two sizes against PyTorch eager.

They need torchvision and timm, which stay out of the main environment (PyPI's torchvision is a
CUDA build that breaks `import transformers` beside the CPU torch): `.ci/run` and the README
install them into `.vision/` (`pip install --no-deps --target .vision -c constraints.txt
torchvision timm`), and each model runs in its own process with that folder on its path, as the
sweep does."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from t2ir.tools.model_sweep import ModelSpec, sweep_model

VISION = Path(__file__).resolve().parents[1] / ".vision"


def _vision_env() -> dict | None:
    """The environment a model process needs to import torchvision and timm (None: not installed)."""
    if all(importlib.util.find_spec(m) is not None for m in ("torchvision", "timm")):
        return dict(os.environ)
    if (VISION / "torchvision").is_dir() and (VISION / "timm").is_dir():
        return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(VISION), os.environ.get("PYTHONPATH")]))}
    return None


ENV = _vision_env()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    ENV is None, reason="needs torchvision and timm: pip install --no-deps --target .vision -c constraints.txt "
                        "torchvision timm")]

MODELS = [
    ModelSpec("torchvision", "classification", "resnet18", (1, 3, 96, 96), (2, 3)),
    ModelSpec("torchvision", "classification", "mobilenet_v3_small", (1, 3, 96, 96), (2, 3)),
    ModelSpec("torchvision", "segmentation", "lraspp_mobilenet_v3_large", (1, 3, 96, 96), (2, 3)),
    ModelSpec("torchvision", "detection-backbone", "fasterrcnn_mobilenet_v3_large_fpn", (1, 3, 128, 128), (2, 3)),
    ModelSpec("torchvision", "video", "r3d_18", (1, 3, 4, 56, 56), (2, 3, 4)),
    ModelSpec("timm", "timm", "vit_tiny_patch16_224", (1, 3, 224, 224), (2, 3)),
]


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.name)
def test_model(spec, monkeypatch):
    """As the sweep runs it: a dynamic image size first, the batch only when that fails."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    result = sweep_model(spec, timeout=600, spatial_seconds=300)
    assert result["status"] == "passed", result["reason"]
    assert "batch" in result["dynamic"] and len(result["sizes"]) == 2
