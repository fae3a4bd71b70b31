"""The `t2ir` command line: one typer app, one module per group of commands."""

from __future__ import annotations

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
