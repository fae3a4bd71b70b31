"""upcast-f32: in an f16 graph, normalisations (`ExportOptions.f32_norm`) and attention
(`ExportOptions.f32_attn`) compute in f32: their float inputs are cast up and their outputs cast
back, with explicit cast nodes (like torch_to_nnef's `-f32-norm` / `-f32-attn`).

Run after the fusions: it finds normalisations as `t2ir.rms_norm` and the aten norm ops, and
attention as `t2ir.sdpa` (or an unfused `aten.scaled_dot_product_attention`). RMSNorm patterns
that were not fused and eager attention left unfused are not changed.
"""

from __future__ import annotations

from typing import Any

from t2ir.ir import Graph, Node
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.patterns import cast_to, replace_value
from t2ir.types import DType

HALF = (DType.f16, DType.bf16)
NORMS = frozenset({"t2ir.rms_norm", "aten.layer_norm", "aten.rms_norm", "aten.group_norm"})
ATTENTION = frozenset({"t2ir.sdpa", "aten.scaled_dot_product_attention"})


def compute_in_f32(g: Graph, node: Node) -> bool:
    """Re-create `node` with half-precision inputs cast to f32 and f32 outputs, casting back after."""
    if not any(o.dtype in HALF for o in node.outputs):
        return False
    with g.inserting_before(node):
        inputs = [cast_to(g, v, DType.f32) if v.dtype in HALF else v for v in node.inputs]
        types = [o.type.with_dtype(DType.f32) if o.dtype in HALF else o.type for o in node.outputs]
        up = g.add_node(node.op, inputs, types, dict(node.attrs), name=f"{node.outputs[0].name}_f32", loc=node.loc)
        backs = [cast_to(g, new, old.dtype) for new, old in zip(up.outputs, node.outputs)]
    for old, new in zip(list(node.outputs), backs):
        replace_value(g, old, new)
    g.erase_node(node)
    return True


class UpcastF32(Pass):
    name = "upcast-f32"

    def run(self, graph: Graph, options: Any) -> PassResult:
        ops: set[str] = set()
        if getattr(options, "f32_norm", False):
            ops |= NORMS
        if getattr(options, "f32_attn", False):
            ops |= ATTENTION
        stats: dict[str, int] = {}
        for node in list(graph.nodes):
            if node.op in ops and compute_in_f32(graph, node):
                kind = "attention" if node.op in ATTENTION else "norm"
                stats[kind] = stats.get(kind, 0) + 1
        return PassResult(bool(stats), stats)
