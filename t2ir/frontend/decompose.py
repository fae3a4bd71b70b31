"""Decomposition fallback: aten ops t2ir has no translation for are rewritten with torch's own
decomposition tables, so that what t2ir exports is what torch can decompose, not only what was
translated by hand.

Only the untranslated ops are decomposed: a direct translation (often one fast tract operator)
always wins over torch's pieces. Decomposing repeats until nothing new can be decomposed (a
decomposition may produce other untranslated ops that decompose in turn). An op whose
decomposition ends in ops that cannot be translated either (`aten.expm1` becomes
`prims.expm1`) is left as it is, so that the unsupported-op error names what the model wrote.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Optional

import torch
import torch.fx

from t2ir.frontend.fx import DROPPED_OPS, lifted_target, local_mutation, op_name
from t2ir.ops.registry import REGISTRY


def has_translation(op: str) -> bool:
    entry = REGISTRY.lookup(op)
    return op in DROPPED_OPS or (entry is not None and entry.translate is not None)


def _makes_tensors(node: torch.fx.Node) -> bool:
    """Nodes computing sizes (aten.sym_size) are folded into dimensions, never translated."""
    val = node.meta.get("val")
    vals = val if isinstance(val, (list, tuple)) else [val]
    return any(isinstance(v, torch.Tensor) for v in vals)


def untranslated_nodes(ep: torch.export.ExportedProgram,
                       translated: Callable[[str], bool] = has_translation) -> list[torch.fx.Node]:
    return [n for n in ep.graph.nodes
            if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
            and _makes_tensors(n) and not translated(op_name(lifted_target(n)))]


def _unliftable(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """Nodes a decomposition brought that are no operator calls (`with_effects` for an op with
    side effects, other higher-order ops)."""
    return [n for n in ep.graph.nodes if n.op == "call_function" and isinstance(n.target, torch._ops.HigherOrderOperator)]


def decomposition(op: torch._ops.OpOverload) -> Optional[Callable]:
    """torch's decomposition of `op`: the core ATen table, then the full table, then the op's
    own CompositeImplicitAutograd kernel."""
    from torch._decomp import core_aten_decompositions, decomposition_table
    from torch._export.utils import _get_decomp_for_cia, _is_preservable_cia_op

    core = core_aten_decompositions()
    if op in core:
        return core[op]
    if op in decomposition_table:
        return decomposition_table[op]
    if _is_preservable_cia_op(op):
        return _get_decomp_for_cia(op)
    if torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), torch._C.DispatchKey.CompositeImplicitAutograd):
        return op.decompose  # views and other composites export keeps as they are (movedim, ravel, ...)
    return None


def decompose_untranslated(ep: torch.export.ExportedProgram,
                           translated: Callable[[str], bool] = has_translation,
                           extra: Iterable[torch._ops.OpOverload] = ()) -> torch.export.ExportedProgram:
    """`ep` with every decomposable untranslated op (and the ops in `extra`, whose translation
    refused some of their calls) replaced by torch's decomposition. One retrace does it all:
    the table also holds every other untranslated op torch can decompose, so the pieces a
    decomposition produces are decomposed in turn. In-place ops are made functional on the way."""
    dead_ends: set = set()   # their decomposition leaves ops that nothing translates
    one_at_a_time = False    # set when a failure could not be pinned on one op of the table
    extra = set(extra)
    # in-place ops, and regions wrapped by higher-order ops (autocast, grad mode) that one retrace inlines
    mutable = bool(_unliftable(ep)) or any(n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
                                           and n.target._schema.is_mutable and not local_mutation(n)
                                           for n in ep.graph.nodes)
    while True:
        # (refused ops may only appear once in-place ops are made functional: slice_scatter)
        present = {n.target for n in untranslated_nodes(ep, translated)} | extra
        table = {op: fn for op in sorted(present - dead_ends, key=str) if (fn := decomposition(op)) is not None}
        if table and one_at_a_time:
            table = dict([next(iter(table.items()))])
        elif table:
            table = {**_pieces_table(translated, dead_ends), **table}
        if not table:  # in-place ops (relu_, add_) still need functionalizing, keeping every op (HOPs inlining)
            return _run_decompositions(ep, {}) if mutable else ep
        try:
            out = _run_decompositions(ep, table)
        except Exception:  # torch could not retrace with these decompositions
            if not one_at_a_time:
                one_at_a_time = True
            else:
                dead_ends |= set(table)
            continue
        unliftable = _unliftable(out)
        stuck_names = {str(n.meta.get("original_aten")) for n in untranslated_nodes(out, translated)}
        stuck_names |= {str(n.meta.get("original_aten")) for n in unliftable}
        # (original_aten is an equal but distinct object; dead ends were left out of the table on purpose)
        stuck = {op for op in present - dead_ends if str(op) in stuck_names}
        if any(n.meta.get("original_aten") is None for n in unliftable):  # side effects nobody claims
            if not one_at_a_time:
                one_at_a_time = True
                continue
            stuck = (set(table) & present) - dead_ends
        if stuck:  # retry without the ops whose pieces cannot be exported either
            dead_ends |= stuck
            continue
        if one_at_a_time:  # the next op, on the program with this one decomposed
            ep, mutable = out, False
            continue
        return out


def _run_decompositions(ep: torch.export.ExportedProgram, table: dict) -> torch.export.ExportedProgram:
    """`ep.run_decompositions(table)` with CPU stand-ins for the weights left on the meta device.

    An LLM is traced with its weights on meta and its computed buffers (rotary frequencies) on the
    CPU; torch's first trace accepts ops that mix the two, its retrace does not. Uninitialised CPU
    tensors cost address space only (the retrace reads shapes, never values), and both programs
    get the original meta weights back, so nothing is materialised."""
    stores = (ep._state_dict, ep._constants)
    originals = [dict(store) for store in stores]
    for store in stores:
        for name, tensor in list(store.items()):
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "meta":
                standin = torch.empty_strided(tensor.size(), tensor.stride(), dtype=tensor.dtype)
                store[name] = (torch.nn.Parameter(standin, tensor.requires_grad)
                               if isinstance(tensor, torch.nn.Parameter) else standin)
    try:
        out = ep.run_decompositions(table)
    finally:
        for store, original in zip(stores, originals):
            store.update(original)
    for store, original in zip((out._state_dict, out._constants), originals):
        store.update({name: original[name] for name in store if name in original})
    return out


@functools.lru_cache(maxsize=None)
def _torch_decompositions() -> dict:
    """torch's decomposition tables, core ATen first."""
    from torch._decomp import core_aten_decompositions, decomposition_table

    table = {op: fn for op, fn in decomposition_table.items() if isinstance(op, torch._ops.OpOverload)}
    core = core_aten_decompositions()
    table.update({op: core[op] for op in core.keys() if isinstance(op, torch._ops.OpOverload)})
    return table


def _pieces_table(translated: Callable[[str], bool], dead_ends: set) -> dict:
    """Every functional op torch can decompose that t2ir does not translate: what a
    decomposition's pieces may call."""
    return {op: fn for op, fn in _torch_decompositions().items()
            if not op._schema.is_mutable and op not in dead_ends and not translated(op_name(op))}


def decomposable_ops(names: Iterable[str]) -> list[torch._ops.OpOverload]:
    """The ops named in `names` (IR op names: `aten.add.Tensor`, `aten.linear`) that torch can
    decompose."""
    out = []
    for name in names:
        parts = name.split(".")
        try:
            op = getattr(getattr(getattr(torch.ops, parts[0]), parts[1]), parts[2] if len(parts) > 2 else "default")
        except (AttributeError, IndexError):
            continue
        if decomposition(op) is not None:
            out.append(op)
    return out
