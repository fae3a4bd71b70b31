"""The op report of an export (like ExecuTorch's delegation table): for each op of the final
graph, how many nodes, and which passes made them from which lifted op (fused, upcast,
lowered), plus how many read weights a pass packed.

The pipeline records provenance while it runs: every node a pass adds is tagged with the pass
and the node it was inserted for (the node a rule or translation replaces), so a final node's
story follows back to the lifted op it came from:
`aten.scaled_dot_product_attention -> fuse-attention -> lower-to-nnef`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

from t2ir.ir import Graph, Node, Value
from t2ir.ops.aliases import NNEF_CAST, NNEF_RESHAPES

LIFT = "lift"  # the story of a node no pass made
# What lies between a weight and the op that reads it (the packed weight counts for the reader).
_WEIGHT_PATH = NNEF_RESHAPES | {NNEF_CAST, "nnef.transpose"}


class Provenance:
    """Which pass added each node and for which node, and which pass changed each constant's
    encoding (packed it)."""

    def __init__(self) -> None:
        self.origin: dict[Node, tuple[str, Optional[Node]]] = {}  # keeps erased nodes for their story
        self.packed_by: dict[str, str] = {}  # constant name -> pass that changed its encoding

    @contextlib.contextmanager
    def recording(self, graph: Graph, pass_name: str) -> Iterator[None]:
        encodings = {v.name: v.const.encoding for v in graph.consts}
        with graph.observe(lambda node, anchor: self.origin.setdefault(node, (pass_name, anchor))):
            yield
        for v in graph.consts:
            if v.const.encoding != encodings.get(v.name, "plain"):
                self.packed_by[v.name] = pass_name

    def story(self, node: Node) -> str:
        """`<lifted op> -> <pass> -> <pass>`: how `node` came to be ("lift" for a lifted node)."""
        passes: list[str] = []
        source = None
        seen = set()
        while node in self.origin and id(node) not in seen:
            seen.add(id(node))
            pass_name, anchor = self.origin[node]
            if not passes or passes[-1] != pass_name:
                passes.append(pass_name)
            if anchor is None:
                break
            node, source = anchor, anchor.op
        if not passes:
            return LIFT
        return " -> ".join(([source] if source else []) + passes[::-1])


@dataclass
class OpRow:
    op: str
    nodes: int
    made_by: dict[str, int] = field(default_factory=dict)  # story -> nodes
    packed: dict[str, int] = field(default_factory=dict)   # "q4_0 (compress-weights)" -> nodes reading such weights

    def to_dict(self) -> dict:
        return {"op": self.op, "nodes": self.nodes, "made_by": dict(self.made_by), "packed": dict(self.packed)}


@dataclass
class OpReport:
    rows: list[OpRow]

    def to_dict(self) -> list[dict]:
        return [r.to_dict() for r in self.rows]

    def lines(self) -> list[str]:
        """The table the export summary prints: op, nodes, and how they were made."""
        if not self.rows:
            return []
        width = max(len(r.op) for r in self.rows)
        out = [f"{'op':<{width}}  nodes  made by"]
        for r in self.rows:
            how = ", ".join(f"{story} ({n})" for story, n in sorted(r.made_by.items(), key=lambda kv: -kv[1]))
            if r.packed:
                how += "; weights " + ", ".join(f"{k}: {n}" for k, n in r.packed.items())
            out.append(f"{r.op:<{width}}  {r.nodes:>5}  {how}")
        return out


def op_report(graph: Graph, provenance: Provenance) -> OpReport:
    rows: dict[str, OpRow] = {}
    for node in graph.nodes:
        row = rows.setdefault(node.op, OpRow(node.op, 0))
        row.nodes += 1
        story = provenance.story(node)
        row.made_by[story] = row.made_by.get(story, 0) + 1
        packed = set() if node.op in _WEIGHT_PATH else {
            f"{w.const.encoding} ({provenance.packed_by.get(w.name, LIFT)})"
            for w in map(_weight_behind, node.inputs) if w is not None and w.const.encoding != "plain"}
        for key in packed:
            row.packed[key] = row.packed.get(key, 0) + 1
    return OpReport(sorted(rows.values(), key=lambda r: (-r.nodes, r.op)))


def _weight_behind(v: Value) -> Value | None:
    """The constant `v` is (through reshapes, transposes and casts), if any."""
    while v.producer is not None and v.producer.op in _WEIGHT_PATH and len(v.producer.inputs) == 1:
        v = v.producer.inputs[0]
    return v if v.const is not None else None
