"""What a pass is: a named graph rewrite that states what it needs and what it guarantees."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from t2ir.ir import Graph


@dataclass
class PassResult:
    """Whether the pass changed the graph, plus counters for the export summary."""

    changed: bool
    stats: dict[str, int] = field(default_factory=dict)


class Pass(abc.ABC):
    """Base of every pass. Subclasses set `name` and implement `run`.

    `requires` and `ensures` are graph properties (plain strings such as "nnef-level"): the
    pipeline checks that each pass's requirements were ensured by an earlier pass.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    ensures: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def run(self, graph: Graph, options: Any) -> PassResult:
        """Rewrite `graph` in place."""

    def __repr__(self) -> str:
        return f"<pass {self.name}>"
