"""A structural diff of two IR graphs: which nodes were added, removed, changed or fused, and how
the op counts moved. `t2ir.diff(a, b)` returns it as data; `t2ir diff A B` prints it.

Nodes are matched by the names of their outputs first (passes keep a value's name when they
replace the node that made it), then by topology: an unmatched node whose op, attributes and
(matched) inputs equal those of an unmatched node on the other side is the same node renamed.
A matched node whose op changed and that absorbed removed nodes above it was *fused*.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Optional

from t2ir.ir import Graph, Node, Value
from t2ir.printer import format_attr, format_loc
from t2ir.tools.open_ir import IRSource, as_graph


@dataclass(frozen=True)
class NodeInfo:
    """A node as plain data: its (first) output name, op, types, attributes, inputs and source."""

    name: str
    op: str
    types: tuple[str, ...]
    attrs: dict[str, str]
    inputs: tuple[str, ...]
    loc: str = ""

    @staticmethod
    def of(node: Node) -> "NodeInfo":
        return NodeInfo(node.outputs[0].name, node.op, tuple(str(o.type) for o in node.outputs),
                        {k: format_attr(v) for k, v in node.attrs.items()},
                        tuple(v.name for v in node.inputs), format_loc(node.loc).removeprefix("  # "))

    def line(self) -> str:
        args = [f"%{n}" for n in self.inputs] + [f"{k}={v}" for k, v in self.attrs.items()]
        return f"%{self.name} = {self.op}({', '.join(args)}) : {', '.join(self.types)}"


@dataclass(frozen=True)
class NodeChange:
    """A node present on both sides that differs: what changed, field by field."""

    before: NodeInfo
    after: NodeInfo
    changes: tuple[str, ...]
    fused: tuple[str, ...] = ()  # names of removed nodes this one absorbed

    @property
    def name(self) -> str:
        return self.after.name


@dataclass(frozen=True)
class OpCount:
    op: str
    before: int
    after: int

    @property
    def delta(self) -> int:
        return self.after - self.before


@dataclass
class IRDiff:
    """What changed from graph `a` to graph `b` (see the module docstring for the matching)."""

    added: list[NodeInfo] = field(default_factory=list)
    removed: list[NodeInfo] = field(default_factory=list)
    changed: list[NodeChange] = field(default_factory=list)
    unchanged: int = 0
    renamed: dict[str, str] = field(default_factory=dict)   # name in a -> name in b (topology matches)
    op_counts: list[OpCount] = field(default_factory=list)
    io_changes: list[str] = field(default_factory=list)     # inputs, outputs, constants

    @property
    def fused(self) -> list[NodeChange]:
        return [c for c in self.changed if c.fused]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.io_changes)

    def status(self, side: str) -> dict[str, str]:
        """Node name -> "added" / "removed" / "changed" / "fused" on one side ("a" or "b"), for
        colouring pictures; nodes that did not change are left out."""
        out: dict[str, str] = {}
        if side == "a":
            absorbed = {n for c in self.fused for n in c.fused}
            out.update({n.name: "fused" if n.name in absorbed else "removed" for n in self.removed})
            out.update({c.before.name: "fused" if c.fused else "changed" for c in self.changed})
        else:
            out.update({n.name: "added" for n in self.added})
            out.update({c.after.name: "fused" if c.fused else "changed" for c in self.changed})
        return out

    def to_dict(self) -> dict:
        return {
            "added": [n.line() for n in self.added], "removed": [n.line() for n in self.removed],
            "changed": [{"name": c.name, "changes": list(c.changes), "fused": list(c.fused)} for c in self.changed],
            "unchanged": self.unchanged, "renamed": dict(self.renamed), "io": list(self.io_changes),
            "op_counts": [{"op": c.op, "before": c.before, "after": c.after, "delta": c.delta} for c in self.op_counts],
        }

    def op_table(self, only_changed: bool = True) -> list[str]:
        rows = [c for c in self.op_counts if c.delta or not only_changed]
        if not rows:
            return []
        width = max(len(c.op) for c in rows)
        lines = [f"{'op':<{width}}  before  after  delta"]
        lines += [f"{c.op:<{width}}  {c.before:>6}  {c.after:>5}  {c.delta:>+5}" for c in rows]
        total_a, total_b = sum(c.before for c in self.op_counts), sum(c.after for c in self.op_counts)
        lines.append(f"{'total':<{width}}  {total_a:>6}  {total_b:>5}  {total_b - total_a:>+5}")
        return lines

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed "
                f"({len(self.fused)} fused), {self.unchanged} unchanged")


def diff(a: IRSource, b: IRSource) -> IRDiff:
    """Compare two graphs (Graph objects, IR text, or anything `t2ir dump` opens).

        >>> d = t2ir.diff("dumps/", "dumps/")       # a --dump-ir folder: its last pass
        >>> d = t2ir.diff("dumps/03-fuse-attention.t2ir", "dumps/04-fuse-transformer-ops.t2ir")
        >>> [c.name for c in d.fused], d.op_table()
    """
    ga, gb = as_graph(a), as_graph(b)
    pairs = _match(ga, gb)
    matched_a = {id(na) for na, _ in pairs}
    matched_b = {id(nb) for _, nb in pairs}
    removed_nodes = [n for n in ga.nodes if id(n) not in matched_a]
    absorbed = _absorbed(pairs, {id(n) for n in removed_nodes})
    out = IRDiff()
    value_map = _value_map(ga, gb, pairs)
    for na, nb in pairs:
        info_a, info_b = NodeInfo.of(na), NodeInfo.of(nb)
        if info_a.name != info_b.name:
            out.renamed[info_a.name] = info_b.name
        changes = _changes(na, nb, value_map)
        if changes:
            out.changed.append(NodeChange(info_a, info_b, tuple(changes), tuple(absorbed.get(id(nb), ()))))
        else:
            out.unchanged += 1
    out.added = [NodeInfo.of(n) for n in gb.nodes if id(n) not in matched_b]
    out.removed = [NodeInfo.of(n) for n in removed_nodes]
    ca, cb = collections.Counter(n.op for n in ga.nodes), collections.Counter(n.op for n in gb.nodes)
    out.op_counts = [OpCount(op, ca[op], cb[op]) for op in sorted(set(ca) | set(cb))]
    out.io_changes = _io_changes(ga, gb)
    return out


def _match(ga: Graph, gb: Graph) -> list[tuple[Node, Node]]:
    """Pairs (node of a, node of b): by output name, then by op, attributes and matched inputs."""
    by_name = {o.name: n for n in ga.nodes for o in n.outputs}
    pairs, used = [], set()
    unmatched_b = []
    for nb in gb.nodes:
        na = next((by_name[o.name] for o in nb.outputs if o.name in by_name), None)
        if na is not None and id(na) not in used and len(na.outputs) == len(nb.outputs):
            pairs.append((na, nb))
            used.add(id(na))
        else:
            unmatched_b.append(nb)
    value_map = _value_map(ga, gb, pairs)
    candidates: dict[tuple, list[Node]] = collections.defaultdict(list)
    key_of: dict[int, tuple] = {}

    def index(na: Node) -> None:
        key_of[id(na)] = key = _signature(na, value_map)
        candidates[key].append(na)

    for na in ga.nodes:
        if id(na) not in used:
            index(na)
    for nb in unmatched_b:  # in b's order, so a renamed chain matches link by link
        group = candidates.get(_signature(nb, None))
        if not group:
            continue
        na = group.pop(0)
        used.add(id(na))
        pairs.append((na, nb))
        for va, vb in zip(na.outputs, nb.outputs):
            value_map[va.name] = vb.name
        for user in {id(u): u for va in na.outputs for u in va.users}.values():
            if id(user) not in used:  # its inputs are now known by their b names
                candidates[key_of[id(user)]].remove(user)
                index(user)
    return pairs


def _signature(node: Node, value_map: Optional[dict[str, str]]) -> tuple:
    names = [value_map.get(v.name, v.name) if value_map is not None else v.name for v in node.inputs]
    return (node.op, tuple(names), tuple((k, format_attr(v)) for k, v in node.attrs.items()),
            tuple(str(o.type) for o in node.outputs))


def _value_map(ga: Graph, gb: Graph, pairs: list[tuple[Node, Node]]) -> dict[str, str]:
    """Name in a -> name in b for values known to be the same (same name, or matched outputs)."""
    out = {v.name: v.name for v in ga.values() if gb.has_name(v.name)}
    for na, nb in pairs:
        out.update({va.name: vb.name for va, vb in zip(na.outputs, nb.outputs)})
    return out


def _changes(na: Node, nb: Node, value_map: dict[str, str]) -> list[str]:
    changes = []
    if na.op != nb.op:
        changes.append(f"op {na.op} -> {nb.op}")
    ta, tb = [str(o.type) for o in na.outputs], [str(o.type) for o in nb.outputs]
    if ta != tb:
        changes.append(f"type {', '.join(ta)} -> {', '.join(tb)}")
    ia = [f"%{value_map.get(v.name, v.name)}" for v in na.inputs]
    ib = [f"%{v.name}" for v in nb.inputs]
    if ia != ib:
        changes.append(f"inputs ({', '.join(f'%{v.name}' for v in na.inputs)}) -> ({', '.join(ib)})")
    for key in dict.fromkeys(list(na.attrs) + list(nb.attrs)):
        va = format_attr(na.attrs[key]) if key in na.attrs else "(none)"
        vb = format_attr(nb.attrs[key]) if key in nb.attrs else "(none)"
        if va != vb:
            changes.append(f"{key}: {va} -> {vb}")
    return changes


def _absorbed(pairs: list[tuple[Node, Node]], removed: set[int]) -> dict[int, list[str]]:
    """For each b node whose op changed: the removed a nodes above its partner, reached only
    through removed nodes (what a fusion swallowed). Each removed node goes to its nearest claimant."""
    claimed: set[int] = set()
    out: dict[int, list[str]] = {}
    for na, nb in pairs:
        if na.op == nb.op:
            continue
        names, todo = [], [v.producer for v in na.inputs]
        while todo:
            p = todo.pop()
            if p is None or id(p) not in removed or id(p) in claimed:
                continue
            claimed.add(id(p))
            names.append(p.outputs[0].name)
            todo += [v.producer for v in p.inputs]
        if names:
            out[id(nb)] = sorted(names)
    return out


def _describe(v: Value) -> str:
    return f"%{v.name} : {v.type}"


def _io_changes(ga: Graph, gb: Graph) -> list[str]:
    out = []
    for what, xs, ys in (("input", ga.inputs, gb.inputs), ("output", ga.outputs, gb.outputs)):
        a, b = [_describe(v) for v in xs], [_describe(v) for v in ys]
        if a != b:
            out.append(f"{what}s: {', '.join(a) or '(none)'} -> {', '.join(b) or '(none)'}")
    consts_a = {v.name: v for v in ga.consts}
    consts_b = {v.name: v for v in gb.consts}
    for name in consts_a.keys() - consts_b.keys():
        out.append(f"constant removed: {_describe(consts_a[name])}")
    for name in consts_b.keys() - consts_a.keys():
        out.append(f"constant added: {_describe(consts_b[name])}")
    for name in consts_a.keys() & consts_b.keys():
        va, vb = consts_a[name], consts_b[name]
        if va.type != vb.type or va.const.encoding != vb.const.encoding:
            out.append(f"constant %{name}: {va.type} {va.const.encoding} -> {vb.type} {vb.const.encoding}")
    return sorted(out, key=lambda s: (not s.startswith(("input", "output")), s))
