"""upcast-f32: in an f16 graph, normalisations (`ExportOptions.f32_norm`) and attention
(`ExportOptions.f32_attn`) compute in f32: their float inputs are cast up and their outputs cast
back, with explicit cast nodes (like torch_to_nnef's `-f32-norm` / `-f32-attn`).

Run after the fusions: it finds normalisations as `t2ir.rms_norm` and the aten norm ops, and
attention as `t2ir.sdpa` (or an unfused `aten.scaled_dot_product_attention`). RMSNorm patterns
that were not fused and eager attention left unfused are not changed.
"""

from __future__ import annotations

from typing import Optional

from t2ir.ir import Value
from t2ir.ops.aliases import ATTENTION, NORMS
from t2ir.passes.pattern import op
from t2ir.passes.rewrite import Match, RewritePass, Rule
from t2ir.types import DType

HALF = (DType.f16, DType.bf16)


def in_f32(m: Match) -> Optional[list[Value]]:
    """The node again, its half-precision inputs cast to f32 and outputs computed in f32, each
    output cast back to its old type."""
    node = m.root
    wanted = m.options.f32_norm if node.op in NORMS else m.options.f32_attn
    if not wanted or not any(o.dtype in HALF for o in node.outputs):
        return None
    inputs = [m.cast(v, DType.f32) if v.dtype in HALF else v for v in node.inputs]
    types = [o.type.with_dtype(DType.f32) if o.dtype in HALF else o.type for o in node.outputs]
    up = m.graph.add_node(node.op, inputs, types, dict(node.attrs), name=f"{node.outputs[0].name}_f32", loc=node.loc)
    return [m.cast(new, old.dtype) for new, old in zip(up.outputs, node.outputs)]


UpcastF32 = RewritePass("upcast-f32", [
    Rule("norm", op(NORMS), in_f32, "norm(x: f16) -> cast(norm(cast(x, f32)), f16)"),
    Rule("attention", op(ATTENTION), in_f32, "sdpa(q, k, v: f16) -> cast(sdpa(cast(q), cast(k), cast(v)), f16)"),
])
