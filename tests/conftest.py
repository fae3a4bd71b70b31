"""pytest configuration: deterministic seeds for every test."""

import importlib.util

import pytest
import torch

if importlib.util.find_spec("torchvision") is not None:
    # a torchvision whose C++ operators do not load beside the CPU torch breaks `import
    # transformers` (which imports it); t2ir's compat import makes it importable first
    from t2ir.tools.torchvision_compat import import_torchvision

    import_torchvision()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
