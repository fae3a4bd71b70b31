"""PyTorch reference outputs without holding every weight: each module's own parameters are read
from the checkpoint just before it runs and dropped right after (peak: one module's weights).
A weight the model's code reads without calling its module (LFM2's `self.conv.weight`, handed to
a convolution function) is read at the op that uses it."""

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

    def loaded(key: str) -> torch.Tensor:
        value = weights.source(key).load()
        if transform is not None:
            value = transform(key, value)
        return value.to(dtype) if value.is_floating_point() else value

    def own_meta(module):
        stores = [module._parameters, module._buffers]
        return [(store, n, t) for store in stores for n, t in store.items() if t is not None and t.is_meta]

    def load(module, _args):
        saved = []
        for store, n, t in own_meta(module):
            key = names.get(id(t))
            if key is None:
                raise T2IRError(f"weight {type(module).__name__}.{n} is not in the checkpoint")
            value = loaded(key)
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
        with _LoadedOnUse(names, loaded):
            yield
    finally:
        for h in handles:
            h.remove()


class _LoadedOnUse(torch.overrides.TorchFunctionMode):
    """Any op given a weight still on meta gets the checkpoint's tensor instead (read for that op)."""

    def __init__(self, names: dict[int, str], loaded: Callable[[str], torch.Tensor]):
        super().__init__()
        self.names, self.loaded = names, loaded

    def __torch_function__(self, func, types, args=(), kwargs=None):
        def real(x):
            if isinstance(x, torch.Tensor) and x.is_meta and id(x) in self.names:
                return self.loaded(self.names[id(x)])
            return x

        args, kwargs = torch.utils._pytree.tree_map(real, (args, kwargs or {}))
        return func(*args, **kwargs)
