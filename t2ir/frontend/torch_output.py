"""What torch prints while it traces, held back until we know whether tracing worked.

When torch.export fails it writes the partial FX graph to stderr and logs its internal
tracebacks ("failed while attempting to run meta for aten.add") before raising. t2ir turns the
failure into an error that says what and where; torch's dump above it would read like a crash.
So the output is held: replayed as it was when tracing succeeds (its warnings still matter),
dropped when it fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from typing import Iterator


def _torch_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name == "torch" or name.startswith("torch.")]
    return list({id(h): h for lg in loggers for h in lg.handlers}.values())


class _Hold(logging.Filter):
    def __init__(self, handler: logging.Handler, held: list):
        super().__init__()
        self.handler, self.held = handler, held

    def filter(self, record: logging.LogRecord) -> bool:
        self.held.append((self.handler, record))
        return False


@contextlib.contextmanager
def torch_output_held() -> Iterator[None]:
    """Hold torch's stderr output and log records; replay them unless the block raises."""
    records: list[tuple[logging.Handler, logging.LogRecord]] = []
    holds = [(h, _Hold(h, records)) for h in _torch_handlers()]
    for handler, hold in holds:
        handler.addFilter(hold)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            yield
    finally:
        for handler, hold in holds:
            handler.removeFilter(hold)
    sys.stderr.write(stderr.getvalue())  # reached only when tracing succeeded
    for handler, record in records:
        handler.handle(record)
