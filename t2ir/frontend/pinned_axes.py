"""Where the model's code pins a dynamic axis to its traced size.

torch.export refuses an axis declared dynamic that the code specialised (`len(x)` used as a
Python int, a view to a fixed size) without saying where. Its shape environment logs each symbol
it creates for an input's axis and each guard it adds, as it adds it: the model's line is then on
the call stack, and t2ir's error names it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from t2ir.paths import portable_source_path

_LOGGER = "torch.fx.experimental.symbolic_shapes"
_CREATED = re.compile(r"create_symbol (?P<sym>s\d+) = \d+ for L\['(?P<input>\w+)'\](?P<index>\[\d+\])?\.size\(\)\[(?P<axis>\d+)\]")
# a size pinned to a number: Eq(s77, 2), Eq(4*s77, 24) (not Eq(Mod(s77, 2), 0), nor two sizes equal)
_GUARD = re.compile(r"eval Eq\((?P<size>[-+*\d\s]*(?P<sym>s\d+)[-+*\d\s]*), -?\d+\) \[guard added\]")
_TORCH = os.path.dirname(torch.__file__)
_OURS = (_TORCH, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_STDLIB = sysconfig.get_paths()["stdlib"]


class _Listener(logging.Filter):
    """A filter on the logger itself, which sees each record before any handler (t2ir holds
    torch's handlers' output while tracing)."""

    def __init__(self, where: Callable[[], tuple[str, int] | None] | None = None):
        super().__init__()
        self.where = where
        self.symbols: dict[str, tuple[str, int]] = {}
        self.pins = Pins()

    def filter(self, record: logging.LogRecord) -> bool:
        self._read(record.getMessage())
        return True

    def _read(self, text: str) -> None:
        if m := _CREATED.search(text):
            self.symbols[m["sym"]] = (m["input"] + (m["index"] or ""), int(m["axis"]))
        elif (m := _GUARD.search(text)) and m["sym"] in self.symbols:  # the model's line is on the stack now
            site = (self.where() if self.where else None) or _user_frame()
            if site is not None:
                self.pins.sites.setdefault(self.symbols[m["sym"]], site)
            self.pins.by_python_int |= _converting_to_int()


@dataclass
class Pins:
    """Where the model's code pinned dynamic axes: (forward argument name, axis) -> (file, line),
    and whether a pin came from a size turned into a Python int (`len(x)`, `range(x.size(0))`,
    `int(n)`), which torch.export's strict mode can keep symbolic."""

    sites: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    by_python_int: bool = False


def _converting_to_int() -> bool:
    """A SymInt's __index__ / __int__ is on the stack: Python asked for a plain int."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in ("__index__", "__int__") and frame.f_code.co_filename.startswith(_TORCH):
            return True
        frame = frame.f_back
    return False


def _user_frame() -> tuple[str, int] | None:
    """The innermost frame of the model's code: not torch's, t2ir's or Python's own."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        library = name.startswith(_OURS) or (name.startswith(_STDLIB) and "site-packages" not in name)
        if not library and os.path.isfile(name):
            return portable_source_path(name), frame.f_lineno
        frame = frame.f_back
    return None


def pinning_sites_of(trace: Callable[[], object], error: BaseException,
                     where: Callable[[], tuple[str, int] | None] | None = None) -> Pins:
    """When `error` (from `trace()`) says a dynamic axis was specialised: for each pinned axis the
    (file, line) of the first guard that pinned its size, found by tracing again while listening
    (listening makes torch format every guard it adds: only on failure).
    `where()`, when given, names the line instead of the Python stack, for models whose code is
    not on it (a TorchScript graph replayed by t2ir's interpreter: the node being replayed)."""
    if "specialized it to be a constant" not in str(error):
        return Pins()
    with _listening(where) as pins:
        try:
            trace()
        except Exception:
            pass
    return pins


@contextlib.contextmanager
def _listening(where=None) -> Iterator[Pins]:
    """The shape environment's INFO log goes to the listener only: torch's own handler on that
    logger keeps its level."""
    logger = logging.getLogger(_LOGGER)
    listener, level, disabled = _Listener(where), logger.level, logging.root.manager.disable
    shown = max(logger.getEffectiveLevel(), disabled + 1)  # what torch's handlers showed before
    quiet = [(h, _AtLeast(shown)) for h in logger.handlers]
    for handler, only in quiet:
        handler.addFilter(only)
    logger.addFilter(listener)
    logger.setLevel(logging.INFO)
    logging.disable(logging.NOTSET)  # (a program that silenced logging still gets the line)
    try:
        yield listener.pins
    finally:
        logging.disable(disabled)
        logger.removeFilter(listener)
        logger.setLevel(level)
        for handler, only in quiet:
            handler.removeFilter(only)


class _AtLeast(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level
