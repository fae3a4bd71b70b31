"""The `t2ir` command line: one typer app, one module per group of commands."""

from __future__ import annotations

import atexit
import os
import sys

import typer

app = typer.Typer(
    name="t2ir",
    help="Compile PyTorch models to NNEF for the tract inference engine, and inspect the IR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(msg: object, code: int = 2) -> None:
    """One line on stderr and a non-zero exit: the CLI's only way to report an error."""
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _register() -> None:
    from t2ir.cli import debug_cmds, export_cmds, inspect_cmds  # noqa: F401

    from t2ir.cli import export_llm_cmd, llm_cmds  # noqa: F401


def main() -> None:
    _register()
    app()


def entry() -> None:
    """The `t2ir` console script: `main`, then an exit that skips the interpreter's teardown.
    Once torch and transformers are loaded, freeing their modules at exit takes over a second
    after the work is done (1.1 s of a 15 s LLM export here); exit handlers still run and the
    output is flushed first. Code that calls `main` itself keeps the ordinary exit."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    if isinstance(code, str):  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
