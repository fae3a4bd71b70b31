"""cleanup: removes dead nodes and constants, and ops that do nothing (same-type casts,
same-shape reshapes, identity transposes, copies, dropout in inference)."""

from __future__ import annotations

from typing import Any

from t2ir.ir import Graph, Node
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.rewrite import apply_rules, dead_code_elimination, rule

_IDENTITY_OPS = {
    "aten.clone", "aten.contiguous", "aten.detach", "aten.alias", "aten.dropout", "aten.lift_fresh_copy",
    "aten.feature_dropout", "aten.alpha_dropout", "nnef.copy", "aten.lift_fresh",
}


def _keeps_type(node: Node) -> bool:
    """The node's first output has exactly its first input's type."""
    return bool(node.inputs) and node.outputs[0].type == node.inputs[0].type


def _forward_first_input(g: Graph, node: Node) -> bool:
    out, src = node.outputs[0], node.inputs[0]
    if out in g.outputs:
        return False  # a graph output keeps its own name
    g.replace_node(node, [src])
    return True


@rule("drop-identity", ops=_IDENTITY_OPS, doc="%y = clone(%x) -> uses of %y read %x")
def drop_identity(g: Graph, node: Node, _opts: Any) -> bool:
    if not _keeps_type(node):
        return False
    return _forward_first_input(g, node)


@rule("drop-noop-reshape", ops={"nnef.reshape", "nnef.squeeze", "nnef.unsqueeze", "aten.view",
                                "aten.reshape", "aten._unsafe_view", "aten.expand"},
      doc="%y = reshape(%x) with type(%y) == type(%x) -> %x")
def drop_noop_reshape(g: Graph, node: Node, _opts: Any) -> bool:
    if not _keeps_type(node):
        return False
    return _forward_first_input(g, node)


@rule("drop-noop-cast", ops={"tract_core.cast", "aten._to_copy", "aten.to.dtype", "aten.type_as"},
      doc="%y = cast(%x, to=f32) with %x already f32 -> %x")
def drop_noop_cast(g: Graph, node: Node, _opts: Any) -> bool:
    if not _keeps_type(node):
        return False
    return _forward_first_input(g, node)


@rule("drop-identity-transpose", ops={"nnef.transpose"}, doc="transpose(axes=[0, 1, ..]) -> %x")
def drop_identity_transpose(g: Graph, node: Node, _opts: Any) -> bool:
    if list(node.attrs.get("axes", [])) != list(range(len(node.attrs.get("axes", [])))):
        return False
    return _forward_first_input(g, node)


CLEANUP_RULES = [drop_identity, drop_noop_reshape, drop_noop_cast, drop_identity_transpose]


class Cleanup(Pass):
    name = "cleanup"

    def run(self, graph: Graph, options: Any) -> PassResult:
        stats = apply_rules(graph, CLEANUP_RULES, options)
        removed = dead_code_elimination(graph)
        if removed:
            stats["dead"] = removed
        return PassResult(bool(stats), stats)
