"""Checks every IR invariant; passes and tests call it after each rewrite."""

from __future__ import annotations

from t2ir.ir import Graph


class IRVerifyError(AssertionError):
    """The graph breaks an IR invariant (a bug in a pass or frontend, not in the user's model)."""


def verify(g: Graph, *, check_ops: bool = True) -> None:
    """Raise IRVerifyError listing every broken invariant of `g`."""
    problems: list[str] = []
    defined: set[int] = set()
    names: set[str] = set()

    def define(v, what: str) -> None:
        if id(v) in defined:
            problems.append(f"%{v.name} ({what}) is defined twice")
        if v.name in names:
            problems.append(f"name %{v.name} is used by two values")
        if g._names.get(v.name) is not v:
            problems.append(f"%{v.name} is not registered under its name")
        defined.add(id(v))
        names.add(v.name)

    for v in g.inputs:
        define(v, "input")
    for v in g.consts:
        if v.const is None:
            problems.append(f"%{v.name} is listed as a constant but has no data handle")
        define(v, "constant")

    seen_nodes = []
    for node in g.nodes:
        seen_nodes.append(node)
        if node.graph is not g:
            problems.append(f"{node!r} does not belong to this graph")
        for i, v in enumerate(node.inputs):
            if id(v) not in defined:
                problems.append(f"{node!r}: input %{v.name} is not defined before use")
            if not any(u.node is node and u.index == i for u in v.uses):
                problems.append(f"{node!r}: input {i} is missing from %{v.name}'s use-list")
        for o in node.outputs:
            if o.producer is not node:
                problems.append(f"{node!r}: output %{o.name} names another producer")
            define(o, f"output of {node.op}")
        if check_ops:
            from t2ir.ops.registry import check_node

            problems += [f"{node!r}: {p}" for p in check_node(node)]

    node_ids = {id(n) for n in seen_nodes}
    for v in list(g._names.values()):
        for u in v.uses:
            if id(u.node) not in node_ids or u.node.inputs[u.index] is not v:
                problems.append(f"%{v.name} has a stale use by {u.node!r}")
    for v in g.outputs:
        if id(v) not in defined:
            problems.append(f"output %{v.name} is not defined")
    if len(g._names) != len(names):
        problems.append("the name table lists values that are not in the graph")
    if problems:
        raise IRVerifyError("invalid IR:\n  " + "\n  ".join(problems))
