"""The steps of scans lifted from torch's `scan` (t2ir.frontend.scan): graphs of their own, called
by `tract_core.scan` nodes as the body fragment `fragment.t2ir_scan_step_<hash>`.

The frontend adds a step here as it lifted it (source-level ops); the lower-to-nnef pass lowers it
once, whichever scan reaches it first; the NNEF emitter writes it as a fragment; the interpreter
runs it as the body's reference. The name is a hash of the lifted step's text, so a step two
layers share is one fragment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

from t2ir.ir import Constant, Graph
from t2ir.types import TensorType
from t2ir.ops.registry import REGISTRY, register_nnef_op
from t2ir.printer import print_graph


@dataclass
class ScanStep:
    graph: Graph
    lowered: bool = False
    # the tensors the lowered step made for itself, now body inputs fed from the outer graph
    hoisted: list[tuple[str, TensorType, Constant]] = field(default_factory=list)


_STEPS: dict[str, ScanStep] = {}


def add_step(graph: Graph) -> str:
    """Keep `graph` (inputs: the body fragment's parameters, outputs: its results) as a scan step;
    returns the body op name, `fragment.t2ir_scan_step_<hash>`."""
    op = f"fragment.t2ir_scan_step_{hashlib.sha256(print_graph(graph).encode()).hexdigest()[:12]}"
    if op not in _STEPS:
        _STEPS[op] = ScanStep(graph)
        if op not in REGISTRY.ops:
            register_nnef_op(op, [v.name for v in graph.inputs], origin="builtin")
    return op


def scan_step(op: str) -> Optional[ScanStep]:
    """The step a `tract_core.scan` body names, if it is one lifted from torch's scan."""
    return _STEPS.get(op)
