"""Local rewrite rules (a pattern and a replacement) driven to a fixed point, and dead-code sweeping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

from t2ir.ir import Graph, Node, Value

# A rule looks at one node; when it applies it edits the graph through the IR edit API and
# returns True. It must leave the graph valid.
RuleFn = Callable[[Graph, Node, Any], bool]


@dataclass(frozen=True)
class Rule:
    """`before -> after` in one line of `doc`; `ops` limits which nodes are offered to `fn`."""

    name: str
    fn: RuleFn
    ops: Optional[frozenset[str]] = None
    doc: str = ""


def rule(name: str, ops: Iterable[str] | None = None, doc: str = ""):
    """Decorator turning a function into a Rule."""

    def wrap(fn: RuleFn) -> Rule:
        return Rule(name, fn, frozenset(ops) if ops is not None else None, doc or (fn.__doc__ or "").strip())

    return wrap


def apply_rules(graph: Graph, rules: Sequence[Rule], options: Any = None,
                max_rounds: int = 20) -> dict[str, int]:
    """Offer every node to every rule until nothing changes; returns how often each rule fired."""
    fired: dict[str, int] = {}
    for _ in range(max_rounds):
        changed = False
        for node in graph.nodes:
            if node.graph is not graph:  # erased by an earlier rule in this sweep
                continue
            for r in rules:
                if r.ops is not None and node.op not in r.ops:
                    continue
                if r.fn(graph, node, options):
                    fired[r.name] = fired.get(r.name, 0) + 1
                    changed = True
                    break
        if not changed:
            break
    return fired


def single_user(v: Value) -> Optional[Node]:
    """The only node reading `v` (None when it has several readers or is a graph output)."""
    users = v.users
    if len(users) != 1 or (v.graph is not None and v in v.graph.outputs):
        return None
    return users[0]


def dead_code_elimination(g: Graph) -> int:
    """Erase nodes (last to first) and constants that nothing reads."""
    removed = 0
    nodes = list(g.nodes)
    outputs = set(map(id, g.outputs))
    for node in reversed(nodes):
        if all(not o.uses and id(o) not in outputs for o in node.outputs):
            g.erase_node(node)
            removed += 1
    for c in list(g.consts):
        if not c.uses and id(c) not in outputs:
            g.remove_const(c)
            removed += 1
    return removed


def fuse(graph: Graph, rules: Sequence[Rule], options: Any = None) -> dict[str, int]:
    """Apply a fusion rule set, then sweep what the rewrites left dead (only when one fired)."""
    fired = apply_rules(graph, rules, options)
    if fired:
        dead_code_elimination(graph)
    return fired
