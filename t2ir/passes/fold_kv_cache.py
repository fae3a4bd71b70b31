"""fold-kv-cache: finds the per-layer KV cache in a causal-LM graph, checks its layout and gives it
torch_to_nnef's LLM signature.

The frontend already made the cache explicit: each layer concatenates a past input
`[1, kv, P, hd]` with the new keys (values) into `[1, kv, P+S, hd]`, which attention reads and the
graph returns. This pass recognises that structure whatever the IO is called, tells keys from
values by how attention reads them, orders layers by where their attention runs, then renames and
reorders the IO to

    inputs  input_ids, in_cache_key_0, in_cache_value_0, in_cache_key_1, ...
    outputs outputs, out_cache_key_0, out_cache_value_0, ...

Caches that already carry those names keep them: the causal-LM frontend numbers them by decoder
layer, skipping layers that have no cache. A graph with no cache IO passes unchanged. A graph
whose cache does not fit the layout fails with one error listing every problem.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

import sympy

from t2ir.errors import ExportError, Problem
from t2ir.ir import Graph, Node, Value
from t2ir.ops.aliases import ATTENTION, ATTENTION_KV_INPUTS, CASTS, CONCATS, IDENTITY, RESHAPES, TRANSPOSES
from t2ir.options import ExportOptions
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.pattern import arguments
from t2ir.passes.patterns import axis_of, is_noop, transposes_last_two
from t2ir.types import format_dim

# Ops attention reads the cache through (GQA repetition, layout changes, no-ops).
PASS_THROUGH = CASTS | IDENTITY | RESHAPES | TRANSPOSES | {
    "aten.unsqueeze", "aten.expand", "aten.slice.Tensor", "aten.repeat_interleave.self_int", "aten.permute"}
# Names that say "this input is a KV cache" even when the structure is not found.
CACHE_NAME = re.compile(r"(cache|past)", re.IGNORECASE)
TORCH_TO_NNEF_NAME = re.compile(r"in_cache_(key|value)_(\d+)")
# The other states the causal-LM frontend carries (t2ir.frontend.cache_layout: ConvState,
# GrowingState), named in_cache_{kind}_{layer}: IO of their own, kept as they are.
CARRIED_STATE_NAME = re.compile(r"in_cache_(?!key_\d+$|value_\d+$)\w+_\d+")


class KvCacheLayoutError(ExportError):
    """The model's KV cache does not have the layout t2ir's LLM export needs."""


@dataclass
class CacheLayer:
    """One layer's cache IO after folding."""

    index: int
    kv_heads: int
    head_dim: int
    key: tuple[str, str]    # (input name, output name)
    value: tuple[str, str]


@dataclass
class KvCacheResult(PassResult):
    layers: list[CacheLayer] = field(default_factory=list)
    past: str = ""  # the symbol of the past length (P)
    seq: str = ""   # the symbol of the new tokens (S)


@dataclass
class _Found:
    past: Value
    present: Value
    concat: Node
    role: Optional[str] = None
    reader: int = -1  # position of the attention node that reads it


def _role(v: Value, order: dict[int, int]) -> tuple[Optional[str], int]:
    """('key' | 'value', position of the reading attention node) by walking forward from `v`."""
    todo = deque([(v, False)])
    seen: set[int] = set()
    while todo:
        x, transposed = todo.popleft()
        for use in x.uses:
            node = use.node
            if id(node) in seen:
                continue
            if node.op in ATTENTION and use.index in ATTENTION_KV_INPUTS:
                return ATTENTION_KV_INPUTS[use.index], order[id(node)]
            if node.op == "aten.matmul" and use.index == 1:
                return ("key" if transposed else "value"), order[id(node)]
            if node.op in PASS_THROUGH and use.index == 0:
                seen.add(id(node))
                todo.append((node.outputs[0], transposed ^ transposes_last_two(node)))
    return None, -1


def _cache_concat(v: Value, g: Graph) -> Optional[tuple[Node, Value]]:
    """The concat that appends new entries to past input `v` along axis 2, and the graph output
    it becomes (itself, or through ops that change nothing, such as a cast to its own dtype)."""
    for node in v.users:
        if node.op in CONCATS and node.inputs[0] is v and len(node.inputs) == 2:
            if axis_of(arguments(node).get("dim") or 0, v.rank) == 2:
                out = _returned(node.outputs[0])
                if out is not None:
                    return node, out
    return None


def _returned(v: Value) -> Optional[Value]:
    if v.is_output:
        return v
    for node in v.users:
        if is_noop(node) and node.inputs[0] is v:
            found = _returned(node.outputs[0])
            if found is not None:
                return found
    return None


def _symbol_of(d: Any) -> Optional[str]:
    return d.name if isinstance(d, sympy.Symbol) else None


class FoldKvCache(Pass):
    name = "fold-kv-cache"

    def run(self, graph: Graph, options: ExportOptions) -> PassResult:
        order = {id(n): i for i, n in enumerate(graph.nodes)}
        found: list[_Found] = []
        problems: list[Problem] = []
        for v in graph.inputs:
            cache = _cache_concat(v, graph) if v.rank == 4 else None
            if cache is None:
                if CACHE_NAME.search(v.name) and not CARRIED_STATE_NAME.fullmatch(v.name):
                    problems.append(Problem(
                        f"input %{v.name} {v.type} looks like a KV cache but is not concatenated on axis 2 "
                        "with new entries into a graph output",
                        hint="the LLM export expects caches shaped [1, kv_heads, P, head_dim] (batch, heads, "
                             "positions, features); build the model with transformers' DynamicCache layout"))
                continue
            f = _Found(v, cache[1], cache[0])
            f.role, f.reader = _role(f.concat.outputs[0], order)
            found.append(f)
        if not found and not problems:
            return KvCacheResult(False)
        past, seq = self._check(graph, found, problems)
        if problems:
            raise KvCacheLayoutError("the model's KV cache does not fit the LLM export layout:", problems)
        layers = self._named_pairs(found) or list(enumerate(self._pair(found, problems)))
        if problems:
            raise KvCacheLayoutError("the model's KV cache does not fit the LLM export layout:", problems)
        changed = self._normalise(graph, layers)
        infos = [CacheLayer(i, int(k.past.shape[1]), int(k.past.shape[3]),
                            (k.past.name, k.present.name), (val.past.name, val.present.name))
                 for i, (k, val) in layers]
        stats = {"layers": len(infos), "kv_heads": max(c.kv_heads for c in infos),
                 "head_dim": max(c.head_dim for c in infos)}
        return KvCacheResult(changed, stats, layers=infos, past=past, seq=seq)

    @staticmethod
    def _check(graph: Graph, found: list[_Found], problems: list[Problem]) -> tuple[str, str]:
        """Every cache is [1, kv, P, hd] -> [1, kv, P+S, hd] with one declared P and one declared S."""
        pasts, seqs = set(), set()
        for f in found:
            where = f"cache input %{f.past.name}"
            b, kv, p, hd = f.past.shape
            past = _symbol_of(p)
            seq = _symbol_of(f.present.shape[2] - p) if past else None
            if b != 1 or not isinstance(kv, int) or not isinstance(hd, int) or past is None:
                problems.append(Problem(f"{where} has shape {f.past.type}; expected [1, kv_heads, P, head_dim] "
                                        "with a symbolic past length P and static heads"))
                continue
            if tuple(f.present.shape[:2]) != (1, kv) or f.present.shape[3] != hd or seq is None:
                problems.append(Problem(f"{where}: the updated cache %{f.present.name} is {f.present.type}; "
                                        f"expected [1, {kv}, {past} + S, {hd}] with a symbol S for the new tokens"))
                continue
            pasts.add(past)
            seqs.add(seq)
        for what, names in (("past length", pasts), ("new-token count", seqs)):
            if len(names) > 1:
                problems.append(Problem(f"caches disagree on the {what}: {', '.join(sorted(names))}"))
            for s in names:
                if s not in graph.symbols:
                    problems.append(Problem(f"symbol {s} ({what}) is used by the caches but not declared"))
        return (next(iter(pasts)) if len(pasts) == 1 else "", next(iter(seqs)) if len(seqs) == 1 else "")

    @staticmethod
    def _named_pairs(found: list[_Found]) -> list[tuple[int, tuple[_Found, _Found]]]:
        """Caches already named in torch_to_nnef's form (the causal-LM frontend names them after their
        decoder layer, which may skip layers without a cache): kept as they are, in layer order."""
        by_name = {}
        for f in found:
            m = TORCH_TO_NNEF_NAME.fullmatch(f.past.name)
            if m is None:
                return []
            by_name[(int(m.group(2)), m.group(1))] = f
        indices = sorted({i for i, _ in by_name})
        if len(by_name) != 2 * len(indices) or not all((i, "key") in by_name for i in indices):
            return []
        return [(i, (by_name[(i, "key")], by_name[(i, "value")])) for i in indices]

    @staticmethod
    def _pair(found: list[_Found], problems: list[Problem]) -> list[tuple[_Found, _Found]]:
        """Key and value caches per layer, layers in the order their attention runs."""
        for f in found:
            if f.role is None:  # no attention reads it: trust a torch_to_nnef style name
                m = re.search(r"(key|value)", f.past.name)
                f.role = m.group(1) if m else None
            if f.role is None:
                problems.append(Problem(f"cache input %{f.past.name}: no attention reads it, so it is "
                                        "neither a key nor a value cache"))
        keys = sorted((f for f in found if f.role == "key"), key=lambda f: (f.reader, f.past.name))
        values = sorted((f for f in found if f.role == "value"), key=lambda f: (f.reader, f.past.name))
        if len(keys) != len(values):
            problems.append(Problem(f"found {len(keys)} key caches but {len(values)} value caches"))
            return []
        for k, v in zip(keys, values):
            if k.past.shape[1] != v.past.shape[1]:
                problems.append(Problem(f"key cache %{k.past.name} and value cache %{v.past.name} of one layer "
                                        f"have {format_dim(k.past.shape[1])} and {format_dim(v.past.shape[1])} heads"))
        return list(zip(keys, values))

    @staticmethod
    def _normalise(graph: Graph, layers: list[tuple[int, tuple[_Found, _Found]]]) -> bool:
        """Rename cache IO (and a lone token input / logits output) and put it in signature order."""
        renames: list[tuple[Value, str]] = []
        cache_in, cache_out = [], []
        for i, pair in layers:
            for kind, f in zip(("key", "value"), pair):
                renames += [(f.past, f"in_cache_{kind}_{i}"), (f.present, f"out_cache_{kind}_{i}")]
                cache_in.append(f.past)
                cache_out.append(f.present)
        ids_in, ids_out = set(map(id, cache_in)), set(map(id, cache_out))
        other_in = [v for v in graph.inputs if id(v) not in ids_in]
        other_out = [v for v in graph.outputs if id(v) not in ids_out]
        if len(other_in) == 1 and other_in[0].dtype.is_int:
            renames.append((other_in[0], "input_ids"))
        if len(other_out) == 1:
            renames.append((other_out[0], "outputs"))
        changed = any(v.name != name for v, name in renames)
        targets = {name for _, name in renames}
        for v, _ in renames:  # two steps, so swapping names never collides
            graph.rename(v, graph.fresh_name(f"{v.name}_tmp"))
        for v in graph.values():
            if v.name in targets:  # an unrelated value holds a signature name: move it aside
                graph.rename(v, graph.fresh_name(f"{v.name}_"))
        for v, name in renames:
            graph.rename(v, name)
        new_inputs, new_outputs = other_in + cache_in, other_out + cache_out
        changed |= tuple(new_inputs) != graph.inputs or tuple(new_outputs) != graph.outputs
        graph.set_inputs(new_inputs)
        graph.set_outputs(new_outputs)
        return changed
