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
from t2ir.errors import CheckIOError, ExportError, Problem, TranslationRefusedError
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
    source_ops: list[str] = field(default_factory=list)  # the ops the model traced to (after decomposition)


def _check_names(names: Optional[Sequence[str]], what: str) -> None:
    problems = []
    for n in names or ():
        try:
            check_name(n, f"{what} name")
        except InvalidNameError as e:
            problems.append(Problem(str(e), hint=f"rename the {what} (e.g. {'_'.join(str(n).split('-'))!r})"))
    if problems:
        raise ExportError(f"invalid {what} names:", problems)


@dataclass
class Traced:
    """A traced model, before lifting: the program torch.export made (from a module, a
    TorchScript module, or given as it is), its input names and the symbols of its dynamic axes."""

    program: torch.export.ExportedProgram
    input_names: list[str]
    output_names: Optional[Sequence[str]]
    dims: dict[tuple[int, int], str]

    def lift(self, decompose: Sequence = ()) -> Graph:
        """The IR graph; ops in `decompose` are decomposed even though they have a translation
        (their translator refused some of their calls)."""
        from t2ir.frontend.decompose import decompose_untranslated
        from t2ir.frontend.fx import lift_exported_program

        program = decompose_untranslated(self.program, extra=decompose)
        return lift_exported_program(program, input_names=self.input_names, output_names=self.output_names,
                                     dim_names=self.dims)


def trace(module, args: tuple = (), *, kwargs=None, input_names=None, output_names=None, dynamic_axes=None,
          frontend: Optional[str] = None) -> Traced:
    """Trace `module` with the frontend its kind calls for: torch.export for an nn.Module, the
    TorchScript frontend for a ScriptModule (traced, scripted or loaded), none for an
    ExportedProgram (it is traced already)."""
    from t2ir.frontend.trace import forward_arg_names, normalize_dynamic_axes, trace_with_torch_export

    ensure_registered()
    _check_names(input_names, "input")
    _check_names(output_names, "output")
    kwargs = dict(kwargs or {})
    args = args if isinstance(args, tuple) else (args,)
    if frontend not in (None, "export", "jit"):
        raise ValueError(f"unknown frontend {frontend!r}: use 'export' or 'jit'")
    if isinstance(module, torch.export.ExportedProgram):
        from t2ir.frontend.program import program_inputs

        names, dims = program_inputs(module, input_names, dynamic_axes)
        return Traced(module, names, output_names, dims)
    if isinstance(module, torch.jit.ScriptModule):
        frontend = "jit"
    try:
        module.eval()
    except NotImplementedError:  # ExportedProgram.module() has no train/eval modes: inference as it is
        pass
    arg_names = forward_arg_names(module, len(args), kwargs)  # what torch.export keys shapes by
    names = list(input_names or arg_names)
    dims = normalize_dynamic_axes(dynamic_axes, names, list(args) + list(kwargs.values()))
    if frontend == "jit":
        from t2ir.frontend.jit import export_via_jit

        ep = export_via_jit(module, args, kwargs, dims, names)
    else:
        ep = trace_with_torch_export(module, args, kwargs, arg_names, dims)
    return Traced(ep, names, output_names, dims)


def lift(module, args: tuple = (), *, kwargs=None, input_names=None, output_names=None,
         dynamic_axes=None, frontend: Optional[str] = None) -> Graph:
    """Trace `module` and lift it into the IR (no passes)."""
    return trace(module, args, kwargs=kwargs, input_names=input_names, output_names=output_names,
                 dynamic_axes=dynamic_axes, frontend=frontend).lift()


def compile_traced(traced: Traced, options: ExportOptions, checker: Optional[PassChecker] = None):
    """Lift and run the passes. Ops whose translator refuses some calls (an adaptive pool that
    does not divide evenly, say) are decomposed by torch and compiled again, until no refused
    op is left that torch can decompose. When the pieces are refused too, the error names the
    op the model called. A `checker` checks the numerics after each pass of the last attempt."""
    from t2ir.frontend.decompose import decomposable_ops

    decomposed: list = []
    first: Optional[TranslationRefusedError] = None
    while True:
        graph = traced.lift(decompose=decomposed)
        source_ops = sorted({n.op for n in graph.nodes})
        if checker is not None:
            checker.checks.clear()
        try:
            return graph, driver.compile_graph(graph, options, checker=checker), source_ops
        except TranslationRefusedError as e:
            first = first or e
            more = [op for op in decomposable_ops(e.refused) if op not in decomposed]
            if not more:
                raise _as_called(e, first) from None
            decomposed += more


def _as_called(last: TranslationRefusedError, first: TranslationRefusedError) -> TranslationRefusedError:
    """`last`'s problems, each replaced by the first error's problem at the same place (a
    decomposed op's pieces keep its source line): `aten.matmul` rather than its `aten.mm`."""
    if last is first:
        return last
    at = {p.loc: p for p in first.problems if p.loc}
    problems: list[Problem] = []
    for p in last.problems:
        q = at.get(p.loc, p) if p.loc else p
        if q not in problems:
            problems.append(q)
    return TranslationRefusedError(last.title, problems, {p.op for p in problems})


def export(module, args, path, *, kwargs: Optional[dict] = None,
           input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None,
           dynamic_axes: Optional[dict] = None, dump_ir: Optional[str | Path] = None,
           check_io: bool | str = False, atol: Optional[float] = None, rtol: Optional[float] = None,
           frontend: Optional[str] = None, options: Optional[ExportOptions] = None,
           overwrite: bool = False, check_passes: bool = False) -> ExportResult:
    """Export `module` called on `args` to an NNEF model at `path` (a folder, or `.nnef.tgz`).

    `module` is an nn.Module (traced with torch.export), a TorchScript module (traced,
    scripted or from `torch.jit.load`) or an ExportedProgram (`torch.export.export` /
    `torch.export.load`; `args` may then be None: they default to its example inputs).
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
    args = () if args is None else args if isinstance(args, tuple) else (args,)
    traced = trace(module, args, kwargs=kwargs, input_names=input_names, output_names=output_names,
                   dynamic_axes=dynamic_axes, frontend=frontend)
    if isinstance(module, torch.export.ExportedProgram) and (tol is not None or options.check_passes):
        # checked against the program's own module, on its example inputs when none are given
        from t2ir.frontend.program import example_inputs

        args, kwargs = example_inputs(module, args, kwargs)
        module = module.module()
    checker = _pass_checker(module, args, kwargs or {}, tol or options.check_io) if options.check_passes else None
    graph, run, source_ops = compile_traced(traced, options, checker)
    report = driver.quant_report(run)
    path = driver.write(graph, path, run, overwrite=options.overwrite)
    if report is not None:
        report.print()
    result = ExportResult(Path(path), graph, run.records, quant_report=report, op_report=run.op_report(graph),
                          pass_checks=checker.checks if checker is not None else [], source_ops=source_ops)
    if tol is not None:
        result.check = check_exported(path, module, args, kwargs or {}, graph, tol, report)
    return result


def _eager(module, args, kwargs, params=None) -> list:
    """The module's outputs (flattened tensors, bf16 as f32) as numpy arrays."""
    with torch.no_grad():  # a TorchScript module has no functional_call: called as it is without params
        out = torch.func.functional_call(module, params, tuple(args), dict(kwargs)) if params \
            else module(*args, **kwargs)
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
