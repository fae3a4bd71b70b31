"""cse: computes each value once. Two nodes with the same op, the same inputs and the same
attributes compute the same thing, so the later one is dropped and its users read the earlier
one. After lowering this merges what translations build per node but depends only on the graph's
symbols: the causal mask and the position ranges every attention layer would otherwise rebuild.

Ops that draw random numbers (torch's `nondeterministic_seeded` tag) are never merged.
"""

from __future__ import annotations

from t2ir.ir import Graph, Node
from t2ir.ops.context import draws_random_numbers
from t2ir.options import ExportOptions
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.rewrite import dead_code_elimination
from t2ir.printer import attrs_key


def _key(node: Node) -> tuple:
    return node.op, tuple(id(v) for v in node.inputs), attrs_key(node.attrs), tuple(str(o.type) for o in node.outputs)


def _is_random(op: str) -> bool:
    if op.split(".", 1)[0] in ("nnef", "tract_core", "tract_transformers", "fragment", "t2ir"):
        return False
    try:
        return draws_random_numbers(op)
    except (AttributeError, RuntimeError):
        return True  # unknown to torch: do not assume it is pure


class Cse(Pass):
    name = "cse"

    def run(self, graph: Graph, options: ExportOptions) -> PassResult:
        seen: dict[tuple, Node] = {}
        merged = 0
        for node in graph.nodes:
            if _is_random(node.op):
                continue
            key = _key(node)
            first = seen.get(key)
            if first is None:
                seen[key] = node
                continue
            if any(o.is_output for o in node.outputs):
                continue  # a graph output keeps its own name (and its own node)
            for old, new in zip(node.outputs, first.outputs):
                old.replace_all_uses_with(new)
            graph.erase_node(node)
            merged += 1
        if merged:
            dead_code_elimination(graph)
        return PassResult(merged > 0, {"merged": merged} if merged else {})
