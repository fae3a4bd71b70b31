"""`t2ir.export`: any torch.nn.Module to an NNEF model for tract."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from t2ir import driver
from t2ir.checkio import DEFAULT_LEVEL, OutputCheck, describe_failures, failures
from t2ir.compression.report import QuantReport
from t2ir.errors import CheckIOError, ExportError, Problem
from t2ir.ir import Graph, InvalidNameError, check_name
from t2ir.ops.builtins import ensure_registered
from t2ir.options import ExportOptions
from t2ir.passcheck import PassCheck, PassChecker
from t2ir.passes.op_report import OpReport
from t2ir.passes.pipeline import PassRecord


@dataclass
class ExportResult:
    path: Path
    graph: Graph
    passes: list[PassRecord] = field(default_factory=list)
    check: Optional[list[OutputCheck]] = None
    quant_report: Optional[QuantReport] = None  # with options.compression; also saved beside `path`
    op_report: Optional[OpReport] = None        # each final op: how many nodes, which passes made them
    pass_checks: list[PassCheck] = field(default_factory=list)  # with check_passes: per pass, the max |diff|


def _check_names(names: Optional[Sequence[str]], what: str) -> None:
    problems = []
    for n in names or ():
        try:
            check_name(n, f"{what} name")
        except InvalidNameError as e:
            problems.append(Problem(str(e), hint=f"rename the {what} (e.g. {'_'.join(str(n).split('-'))!r})"))
    if problems:
        raise ExportError(f"invalid {what} names:", problems)


def lift(module: torch.nn.Module, args: tuple, *, kwargs=None, input_names=None, output_names=None,
         dynamic_axes=None, frontend: str = "export") -> Graph:
    """Trace `module` and lift it into the IR (no passes)."""
    from t2ir.frontend.fx import lift_exported_program
    from t2ir.frontend.trace import forward_arg_names, normalize_dynamic_axes, trace_with_torch_export

    ensure_registered()
    _check_names(input_names, "input")
    _check_names(output_names, "output")
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
           check_io: bool | str = False, atol: Optional[float] = None, rtol: Optional[float] = None,
           frontend: str = "export", options: Optional[ExportOptions] = None,
           overwrite: bool = False, check_passes: bool = False) -> ExportResult:
    """Export `module` called on `args` to an NNEF model at `path` (a folder, or `.nnef.tgz`).

    Follows torch.onnx's conventions: `input_names`/`output_names` name the graph's inputs and
    outputs, `dynamic_axes={"x": {0: "batch"}}` makes axis 0 of input `x` a tract symbol.
    `check_io` runs the export in tract on `args` and compares with PyTorch: True uses tract's
    "approximate" level; a level name ("close", "very", "ultra", ...) picks another; `atol` /
    `rtol` set custom numbers. A failed check raises CheckIOError (the model stays written).
    `check_passes` evaluates the graph after lifting and after every pass with the reference
    interpreter on `args` and compares with the module's outputs (at the `check_io` level, default
    "approximate"); the first pass beyond it raises PassNumericsError, naming it.

        >>> t2ir.export(torch.nn.Linear(4, 2), (torch.randn(3, 4),), "lin.nnef.tgz",
        ...             input_names=["x"], dynamic_axes={"x": {0: "batch"}}, check_io=True)
    """
    options = options or ExportOptions()
    options = dataclasses.replace(options, overwrite=overwrite or options.overwrite,
                                  dump_ir=Path(dump_ir) if dump_ir else options.dump_ir,
                                  check_io=check_io if isinstance(check_io, str) else options.check_io,
                                  check_passes=check_passes or options.check_passes)
    tol = driver.resolve_tolerance(check_io or options.check_io, atol, rtol)
    args = args if isinstance(args, tuple) else (args,)
    graph = lift(module, args, kwargs=kwargs, input_names=input_names, output_names=output_names,
                 dynamic_axes=dynamic_axes, frontend=frontend)
    checker = _pass_checker(module, args, kwargs or {}, tol or options.check_io) if options.check_passes else None
    run = driver.compile_graph(graph, options, checker=checker)
    report = driver.quant_report(run)
    path = driver.write(graph, path, run, overwrite=options.overwrite)
    if report is not None:
        report.print()
    result = ExportResult(Path(path), graph, run.records, quant_report=report, op_report=run.op_report(graph),
                          pass_checks=checker.checks if checker is not None else [])
    if tol is not None:
        result.check = check_exported(path, module, args, kwargs or {}, graph, tol, report)
    return result


def _eager(module, args, kwargs, params=None) -> list:
    """The module's outputs (flattened tensors, bf16 as f32) as numpy arrays."""
    with torch.no_grad():
        out = torch.func.functional_call(module, params or {}, tuple(args), dict(kwargs))
    return [t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
            for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _pass_checker(module, args, kwargs, tol) -> PassChecker:
    tensors = [t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)]
    return PassChecker(tensors, _eager(module, args, kwargs), tol or DEFAULT_LEVEL)


def check_exported(path, module, args, kwargs, graph: Graph, tol, report: Optional[QuantReport] = None):
    """Run the export in tract on the example inputs and compare with PyTorch (run with the
    packed weights' dequantized values when a compression `report` is given)."""
    from t2ir.compression.methods import reference_weights

    want = _eager(module, args, kwargs, reference_weights(module, report) if report is not None else {})
    tensors = [t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)]
    # tract takes each input in the graph's dtype (a bf16 model's inputs are f16 after export)
    inputs = [t.detach().to(v.dtype.torch).numpy() for t, v in zip(tensors, graph.inputs)]
    names = [v.name for v in graph.outputs]
    checks = driver.check(path, names, [driver.Run("example", inputs, dict(zip(names, want)))], tol)
    if failures(checks):
        raise CheckIOError(describe_failures(checks, "check the model in eager mode, or loosen check_io "
                                                     "(a looser tract level, or atol=/rtol=)"))
    return checks
