"""`t2ir bisect`: find the first node of an export whose value in tract differs from PyTorch.

Three evaluations of the same inputs meet value by value, in the exported graph's order:
- the reference: the lifted graph (the model's own aten ops) run by the reference interpreter;
- our reading of the export: the exported (NNEF-level) graph run by the reference interpreter;
- tract: the exported graph with every intermediate value exposed as an output.
Passes keep a value's name when they replace the node that made it, so a value of the export
is compared with the reference value of the same name. The first value beyond the tolerance is
reported with its op and source location, and which side is wrong: the reference and our reading
disagree (a translation or pass computes something else), or tract and our reading disagree
(tract runs the NNEF op differently than t2ir means it).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from t2ir.checkio import DEFAULT_LEVEL, OutputCheck, Tolerance, compare
from t2ir.emitters.dat import read_dat, read_dat_header, read_q4_0_dat
from t2ir.emitters.layout import GRAPH_FILE
from t2ir.emitters.nnef_text import build_document, dat_labels
from t2ir.errors import T2IRError
from t2ir.interpret import Interpreter, WeightLoader, as_numpy, as_tensor, source_weights
from t2ir.ir import Derived, Graph, Value
from t2ir.options import ExportOptions
from t2ir.parser import parse_ir
from t2ir.tract_run import load_runnable, run_tract

TRANSLATION = "translation"  # the exported graph computes something else than the model
TRACT = "tract"              # tract computes the exported op differently than t2ir means it


@dataclass
class ValueCheck:
    """One value of the exported graph: tract against the reference and against our reading."""

    name: str
    op: str
    loc: str
    vs_reference: Optional[OutputCheck]  # None: the lifted graph has no value of this name/shape
    vs_reading: OutputCheck
    reference_op: str = ""
    reference_loc: str = ""

    @property
    def passed(self) -> bool:
        return self.vs_reading.passed and (self.vs_reference is None or self.vs_reference.passed)

    @property
    def culprit(self) -> str:
        """Whose fault a failed value is (see the module docstring)."""
        return TRACT if not self.vs_reading.passed else TRANSLATION

    def describe(self) -> str:
        where = f" at {self.reference_loc or self.loc}" if (self.reference_loc or self.loc) else ""
        if self.culprit == TRACT:
            c = self.vs_reading
            return (f"%{self.name} = {self.op}{where}: tract's value differs from what t2ir means by {self.op} "
                    f"(max |diff| {c.max_abs_diff:.3g}, {c.failed}/{c.total} values outside {c.tolerance})")
        c = self.vs_reference
        source = f" (lifted as {self.reference_op})" if self.reference_op and self.reference_op != self.op else ""
        return (f"%{self.name} = {self.op}{source}{where}: the export computes another value than PyTorch "
                f"(max |diff| {c.max_abs_diff:.3g}, {c.failed}/{c.total} values outside {c.tolerance}); the "
                f"translation of {self.reference_op or self.op} or a pass before it is wrong")


@dataclass
class BisectReport:
    checked: list[ValueCheck]

    @property
    def first(self) -> Optional[ValueCheck]:
        return next((c for c in self.checked if not c.passed), None)

    def __str__(self) -> str:
        compared = sum(c.vs_reference is not None for c in self.checked)
        head = f"compared {len(self.checked)} values with tract ({compared} also with the PyTorch reference)"
        first = self.first
        if first is None:
            return f"{head}: all within tolerance"
        return f"{head}; first difference:\n  {first.describe()}"


def copy_graph(g: Graph) -> Graph:
    """An independent copy of `g` sharing its constants' data handles (through the text form)."""
    copy = parse_ir(str(g))
    for v in copy.consts:
        v.const.source = g.value(v.name).const.source
    return copy


def computed_values(graph: Graph) -> list[Value]:
    """Node outputs that depend on a graph input (the others are constants to tract, which keeps
    packed weights in their packed form even through a reshape)."""
    live = {id(v) for v in graph.inputs}
    out = []
    for node in graph.nodes:
        if any(id(v) in live for v in node.inputs):
            live.update(id(o) for o in node.outputs)
            out += node.outputs
    return out


def tract_values(graph: Graph, model: Path, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Every computed value of `graph` as tract computes it: the graph is re-emitted with all of
    them as outputs beside the .dat files of the exported `model` (a folder or an archive)."""
    exposed = parse_ir(str(graph))
    values = list(dict.fromkeys([*exposed.outputs, *computed_values(exposed)]))
    exposed.set_outputs(values)
    with tempfile.TemporaryDirectory(prefix="t2ir-bisect-") as tmp:
        folder = Path(tmp) / "model"
        if Path(model).is_dir():
            shutil.copytree(model, folder)
        else:
            with tarfile.open(model) as tar:
                tar.extractall(folder, filter="data")
        (folder / GRAPH_FILE).write_text(build_document(exposed).render())
        got = run_tract(load_runnable(folder), list(inputs))
    return {v.name: g for v, g in zip(values, got)}


def dat_weights(folder: Path | str, graph: Graph) -> WeightLoader:
    """Constants read back from the .dat files of an exported model folder (Q4_0 dequantized)."""
    labels = dat_labels(list(graph.consts))

    def load(v: Value) -> torch.Tensor:
        path = Path(folder) / f"{labels[v.name]}.dat"
        if not path.exists():
            raise T2IRError(f"constant %{v.name}: {path.name} is missing from {folder}")
        array = read_q4_0_dat(path).dequantize() if read_dat_header(path).is_q4_0 else read_dat(path)
        return as_tensor(array).to(v.dtype.torch)

    return load


def bisect_graphs(reference: Optional[Graph], exported: Graph, model: Path | str, inputs: Sequence, *,
                  tol: Tolerance | str = DEFAULT_LEVEL, reference_weights: WeightLoader = source_weights,
                  exported_weights: WeightLoader = source_weights) -> BisectReport:
    """Compare, value by value, the lifted `reference` (PyTorch; None: no such comparison), the
    `exported` graph as t2ir reads it, and tract running `model` (the export of `exported`)."""
    tensors = [torch.as_tensor(np.asarray(x)) for x in inputs]
    ref = Interpreter(reference, reference_weights).run(tensors, keep=True) if reference is not None else {}
    ours = Interpreter(exported, exported_weights).run(tensors, keep=True)
    feeds = [as_numpy(t.to(v.dtype.torch)) for t, v in zip(tensors, exported.inputs)]
    theirs = tract_values(exported, Path(model), feeds)
    checked = []
    for node in exported.nodes:
        for v in node.outputs:
            if v.name not in theirs:
                continue
            got = theirs[v.name]
            reading = compare(v.name, got, as_numpy(ours[v.name]), tol)
            lifted = _reference_value(reference, v, ref, got.shape)
            vs_ref = compare(v.name, got, as_numpy(ref[v.name]), tol) if lifted is not None else None
            origin = lifted.producer if lifted is not None else None
            checked.append(ValueCheck(v.name, node.op, str(node.loc), vs_ref, reading,
                                      origin.op if origin else "", str(origin.loc) if origin else ""))
    return BisectReport(checked)


def _reference_value(reference: Optional[Graph], v: Value, ref: dict, shape: tuple) -> Optional[Value]:
    """The lifted value `v` stands for: same name, same shape once evaluated."""
    if reference is None or not reference.has_name(v.name) or v.name not in ref or tuple(ref[v.name].shape) != tuple(shape):
        return None
    lifted = reference.value(v.name)
    return lifted if lifted.producer is not None else None


def weights_as_exported(reference: Graph, exported: Graph,
                        exported_weights: WeightLoader = source_weights) -> WeightLoader:
    """The reference's constants as the export computes with them: a weight the export packed is
    read dequantized (in the reference's layout), so bisect does not report quantization error.
    A packed [K, N] weight stored as [N, K] is told by its shape (a square one only when its
    handle says it was transposed)."""
    packed = {v.const.label: v for v in exported.consts if v.const.encoding != "plain"}

    def load(v: Value) -> torch.Tensor:
        p = packed.get(v.const.label)
        if p is None:
            return source_weights(v)
        t = exported_weights(p)
        transposed = tuple(t.shape) != tuple(v.shape) or (
            isinstance(p.const.source, Derived) and p.const.source.what.startswith("transposed"))
        return (t.t() if transposed else t).to(v.dtype.torch)

    return load


def bisect(module: torch.nn.Module, args, *, kwargs: Optional[dict] = None, input_names=None, output_names=None,
           dynamic_axes=None, options: Optional[ExportOptions] = None, tol: Tolerance | str = DEFAULT_LEVEL,
           frontend: str = "export") -> BisectReport:
    """Export `module` (as `t2ir.export` would, to a temporary folder) and bisect the export on
    `args`: the first value whose tract result differs from PyTorch, and why.

        report = t2ir.bisect(model, (x,))
        print(report)          # "first difference: %gelu = nnef.relu (lifted as aten.gelu) at ..."
    """
    from t2ir import driver
    from t2ir.api import lift

    args = args if isinstance(args, tuple) else (args,)
    reference = lift(module, args, kwargs=kwargs, input_names=input_names, output_names=output_names,
                     dynamic_axes=dynamic_axes, frontend=frontend)
    exported = copy_graph(reference)
    run = driver.compile_graph(exported, options or ExportOptions())
    tensors = [t for t in list(args) + list((kwargs or {}).values()) if isinstance(t, torch.Tensor)]
    with tempfile.TemporaryDirectory(prefix="t2ir-bisect-") as tmp:
        path = driver.write(exported, Path(tmp) / "model", run)
        return bisect_graphs(reference, exported, path, tensors, tol=tol,
                             reference_weights=weights_as_exported(reference, exported))
