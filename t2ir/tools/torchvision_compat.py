"""Import torchvision next to a CPU-only torch whose build its C++ operators do not match.

PyPI's torchvision 0.28 (the release paired with torch 2.13) is a CUDA build: its `_C` library
cannot load beside the CPU torch wheel, and `import torchvision` then fails where it registers
fake kernels for `torchvision::nms` and `torchvision::qnms`, which only that library defines.
Defining the two schemas first lets torchvision import; its models are plain PyTorch, and only
the detection post-processing (nms, roi_align) needs the missing kernels."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path


@functools.lru_cache(maxsize=None)
def import_torchvision():
    """`torchvision`, importable whether or not its C++ operators load."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        raise ImportError("torchvision is not installed (pip install 't2ir[vision]')")
    ops_loaded = False
    for lib in Path(spec.origin).parent.glob("_C*.so"):
        try:
            torch.ops.load_library(str(lib))
            ops_loaded = True
        except OSError:
            pass
    if not ops_loaded:
        lib = torch.library.Library("torchvision", "FRAGMENT")  # kept alive by the lru_cache
        for op in ("nms", "qnms"):
            if not hasattr(torch.ops.torchvision, op):
                lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_torchvision.library = lib
    import torchvision

    return torchvision
