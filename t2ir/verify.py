"""Checks every IR invariant; passes and tests call it after each rewrite.

The IR core knows no operators: op schemas are checked by a `check_op(node) -> [problems]`
function the caller passes (`t2ir.ops.registry.check_node` for the built-in registry).
"""

from __future__ import annotations

from typing import Callable, Optional

from t2ir.ir import Graph, Node

OpChecker = Callable[[Node], list[str]]


class IRVerifyError(AssertionError):
    """The graph breaks an IR invariant (a bug in a pass or frontend, not in the user's model)."""


def verify(g: Graph, *, check_op: Optional[OpChecker] = None) -> None:
    """Raise IRVerifyError listing every broken invariant of `g` (and of each node's op, with
    `check_op`)."""
    problems: list[str] = []
    defined: set[int] = set()
    names: set[str] = set()

    def define(v, what: str) -> None:
        if id(v) in defined:
            problems.append(f"%{v.name} ({what}) is defined twice")
        if v.name in names:
            problems.append(f"name %{v.name} is used by two values")
        if not g.has_name(v.name) or g.value(v.name) is not v:
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
        if check_op is not None:
            problems += [f"{node!r}: {p}" for p in check_op(node)]

    node_ids = {id(n) for n in seen_nodes}
    all_values = list(g.values())
    for v in all_values:
        for u in v.uses:
            if id(u.node) not in node_ids or u.node.inputs[u.index] is not v:
                problems.append(f"%{v.name} has a stale use by {u.node!r}")
        listed = sum(1 for o in g.outputs if o is v)
        if v.output_uses != listed:
            problems.append(f"%{v.name} counts {v.output_uses} output uses but is listed {listed} times")
    for v in g.outputs:
        if id(v) not in defined:
            problems.append(f"output %{v.name} is not defined")
    if len(all_values) != len(names):
        problems.append("the name table lists values that are not in the graph")
    if problems:
        raise IRVerifyError("invalid IR:\n  " + "\n  ".join(problems))
