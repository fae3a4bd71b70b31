"""Progress for long work: rich bars on a terminal, plain lines in pipes, nothing with --quiet."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, Optional


class Reporter:
    """Phases with timings, and a per-item counter for the long ones (writing weights)."""

    def __init__(self, quiet: bool = False, rich: Optional[bool] = None, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.rich = (not quiet) and (self.stream.isatty() if rich is None else rich)
        self.timings: dict[str, float] = {}
        self._progress = None
        self._task = None

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def phase(self, name: str, total: Optional[int] = None) -> Iterator["Reporter"]:
        start = time.perf_counter()
        if self.rich:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
            console = Console(file=self.stream, force_terminal=True)
            with Progress(*columns, transient=False, console=console) as progress:
                self._progress, self._task = progress, progress.add_task(name, total=total)
                try:
                    yield self
                finally:
                    progress.update(self._task, completed=total or 1, total=total or 1)
                    self._progress = self._task = None
        else:
            self.line(f"{name} ...")
            yield self
        self.timings[name] = time.perf_counter() - start
        if not self.rich:
            self.line(f"{name}: done in {self.timings[name]:.1f}s")

    def advance(self, detail: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=detail or None)
