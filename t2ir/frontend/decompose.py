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

from typing import Callable, Iterable, Optional

import torch
import torch.fx

from t2ir.frontend.fx import DROPPED_OPS, op_name
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
            and _makes_tensors(n) and not translated(op_name(n.target))]


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
    return None


def decompose_untranslated(ep: torch.export.ExportedProgram,
                           translated: Callable[[str], bool] = has_translation,
                           extra: Iterable[torch._ops.OpOverload] = ()) -> torch.export.ExportedProgram:
    """`ep` with every decomposable untranslated op (and the ops in `extra`, whose translation
    refused some of their calls) replaced by torch's decomposition, to a fixed point."""
    done: set = set()        # decomposed already (a decomposition may re-emit its own op)
    dead_ends: set = set()   # their decomposition leaves ops that nothing translates
    one_at_a_time = False    # set when a failure could not be pinned on one op of the table
    extra = set(extra)
    if any(n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
           for n in ep.graph.nodes):  # in-place ops (relu_, add_): functionalize first, keeping every op
        ep = ep.run_decompositions({})
    while True:
        wanted = {n.target for n in untranslated_nodes(ep, translated)} | \
                 {n.target for n in ep.graph.nodes if n.op == "call_function" and n.target in extra}
        table = {op: fn for op in sorted(wanted - done - dead_ends, key=str) if (fn := decomposition(op)) is not None}
        if not table:
            return ep
        if one_at_a_time:
            table = dict([next(iter(table.items()))])
        try:
            out = ep.run_decompositions(table)
        except Exception:  # torch could not retrace with these decompositions
            if len(table) > 1:
                one_at_a_time = True
            else:
                dead_ends |= set(table)
            continue
        stuck_names = {str(n.meta.get("original_aten")) for n in untranslated_nodes(out, translated)
                       if n.target in dead_ends or n.target in done or decomposition(n.target) is None}
        unliftable = _unliftable(out)
        stuck_names |= {str(n.meta.get("original_aten")) for n in unliftable}
        stuck = {op for op in table if str(op) in stuck_names}  # (original_aten is an equal but distinct object)
        if any(n.meta.get("original_aten") is None for n in unliftable):  # side effects nobody claims
            if len(table) > 1:
                one_at_a_time = True
                continue
            stuck = set(table)
        if stuck:  # retry without the ops whose pieces cannot be exported either
            dead_ends |= stuck
            continue
        done |= table.keys()
        ep = out


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
