"""A wall-clock limit on work in the main thread (SIGALRM), for the OpInfo sweep. A signal is only
handled between Python bytecodes, so it cannot cut work inside native code (tract's optimizer):
the model sweep limits each attempt's process instead."""

from __future__ import annotations

import contextlib
import signal


class Expired(BaseException):
    """Not an Exception: torch's tracing catches those on its way, and must not swallow this."""

    def __init__(self, seconds: int):
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self) -> str:
        return f"took more than {self.seconds} s"


@contextlib.contextmanager
def time_limit(seconds: int):
    """Raise Expired in the block after `seconds` (0: no limit)."""
    if not seconds:
        yield
        return

    def expire(*_):
        raise Expired(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
