"""Checkpoint tensors -> model parameters, the way transformers' `from_pretrained` maps them.

transformers 5 renames, stacks, concatenates and splits some checkpoint tensors while loading
(per-expert `experts.0.w1.weight` ... stacked into one `experts.gate_up_proj`, `embed_out` renamed
`lm_head`, fused `query_key_value` split into q/k/v), and `save_pretrained` writes that original
format by default. This module reuses transformers' own load-time machinery
(`get_model_conversion_mapping`, `rename_source_key`, each `WeightConverter`'s operations) to give
every state-dict name of a (meta) model a lazy source: the checkpoint entries it comes from and the
conversion, run when the emitter (or the streamed reference) reads that one parameter.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import torch

from t2ir.errors import T2IRError
from t2ir.ir import Derived, TensorSource
from t2ir.llm.checkpoint import Checkpoint, CheckpointError


@dataclass
class _Group:
    """Checkpoint entries converted together (one WeightConverter call, or a 1:1 rename)."""

    first_target: str     # the name transformers passes to convert() as the layer name
    transform: Any        # an unpopulated WeightConverter / WeightRenaming
    adds: list[tuple[str, str, str]] = field(default_factory=list)  # (renamed key, checkpoint key, source pattern)

    @property
    def keys(self) -> list[str]:
        return [key for _, key, _ in self.adds]

    def describe(self) -> str:
        ops = getattr(self.transform, "operations", None)
        what = ", ".join(type(op).__name__ + _op_args(op) for op in ops) if ops else "rename"
        keys = self.keys
        shown = ", ".join(keys[:3]) + (f", ... ({len(keys)} tensors)" if len(keys) > 3 else "")
        return f"{what} of {shown}"


def _op_args(op) -> str:
    dim = getattr(op, "dim", None)
    return f"(dim={dim})" if dim is not None else ""


class ConvertedEntry(Derived):
    """A parameter computed from checkpoint entries by one of transformers' weight converters."""


class WeightMap:
    """State-dict name -> TensorSource for a model built from a checkpoint's config."""

    def __init__(self, model: torch.nn.Module, ckpt: Checkpoint):
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, dot_natural_key, rename_source_key

        self.model, self.ckpt = model, ckpt
        mapping = get_model_conversion_mapping(model)
        renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
        converters = [m for m in mapping if isinstance(m, WeightConverter)]
        by_pattern = {p: c for c in converters for p in c.source_patterns}
        state = model.state_dict()
        self._shapes = {name: tuple(t.shape) for name, t in state.items()}
        prefix = getattr(model, "base_model_prefix", None)
        self.groups: dict[str, _Group] = {}
        self.unused: list[str] = []
        # transformers' own order (numeric segments: experts 0, 1, ..., 10), which stacking relies on
        for key in sorted(ckpt.index, key=dot_natural_key):
            renamed, pattern = rename_source_key(key, renamings, converters, prefix, state)
            if renamed not in state and key in state:  # a checkpoint already in the model's names
                renamed, pattern = rename_source_key(key, [], [], prefix, state)
            if renamed not in state:
                self.unused.append(key)
                continue
            if pattern is None:
                group = self.groups.setdefault(renamed, _Group(renamed, WeightRenaming(key, renamed)))
                pattern = key
            else:
                group = self.groups.setdefault(renamed, _Group(renamed, by_pattern[pattern]))
            group.adds.append((renamed, key, pattern))
        self.sources: dict[str, TensorSource] = {}
        for first, group in self.groups.items():
            for target in self._targets(group):
                self.sources[target] = self._source(group, target)
        self._share_tied(state)

    @staticmethod
    def _targets(group: _Group) -> list[str]:
        """The parameters a group produces: several for a one-to-many split (qkv -> q, k, v)."""
        targets = getattr(group.transform, "target_patterns", None)
        if not isinstance(targets, list) or len(targets) < 2 or any("*" in t for t in targets):
            return [group.first_target]
        return [group.first_target.replace(targets[0], t, 1) for t in targets]

    def _source(self, group: _Group, target: str) -> TensorSource:
        from transformers.core_model_loading import WeightRenaming

        if isinstance(group.transform, WeightRenaming) and len(group.adds) == 1:
            return self.ckpt.source(group.adds[0][1])
        entries = tuple(self.ckpt.source(key) for key in group.keys)

        def convert(*tensors: torch.Tensor, group: _Group = group, target: str = target) -> torch.Tensor:
            return self._convert(group, target, tensors)

        return ConvertedEntry(convert, entries, group.describe())

    def _convert(self, group: _Group, target: str, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        transform = deepcopy(group.transform)
        for (renamed, key, pattern), tensor in zip(group.adds, tensors):
            transform.add_tensor(renamed, key, pattern, tensor)
        try:
            out = transform.convert(group.first_target, model=self.model, config=self.model.config)
        except Exception as e:
            raise CheckpointError(f"cannot build {target!r} from the checkpoint ({group.describe()}): "
                                  f"{type(e).__name__}: {e}") from None
        value = out.get(target)
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"converting {group.describe()} did not produce {target!r} "
                                  f"(it produced {', '.join(out) or 'nothing'})")
        expected = self._shapes[target]
        if tuple(value.shape) != expected:
            raise CheckpointError(f"{target!r} built by {group.describe()} has shape {list(value.shape)}; "
                                  f"the model expects {list(expected)}")
        return value

    def _share_tied(self, state: dict[str, torch.Tensor]) -> None:
        """Tied weights (lm_head = embeddings) are stored once: every name of one tensor gets its source."""
        by_id: dict[int, TensorSource] = {}
        names = list(self.model.named_parameters(remove_duplicate=False)) + \
            list(self.model.named_buffers(remove_duplicate=False))
        for name, tensor in names:
            if name in self.sources:
                by_id.setdefault(id(tensor), self.sources[name])
        for name, tensor in names:
            if name not in self.sources and id(tensor) in by_id:
                self.sources[name] = by_id[id(tensor)]

    def source(self, name: str) -> TensorSource:
        """The source of one state-dict entry; a clear error when the checkpoint has none."""
        found = self.sources.get(name)
        if found is None:
            hint = f" ({len(self.unused)} checkpoint tensors match no parameter, e.g. {self.unused[0]})" \
                if self.unused else ""
            raise T2IRError(f"weight {name!r} is missing from the checkpoint in {self.ckpt.folder}{hint}")
        return found

    def by_tensor(self) -> dict[int, str]:
        """id(model tensor) -> its state-dict name that has a source (tied weights share one)."""
        out: dict[int, str] = {}
        names = list(self.model.named_parameters(remove_duplicate=False)) + \
            list(self.model.named_buffers(remove_duplicate=False))
        for name, tensor in names:
            if name in self.sources:
                out.setdefault(id(tensor), name)
        return out
