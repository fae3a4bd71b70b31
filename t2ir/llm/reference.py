"""PyTorch reference outputs without holding every weight: each module's own parameters are read
from the checkpoint just before it runs and dropped right after (peak: one module's weights)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch

from t2ir.errors import T2IRError
from t2ir.llm.weight_map import WeightMap


@contextlib.contextmanager
def streamed_weights(model: torch.nn.Module, weights: WeightMap, dtype: torch.dtype,
                     transform: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None) -> Iterator[None]:
    """Make a meta-device model runnable by loading weights module by module during forward.
    `transform(name, tensor)` may replace a weight (e.g. by its dequantized packed form)."""
    names = weights.by_tensor()
    handles = []

    def own_meta(module):
        stores = [module._parameters, module._buffers]
        return [(store, n, t) for store in stores for n, t in store.items() if t is not None and t.is_meta]

    def load(module, _args):
        saved = []
        for store, n, t in own_meta(module):
            key = names.get(id(t))
            if key is None:
                raise T2IRError(f"weight {type(module).__name__}.{n} is not in the checkpoint")
            value = weights.source(key).load()
            if transform is not None:
                value = transform(key, value)
            value = value.to(dtype) if value.is_floating_point() else value
            store[n] = torch.nn.Parameter(value, requires_grad=False) if store is module._parameters else value
            saved.append((store, n, t))
        module._t2ir_saved = saved

    def drop(module, _args, _out):
        for store, n, t in getattr(module, "_t2ir_saved", []):
            store[n] = t
        module._t2ir_saved = []

    for module in model.modules():
        if own_meta(module):
            handles.append(module.register_forward_pre_hook(load))
            handles.append(module.register_forward_hook(drop))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
