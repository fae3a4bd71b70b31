"""`t2ir dump` and `t2ir diff`: read the IR of anything t2ir writes and show what changed.

Both colour their output on a terminal and print plain text in a pipe (`--color` overrides).
"""

from __future__ import annotations

import collections
import difflib
import re
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from t2ir.cli import app, fail
from t2ir.errors import T2IRError
from t2ir.ir import Graph
from t2ir.tools.open_ir import load_ir, pass_dumps, pick_pass

PATH_HELP = "a .t2ir dump, a model (.nnef.tgz or folder), an export-llm folder, or a --dump-ir folder"


class Color(str, Enum):
    auto = "auto"
    always = "always"
    never = "never"


def console(color: Color) -> Console:
    """Colour on a terminal (or with --color always), plain text in pipes and with NO_COLOR."""
    force = {Color.always: True, Color.never: False}.get(color)
    return Console(force_terminal=force, no_color=color == Color.never, highlight=False, soft_wrap=True)


# IR text tokens and their styles, applied in order (a later rule never re-styles a styled span)
_STYLES = [
    (re.compile(r"#.*$"), "dim"),
    (re.compile(r"^(graph|symbol|input|const|output)\b"), "magenta"),
    (re.compile(r"(?<== )[A-Za-z_][\w]*(\.\w+)+(?=\()"), "bold yellow"),
    (re.compile(r"\b(f64|f32|f16|bf16|i64|i32|i16|i8|u8|bool)\[[^\]]*\]"), "green"),
    (re.compile(r"%[\w.]+"), "cyan"),
]


def styled_ir_line(line: str) -> Text:
    text = Text(line)
    taken = [False] * len(line)
    for pattern, style in _STYLES:
        for m in pattern.finditer(line):
            if not any(taken[m.start():m.end()]):
                text.stylize(style, m.start(), m.end())
                taken[m.start():m.end()] = [True] * (m.end() - m.start())
    return text


def _load(path: Path, after: Optional[str] = None) -> Graph:
    try:
        return load_ir(path, after)
    except T2IRError as e:
        fail(e)


@app.command()
def dump(path: Path = typer.Argument(..., help=PATH_HELP),
         after: Optional[str] = typer.Option(None, "--after", metavar="PASS",
                                             help="from a --dump-ir folder: the IR after this pass (name, "
                                                  "NN-name or index; default: the last)"),
         stats: bool = typer.Option(False, "--stats", help="print op counts instead of the graph"),
         color: Color = typer.Option(Color.auto, "--color", help="colour: auto (on a terminal), always, never")) -> None:
    """Print the IR of an export, a saved dump, or one pass of a --dump-ir folder (checked by parsing it)."""
    g = _load(path, after)
    out = console(color)
    if stats:
        counts = collections.Counter(n.op for n in g.nodes)
        for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            out.print(Text(f"{n:6d}  ").append(op, "yellow"))
        out.print(f"{sum(counts.values()):6d}  nodes, {len(g.consts)} constants")
        from t2ir.analysis import critical_path

        out.print(f"longest dependency chain: {len(critical_path(g))} nodes")
        return
    for line in str(g).splitlines():
        out.print(styled_ir_line(line))


def pass_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """The dumps just before and just after pass `name` in a --dump-ir folder."""
    dumps = pass_dumps(folder)
    if not dumps:
        fail(f"--pass needs a --dump-ir folder; {folder} has no NN-<pass>.t2ir dumps")
    try:
        chosen = pick_pass(dumps, name, folder)
    except T2IRError as e:
        fail(e)
    at = dumps.index(chosen)
    if at == 0:
        fail(f"{chosen.label} is the first dump: nothing ran before it")
    return dumps[at - 1].path, chosen.path


@app.command()
def diff(before: Path = typer.Argument(..., help=PATH_HELP),
         after: Optional[Path] = typer.Argument(None, help="what to compare with (omit with --pass)"),
         pass_name: Optional[str] = typer.Option(None, "--pass", metavar="PASS",
                                                 help="with one --dump-ir folder: what this pass changed"),
         text: bool = typer.Option(False, "--text", help="also print a unified diff of the IR text"),
         context: int = typer.Option(2, "--context", "-U", help="lines of context of --text"),
         color: Color = typer.Option(Color.auto, "--color", help="colour: auto (on a terminal), always, never")) -> None:
    """Show how two IRs differ: op counts before/after, then added, removed, changed and fused nodes.

    Works between two passes of one export (two dumps, or one --dump-ir folder with --pass) and
    between two exports (other versions or options)."""
    from t2ir.tools.irdiff import diff as structural_diff

    if pass_name is not None:
        if after is not None:
            fail("give one --dump-ir folder with --pass, or two IRs without it")
        before, after = pass_pair(before, pass_name)
    elif after is None:
        fail("give two IRs to compare (or one --dump-ir folder with --pass PASS)")
    a, b = _load(before), _load(after)
    d = structural_diff(a, b)
    out = console(color)
    for i, line in enumerate(d.op_table()):
        out.print(Text(line, "bold" if i == 0 else ""))
    out.print(Text(d.summary(), "bold"))
    for line in d.io_changes:
        out.print(Text(f"~ {line}", "yellow"))
    for c in sorted(d.changed, key=lambda c: not c.fused):
        fused = f"; fused {', '.join('%' + n for n in c.fused)}" if c.fused else ""
        out.print(Text(f"~ %{c.name}: {'; '.join(c.changes)}{fused}", "magenta" if c.fused else "yellow"))
    for n in d.removed:
        out.print(Text(f"- {n.line()}", "red"))
    for n in d.added:
        out.print(Text(f"+ {n.line()}", "green"))
    if text:
        lines = difflib.unified_diff(str(a).splitlines(), str(b).splitlines(), str(before), str(after),
                                     n=context, lineterm="")
        for line in lines:
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
            out.print(Text(line, style))
