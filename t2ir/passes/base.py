"""What a pass is: a named graph rewrite that states what it needs and what it guarantees."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from t2ir.ir import Graph
from t2ir.options import ExportOptions


@dataclass
class PassResult:
    """Whether the pass changed the graph, plus counters for the export summary."""

    changed: bool
    stats: dict[str, int] = field(default_factory=dict)
    artifacts: dict[str, object] = field(default_factory=dict)  # e.g. a report for the exporter


class Pass(abc.ABC):
    """Base of every pass. Subclasses set `name` and implement `run`.

    `requires` and `ensures` are graph properties (plain strings such as "nnef-level"): the
    pipeline checks that each pass's requirements were ensured by an earlier pass.
    """

    name: str = ""
    requires: frozenset[str] = frozenset()
    ensures: frozenset[str] = frozenset()

    @abc.abstractmethod
    def run(self, graph: Graph, options: ExportOptions) -> PassResult:
        """Rewrite `graph` in place."""

    def __repr__(self) -> str:
        return f"<pass {self.name}>"
