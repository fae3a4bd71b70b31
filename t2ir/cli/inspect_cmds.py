"""`t2ir dump` and `t2ir diff`: read IR dumps and exported models, show what changed."""

from __future__ import annotations

import collections
import difflib
import sys
import tarfile
from pathlib import Path

import typer

from t2ir.cli import app, fail
from t2ir.emitters.archive import read_member
from t2ir.emitters.layout import ARCHIVE_SUFFIXES, IR_DUMP_NAME
from t2ir.errors import T2IRError
from t2ir.parser import IRParseError, parse_ir


def read_ir_text(path: Path) -> str:
    """IR text from a `.t2ir` dump, an exported folder, or an exported `.tgz`."""
    if not path.exists():
        raise T2IRError(f"{path} does not exist")
    if path.is_dir():
        dump = path / IR_DUMP_NAME
        if not dump.exists():
            raise T2IRError(f"{path} has no {IR_DUMP_NAME}: was it exported by t2ir?")
        return dump.read_text()
    if path.name.endswith(ARCHIVE_SUFFIXES) or tarfile.is_tarfile(path):
        data = read_member(path, IR_DUMP_NAME)
        if data is None:
            raise T2IRError(f"{path} has no {IR_DUMP_NAME}: was it exported by t2ir?")
        return _decoded(data, path)
    return _decoded(path.read_bytes(), path)


def _decoded(data: bytes, path: Path) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise T2IRError(f"{path} is not IR text (byte {e.start} is not UTF-8): pass a .t2ir dump, "
                        "an exported folder or .nnef.tgz") from None


def _load(path: Path):
    try:
        text = read_ir_text(path)
    except OSError as e:
        raise T2IRError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return parse_ir(text)
    except IRParseError as e:
        raise T2IRError(f"{path}:{e}") from None


@app.command()
def dump(path: Path = typer.Argument(..., help="a .t2ir dump, an exported folder or .nnef.tgz"),
         stats: bool = typer.Option(False, "--stats", help="print op counts instead of the graph")) -> None:
    """Print the IR of an exported model or of a saved dump (checked by parsing it)."""
    try:
        g = _load(path)
    except T2IRError as e:
        fail(e)
    if stats:
        counts = collections.Counter(n.op for n in g.nodes)
        for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            typer.echo(f"{n:6d}  {op}")
        typer.echo(f"{sum(counts.values()):6d}  nodes, {len(g.consts)} constants")
        from t2ir.analysis import critical_path

        typer.echo(f"longest dependency chain: {len(critical_path(g))} nodes")
    else:
        sys.stdout.write(str(g))


@app.command()
def diff(before: Path, after: Path,
         context: int = typer.Option(2, "--context", "-U", help="lines of context")) -> None:
    """Show how two IR dumps differ: op counts, then a unified diff of the text."""
    try:
        a, b = _load(before), _load(after)
    except T2IRError as e:
        fail(e)
    ca, cb = collections.Counter(n.op for n in a.nodes), collections.Counter(n.op for n in b.nodes)
    for op in sorted(set(ca) | set(cb)):
        if ca[op] != cb[op]:
            typer.echo(f"{op}: {ca[op]} -> {cb[op]}")
    lines = difflib.unified_diff(str(a).splitlines(), str(b).splitlines(), str(before), str(after),
                                 n=context, lineterm="")
    for line in lines:
        typer.echo(line)
