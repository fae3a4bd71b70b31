"""Progress output: rich bars on a terminal, plain lines in pipes, nothing when quiet."""

import io

from t2ir.progress import Reporter


def run(reporter: Reporter) -> None:
    with reporter.phase("write", total=3):
        for name in "abc":
            reporter.advance(name)
    reporter.line("summary")


def test_plain_lines_in_a_pipe():
    out = io.StringIO()
    run(Reporter(stream=out))
    lines = out.getvalue().splitlines()
    assert lines[0] == "write ..." and lines[1].startswith("write: done in") and lines[2] == "summary"


def test_rich_bars_on_a_terminal():
    out = io.StringIO()
    reporter = Reporter(stream=out, rich=True)
    run(reporter)
    text = out.getvalue()
    assert "3/3" in text and "\x1b[" in text  # a completed bar with terminal styling
    assert "write" in reporter.timings


def test_quiet_prints_nothing():
    out = io.StringIO()
    run(Reporter(stream=out, quiet=True))
    assert out.getvalue() == ""
