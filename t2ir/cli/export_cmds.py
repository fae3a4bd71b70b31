"""`t2ir export`: a saved ExportedProgram (.pt2) or TorchScript file to an NNEF model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from t2ir.checkio import LEVELS
from t2ir.cli import app, fail
from t2ir.errors import CheckIOError, T2IRError

_INPUT = re.compile(r"^(?P<name>[A-Za-z_]\w*)=(?P<shape>\d+(?:[,x]\d+)*|)(?::(?P<dtype>\w+))?$")
_AXES = re.compile(r"^(?P<name>[A-Za-z_]\w*):(?P<axes>.+)$")


def parse_inputs(specs: list[str]) -> list[tuple[str, list[int], str]]:
    """`x=1,3,224,224` / `ids=1x8:i64` -> (name, shape, dtype)."""
    out = []
    for spec in specs:
        m = _INPUT.match(spec)
        if m is None:
            raise T2IRError(f"--input {spec!r}: write NAME=D0,D1,...[:DTYPE], e.g. x=1,3,224,224 or ids=1,8:i64")
        shape = [int(d) for d in re.split("[,x]", m["shape"]) if d]
        out.append((m["name"], shape, m["dtype"] or "f32"))
    return out


def parse_dynamic_axes(specs: list[str]) -> dict[str, dict[int, str]]:
    """`x:0=batch,2=T` or `x:0,2` (torch.onnx's automatic names, `x_dim0`) -> {"x": {0: "batch", ...}}."""
    out: dict[str, dict[int, str]] = {}
    for spec in specs:
        m = _AXES.match(spec)
        if m is None:
            raise T2IRError(f"--dynamic-axes {spec!r}: write NAME:AXIS=SYMBOL[,AXIS=SYMBOL], e.g. x:0=batch")
        for part in m["axes"].split(","):
            axis, _, sym = part.partition("=")
            try:
                out.setdefault(m["name"], {})[int(axis)] = sym or f"{m['name']}_dim{int(axis)}"
            except ValueError:
                raise T2IRError(f"--dynamic-axes {spec!r}: {axis!r} is not an axis number") from None
    return out


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


@app.command("export")
def export_cmd(
    model: Path = typer.Argument(..., help=".pt2 (torch.export.save) or TorchScript file (torch.jit.save)"),
    output: Path = typer.Option(..., "-o", "--output", help="output folder, or a .nnef.tgz file"),
    input: list[str] = typer.Option([], "--input", metavar="NAME=SHAPE[:DTYPE]",
                                    help="an example input, e.g. x=1,3,224,224 or ids=1,8:i64 (repeat per input); "
                                         "a .pt2 defaults to the inputs it was exported with"),
    input_names: Optional[str] = typer.Option(None, "--input-names", help="graph input names, comma-separated"),
    output_names: Optional[str] = typer.Option(None, "--output-names", help="graph output names, comma-separated"),
    dynamic_axes: list[str] = typer.Option([], "--dynamic-axes", metavar="NAME:AXIS=SYMBOL",
                                           help="make an axis a tract symbol, e.g. x:0=batch (repeatable)"),
    check_io: Optional[str] = typer.Option(None, "--check-io", metavar="LEVEL",
                                           help=f"run the export in tract and compare: {', '.join(LEVELS)}"),
    atol: Optional[float] = typer.Option(None, "--atol", help="custom tolerance for --check-io (with --rtol)"),
    rtol: Optional[float] = typer.Option(None, "--rtol", help="custom relative tolerance for --check-io"),
    dump_ir: Optional[Path] = typer.Option(None, "--dump-ir", help="write the IR after every pass here"),
    force: bool = typer.Option(False, "--force", help="replace an existing output"),
) -> None:
    """Export a saved ExportedProgram or TorchScript module to an NNEF model for tract."""
    from t2ir.api import export
    from t2ir.frontend.files import load_model_file, make_inputs, program_example_inputs

    try:
        if check_io is not None and check_io not in LEVELS:
            raise T2IRError(f"--check-io {check_io!r}: use one of {', '.join(LEVELS)} (strictest first)")
        loaded = load_model_file(model)
        import torch

        args = make_inputs(parse_inputs(input)) if input else None
        if args is None and isinstance(loaded, torch.export.ExportedProgram):
            args = program_example_inputs(loaded)
        if args is None:
            raise T2IRError("a TorchScript file needs example inputs: pass --input NAME=SHAPE[:DTYPE] for each input")
        names = _names(input_names) or ([n for n, _, _ in parse_inputs(input)] if input else None)
        result = export(loaded, args, output, input_names=names, output_names=_names(output_names),
                             dynamic_axes=parse_dynamic_axes(dynamic_axes) or None, dump_ir=dump_ir,
                             check_io=check_io or (atol is not None or rtol is not None), atol=atol, rtol=rtol,
                             overwrite=force)
    except CheckIOError as e:  # the model is written; its numbers are off
        fail(e, code=1)
    except T2IRError as e:
        fail(e)
    typer.echo(f"exported to {result.path}")
    graph = result.graph
    typer.echo("inputs: " + ", ".join(f"{v.name} {v.type}" for v in graph.inputs))
    typer.echo("outputs: " + ", ".join(f"{v.name} {v.type}" for v in graph.outputs))
    for check in result.check or []:
        typer.echo(f"check {check.output}: max |diff| {check.max_abs_diff:.3g} ({check.tolerance})")
