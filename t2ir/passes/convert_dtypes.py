"""convert-dtypes: replaces element types tract cannot compute with ones it can.

tract has no bf16: every bf16 value, constant and dtype attribute becomes f16 by default
(`ExportOptions.bf16_as`), or f32 on request. Constants keep their bf16 source; the emitter
converts each one while streaming it (warning when a value does not fit in f16).
"""

from __future__ import annotations

from typing import Any

from t2ir.ir import Graph
from t2ir.options import ExportOptions
from t2ir.passes.base import Pass, PassResult
from t2ir.types import DType, TensorType


def _convert_attr(a: Any, mapping: dict[DType, DType]) -> Any:
    if isinstance(a, DType):
        return mapping.get(a, a)
    if isinstance(a, (list, tuple)):
        return type(a)(_convert_attr(x, mapping) for x in a)
    return a


class ConvertDtypes(Pass):
    name = "convert-dtypes"

    def run(self, graph: Graph, options: ExportOptions) -> PassResult:
        target = DType(options.bf16_as)
        mapping = {DType.bf16: target}
        changed = 0

        def fix(v) -> None:
            nonlocal changed
            if v.dtype in mapping:
                v.type = TensorType(mapping[v.dtype], v.shape)
                changed += 1

        for v in graph.inputs + graph.consts:
            fix(v)
        for node in graph.nodes:
            for o in node.outputs:
                fix(o)
            for k, a in node.attrs.items():
                new = _convert_attr(a, mapping)
                if new != a:
                    node.attrs[k] = new
                    changed += 1
        return PassResult(changed > 0, {"converted": changed} if changed else {})
