"""The export driver `t2ir.export` and `t2ir export-llm` share: run the passes, write the model
(streaming weights, completing the quantization report), check it in tract."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from t2ir.checkio import DEFAULT_LEVEL, OutputCheck, Tolerance, compare, custom
from t2ir.compression.report import QuantReport
from t2ir.emitters.writer import write_model
from t2ir.errors import T2IRError
from t2ir.ir import Graph
from t2ir.ops.builtins import ensure_registered
from t2ir.options import ExportOptions
from t2ir.passes.pack_weights import QUANT_REPORT
from t2ir.passcheck import PassChecker
from t2ir.passes.pipeline import PipelineRun, run_pipeline
from t2ir.tract_run import load_runnable, run_tract


def compile_graph(graph: Graph, options: ExportOptions, *, on_pass: Optional[Callable[[str], None]] = None,
                  checker: Optional[PassChecker] = None) -> PipelineRun:
    """Run the passes the options enable (dumping the IR after each with `options.dump_ir`);
    a `checker` evaluates the graph after lifting and after every pass (`check_passes`)."""
    ensure_registered()
    if options.dump_ir is not None:
        try:
            Path(options.dump_ir).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise T2IRError(f"cannot write the IR dumps to {options.dump_ir}: {e.strerror or e}") from None
    if checker is not None:
        checker.check("lift", graph)
    return run_pipeline(graph, options, dump_dir=options.dump_ir, on_pass=on_pass,
                        after_pass=checker.after_pass if checker is not None else None)


def quant_report(run: PipelineRun) -> Optional[QuantReport]:
    return run.artifacts.get(QUANT_REPORT)


def write(graph: Graph, path: Path | str, run: PipelineRun, *, overwrite: bool = False,
          progress: Optional[Callable[[str, int], None]] = None) -> Path:
    """Write the compiled graph (atomically); a compression report is completed on the way."""
    return write_model(graph, path, overwrite=overwrite, progress=progress, report=quant_report(run))


def resolve_tolerance(check_io: bool | str | None, atol: Optional[float] = None,
                      rtol: Optional[float] = None) -> Optional[Tolerance | str]:
    """What to compare with: None (no check), a tract level name, or custom atol/rtol."""
    if not check_io:
        return None
    if atol is not None or rtol is not None:
        return custom(atol or 0.0, rtol or 0.0)
    return DEFAULT_LEVEL if check_io is True else str(check_io)


@dataclass
class Run:
    """One call of the exported model: its inputs in graph order and the outputs PyTorch gave."""

    case: str
    inputs: Sequence[np.ndarray]
    expected: dict[str, np.ndarray]


def check(model_path: Path | str, output_names: Sequence[str], runs: Iterable[Run],
          tol: Tolerance | str) -> list[OutputCheck]:
    """Run each case in tract and compare every output with PyTorch's, at `tol`."""
    runnable = load_runnable(model_path)
    checks = []
    for run in runs:
        got = run_tract(runnable, run.inputs)
        for name, g in zip(output_names, got):
            checks.append(compare(name, g, run.expected[name], tol, case=run.case))
    return checks
