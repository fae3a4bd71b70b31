"""`t2ir.export`: any torch.nn.Module to an NNEF model for tract."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from t2ir.compression.report import QuantReport
from t2ir.errors import ExportError, Problem
from t2ir.ir import Graph
from t2ir.options import ExportOptions
from t2ir.passes.pack_weights import quant_report_of
from t2ir.passes.pipeline import PassRecord, run_pipeline


def _ensure_registered() -> None:
    import t2ir.ops.aten  # noqa: F401  (registers built-in translations)
    import t2ir.ops.nnef_ops  # noqa: F401
    import t2ir.ops.transformer  # noqa: F401  (t2ir.rms_norm, t2ir.rope, t2ir.silu)


@dataclass
class ExportResult:
    path: Path
    graph: Graph
    passes: list[PassRecord] = field(default_factory=list)
    check: Optional[list] = None
    quant_report: Optional[QuantReport] = None  # with options.compression; also saved beside `path`


def forward_arg_names(module: torch.nn.Module, n: int, kwargs: Mapping[str, Any]) -> list[str]:
    params = list(inspect.signature(module.forward).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < n:
        positional += [f"input_{i}" for i in range(len(positional), n)]
    return positional[:n] + list(kwargs)


def normalize_dynamic_axes(dynamic_axes, names: Sequence[str], examples: Sequence[torch.Tensor]) -> dict[tuple[int, int], str]:
    """torch.onnx style `{"x": {0: "batch"}}` / `{"x": [0]}` -> {(input index, axis): symbol}."""
    out: dict[tuple[int, int], str] = {}
    problems = []
    for name, axes in (dynamic_axes or {}).items():
        if name not in names:
            problems.append(Problem(f"dynamic_axes names {name!r}, which is not an input",
                                    hint=f"inputs are: {', '.join(names)}"))
            continue
        i = list(names).index(name)
        if isinstance(axes, (list, tuple)):
            axes = {a: f"{name}_dim{a}" for a in axes}
        t = examples[i]
        for axis, sym in axes.items():
            if not isinstance(t, torch.Tensor) or not -t.dim() <= axis < t.dim():
                problems.append(Problem(f"dynamic axis {axis} of input {name!r} does not exist"))
                continue
            axis %= t.dim()
            if t.shape[axis] < 2:
                problems.append(Problem(
                    f"input {name!r} has size {t.shape[axis]} on dynamic axis {axis} ({sym})",
                    hint="trace with an example size of at least 2 on every dynamic axis "
                         "(torch.export specialises sizes 0 and 1); the export still runs with any size"))
            if not str(sym).isidentifier():
                problems.append(Problem(f"symbol name {sym!r} is not an identifier", hint="use names like 'batch' or 'S'"))
            out[(i, axis)] = str(sym)
    if problems:
        raise ExportError("invalid dynamic_axes:", problems)
    return out


def trace_with_torch_export(module, args, kwargs, names, dims) -> torch.export.ExportedProgram:
    """Trace with every dynamic axis marked `Dim.DYNAMIC` (like torch.onnx): torch may then
    refine an axis's range (`L >= 3` after a conv) instead of refusing the export; an axis it
    had to specialise to a constant is reported by `check_still_dynamic`."""
    shapes: dict[str, Any] = {}
    examples = list(args) + list(kwargs.values())
    for i, name in enumerate(names):
        spec = {axis: torch.export.Dim.DYNAMIC for (j, axis), sym in dims.items() if j == i}
        shapes[name] = spec or None if isinstance(examples[i], torch.Tensor) else None
    params = list(inspect.signature(module.forward).parameters)
    if any(n not in params for n in names):  # *args forwards: positional specs
        shapes = tuple(shapes[n] for n in names)
    try:
        ep = torch.export.export(module, tuple(args), kwargs=dict(kwargs), dynamic_shapes=shapes, strict=False)
    except Exception as e:  # torch's own messages are long: keep what, where and what to do
        from t2ir.frontend.fx import trace_error_problems

        raise ExportError("torch.export could not trace the model:", trace_error_problems(e)) from None
    check_still_dynamic(ep, names, dims)
    return ep


def check_still_dynamic(ep: torch.export.ExportedProgram, names: Sequence[str], dims) -> None:
    """Every axis the user declared dynamic must still be symbolic after tracing."""
    from torch.export.graph_signature import InputKind

    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    vals = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    problems = []
    for (i, axis), sym in dims.items():
        val = vals.get(user[i]) if i < len(user) else None
        if isinstance(val, torch.Tensor) and isinstance(val.shape[axis], int):
            problems.append(Problem(
                f"dynamic axis {axis} ({sym}) of input {names[i]!r} was specialised to {val.shape[axis]} "
                "by the model's code", hint="the model only works for that size on this axis "
                "(e.g. a reshape to a fixed size); make the axis static or change the model"))
    if problems:
        raise ExportError("torch.export could not keep every dynamic axis symbolic:", problems)


def lift(module: torch.nn.Module, args: tuple, *, kwargs=None, input_names=None, output_names=None,
         dynamic_axes=None, frontend: str = "export") -> Graph:
    """Trace `module` and lift it into the IR (no passes)."""
    _ensure_registered()
    from t2ir.frontend.fx import lift_exported_program

    kwargs = dict(kwargs or {})
    args = args if isinstance(args, tuple) else (args,)
    module = module.eval()
    arg_names = forward_arg_names(module, len(args), kwargs)  # what torch.export keys shapes by
    names = list(input_names or arg_names)
    dims = normalize_dynamic_axes(dynamic_axes, names, list(args) + list(kwargs.values()))
    if frontend == "export":
        ep = trace_with_torch_export(module, args, kwargs, arg_names, dims)
    elif frontend == "jit":
        from t2ir.frontend.jit import export_via_jit

        ep = export_via_jit(module, args, dims)
    else:
        raise ValueError(f"unknown frontend {frontend!r}: use 'export' or 'jit'")
    return lift_exported_program(ep, input_names=names, output_names=output_names, dim_names=dims)


def export(module: torch.nn.Module, args, path, *, kwargs: Optional[dict] = None,
           input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None,
           dynamic_axes: Optional[dict] = None, dump_ir: Optional[str | Path] = None,
           check_io: bool = False, atol: float = 1e-4, frontend: str = "export",
           options: Optional[ExportOptions] = None, overwrite: bool = False) -> ExportResult:
    """Export `module` called on `args` to an NNEF model at `path` (a folder, or `.nnef.tgz`).

    Follows torch.onnx's conventions: `input_names`/`output_names` name the graph's inputs and
    outputs, `dynamic_axes={"x": {0: "batch"}}` makes axis 0 of input `x` a tract symbol.

        >>> t2ir.export(torch.nn.Linear(4, 2), (torch.randn(3, 4),), "lin.nnef.tgz",
        ...             input_names=["x"], dynamic_axes={"x": {0: "batch"}}, check_io=True)
    """
    from t2ir.emitters.writer import write_model

    options = options or ExportOptions()
    args = args if isinstance(args, tuple) else (args,)
    graph = lift(module, args, kwargs=kwargs, input_names=input_names, output_names=output_names,
                 dynamic_axes=dynamic_axes, frontend=frontend)
    records = run_pipeline(graph, options, dump_dir=Path(dump_ir) if dump_ir else None)
    report = quant_report_of(records)
    path = write_model(graph, path, overwrite=overwrite, report=report)
    if report is not None:
        report.print()
    result = ExportResult(Path(path), graph, records, quant_report=report)
    if check_io:
        result.check = check_exported(path, module, args, kwargs or {}, graph, atol, report)
    return result


def check_exported(path, module, args, kwargs, graph: Graph, atol: float,
                   report: Optional[QuantReport] = None):
    """Run the export in tract on the example inputs and compare with PyTorch (run with the
    packed weights' dequantized values when a compression `report` is given)."""
    from t2ir.compression.methods import reference_weights
    from t2ir.tract_run import check_close, compare_outputs, load_runnable, run_tract

    swapped = reference_weights(module, report) if report is not None else {}
    with torch.no_grad():
        want = torch.func.functional_call(module, swapped, tuple(args), dict(kwargs))
    want = [t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
            for t in torch.utils._pytree.tree_leaves(want) if isinstance(t, torch.Tensor)]
    tensors = [t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)]
    # tract takes each input in the graph's dtype (a bf16 model's inputs are f16 after export)
    inputs = [t.detach().to(v.dtype.torch).numpy() for t, v in zip(tensors, graph.inputs)]
    got = run_tract(load_runnable(path), inputs)
    comparisons = compare_outputs([v.name for v in graph.outputs], got, want)
    check_close(comparisons, atol)
    return comparisons
