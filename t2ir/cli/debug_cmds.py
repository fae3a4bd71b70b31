"""`t2ir bisect` and `t2ir view`: find where an export goes wrong, and see its graph."""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

import typer

from t2ir.checkio import DEFAULT_LEVEL, LEVELS, check_level
from t2ir.cli import app, fail
from t2ir.cli.inspect_cmds import PATH_HELP
from t2ir.errors import T2IRError
from t2ir.tools.open_ir import load_ir, locate


def _unpacked(model: Path, into: Path) -> Path:
    """The model as a folder (an archive is extracted into `into`)."""
    if model.is_dir():
        return model
    with tarfile.open(model) as tar:
        tar.extractall(into, filter="data")
    return into


def _llm_reference(out_dir: Path, model_dir: Optional[Path]):
    """The lifted graph of an export-llm folder, traced again from its model folder with the
    manifest's options (the manifest records no local paths: the folder is given, and checked
    against the manifest's file hashes)."""
    from t2ir.llm.checkpoint import open_checkpoint
    from t2ir.llm.exporter import trace_graph
    from t2ir.options import LLMExportOptions
    from t2ir.progress import Reporter

    if model_dir is None:
        fail(f"{out_dir} is an export-llm folder: give the model folder it was exported from with -d MODEL_DIR")
    manifest = json.loads((out_dir / "manifest.json").read_text())
    recorded = {k: v for k, v in manifest["options"].items() if k in LLMExportOptions.__dataclass_fields__}
    opts = LLMExportOptions(**{**recorded, "model_dir": model_dir, "out_dir": out_dir})
    ckpt = open_checkpoint(model_dir, merge_peft=opts.merge_peft)
    differ = sorted(name for name, digest in ckpt.file_hashes().items()
                    if manifest.get("inputs", {}).get(name, digest) != digest)
    if differ:
        fail(f"{model_dir} is not the model {out_dir} was exported from: {', '.join(differ)} differ(s)")
    return trace_graph(ckpt, opts, Reporter(quiet=True)).graph


@app.command()
def bisect(
    export: Path = typer.Argument(..., help="an export-llm folder, or a model (.nnef.tgz or folder) with --inputs"),
    case: str = typer.Option("prompt_with_past", "--case", help="export-llm test case whose inputs are used"),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help=".npz with one array per graph input (by name)"),
    level: str = typer.Option(DEFAULT_LEVEL, "--level", help=f"tract tolerance level: {', '.join(LEVELS)}"),
    model_dir: Optional[Path] = typer.Option(None, "-d", "--model-dir",
                                             help="export-llm folders: the model folder it was exported from"),
) -> None:
    """Run the export in tract with every intermediate value exposed, and report the first value that
    differs from PyTorch (export-llm folders: the model of -d traced again with the manifest's
    options) or from what t2ir means by the exported ops, with its source location."""
    import numpy as np

    from t2ir.ops.builtins import ensure_registered
    from t2ir.tools.bisect import bisect_graphs, dat_weights, weights_as_exported

    try:
        check_level(level)
    except ValueError as e:
        fail(e)
    ensure_registered()
    llm = (export / "manifest.json").exists()
    npz = inputs or (export / "tests" / f"{case}_io.npz")
    if not npz.exists():
        fail(f"{npz} does not exist: give --inputs NPZ (or --case with an export-llm folder)")
    try:
        exported = load_ir(export)
        model = locate(export)[0]
        model = model.parent if model.name == "graph.t2ir" else model
        with np.load(npz) as z:
            data = {k: z[k] for k in z.files}
        missing = [v.name for v in exported.inputs if v.name not in data]
        if missing:
            fail(f"{npz} has no array for input(s) {', '.join(missing)}")
        feeds = [data[v.name] for v in exported.inputs]
        with tempfile.TemporaryDirectory(prefix="t2ir-bisect-") as tmp:
            folder = _unpacked(model, Path(tmp) / "model")
            weights = dat_weights(folder, exported)
            reference = _llm_reference(export, model_dir) if llm else None
            report = bisect_graphs(reference, exported, folder, feeds, tol=level, exported_weights=weights,
                                   reference_weights=weights_as_exported(reference, exported, weights)
                                   if llm else weights)
    except T2IRError as e:
        fail(e)
    typer.echo(str(report))
    if report.first is not None:
        raise typer.Exit(1)


@app.command()
def view(
    path: Path = typer.Argument(..., help=PATH_HELP),
    after: Optional[str] = typer.Option(None, "--after", metavar="PASS", help="from a --dump-ir folder: this pass"),
    diff_with: Optional[Path] = typer.Option(None, "--diff", metavar="OTHER", help="show PATH and OTHER side by side, "
                                              "coloured by what was added, removed, changed or fused"),
    pass_name: Optional[str] = typer.Option(None, "--pass", metavar="PASS",
                                            help="with a --dump-ir folder: what this pass changed"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="where to write the page (default: a temp file)"),
    no_open: bool = typer.Option(False, "--no-open", help="write the page without opening a browser"),
) -> None:
    """Open the IR as a graph in the browser (one self-contained HTML page): nodes grouped by module
    path; with --diff or --pass, two graphs coloured by what changed."""
    from t2ir.cli.inspect_cmds import pass_pair
    from t2ir.tools.irdiff import diff
    from t2ir.tools.view import render_diff_html, render_html

    try:
        if pass_name is not None:
            before, after_path = pass_pair(path, pass_name)
            a, b = load_ir(before), load_ir(after_path)
            page = render_diff_html(a, b, diff(a, b), before.stem, after_path.stem)
        elif diff_with is not None:
            a, b = load_ir(path, after), load_ir(diff_with)
            page = render_diff_html(a, b, diff(a, b), str(path), str(diff_with))
        else:
            page = render_html(load_ir(path, after), f"{path}" + (f" after {after}" if after else ""))
    except T2IRError as e:
        fail(e)
    if output is None:
        output = Path(tempfile.mkstemp(prefix="t2ir-view-", suffix=".html")[1])
    output.write_text(page, encoding="utf-8")
    typer.echo(f"wrote {output}")
    if not no_open:
        import webbrowser

        webbrowser.open(output.resolve().as_uri())
