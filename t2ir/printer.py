"""The stable text form of a graph: one line per input, constant and node.

    graph main
    symbol batch
    assert batch >= 1
    input %x : f32[batch, 64]
    const %fc.weight : f32[32, 64] = "fc.weight"
    %linear = aten.linear(%x, %fc.weight, bias=none) : f32[batch, 32]  # fc (model.py:12)
    output %linear

Weight data is never inlined; a constant shows its label (the .dat name) and, when it is not
stored plainly, its encoding (`= "lm_head.weight" q4_0`).
"""

from __future__ import annotations

import json
import math

import sympy

from t2ir.ir import Graph, Loc, Node, Value
from t2ir.types import DType, format_dim


def attrs_key(attrs: dict) -> tuple:
    """A node's attributes as a hashable key that ignores their order: two nodes with equal
    keys compute the same thing from the same inputs (cse, layer stamping)."""
    return tuple(sorted((k, format_attr(v)) for k, v in attrs.items()))


def format_attr(v) -> str:
    """Attribute values as IR text; `t2ir.parser.parse_attr` reads them back."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, DType):
        return v.value
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, sympy.Expr):
        return format_dim(v)
    if isinstance(v, tuple):  # written (a, b) / (a,) so that it reads back as a tuple
        inner = ", ".join(format_attr(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    raise TypeError(f"attribute value {v!r} of type {type(v).__name__} is not plain data")


def format_loc(loc: Loc) -> str:
    if not loc:
        return ""
    where = f"({loc.file}:{loc.line})" if loc.file else ""
    return "  # " + " ".join(p for p in (loc.module, where) if p)


def format_node(node: Node) -> str:
    outs = ", ".join(f"%{o.name}" for o in node.outputs)
    args = [f"%{v.name}" for v in node.inputs]
    args += [f"{k}={format_attr(a)}" for k, a in node.attrs.items()]
    types = ", ".join(str(o.type) for o in node.outputs)
    return f"{outs} = {node.op}({', '.join(args)}) : {types}{format_loc(node.loc)}"


def format_const(v: Value) -> str:
    c = v.const
    enc = "" if c.encoding == "plain" else f" {c.encoding}"
    return f"const %{v.name} : {v.type} = {json.dumps(c.label)}{enc}"


def print_graph(g: Graph) -> str:
    lines = [f"graph {g.name}"]
    lines += [f"symbol {s}" for s in g.symbols]
    lines += [f"assert {a}" for a in g.assertions]
    lines += [f"input %{v.name} : {v.type}" for v in g.inputs]
    lines += [format_const(v) for v in g.consts]
    lines += [format_node(n) for n in g.nodes]
    lines.append("output " + ", ".join(f"%{v.name}" for v in g.outputs))
    return "\n".join(lines) + "\n"
