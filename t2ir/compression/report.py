"""The quantization report: each weight packed or kept (and why), its sizes, and the error the emitter measured."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, TextIO

from t2ir.ir import Constant, Value

REPORT_SUFFIX = ".quant_report.json"
PACKED, KEPT = "packed", "kept"


def report_path(model_path: Path | str) -> Path:
    """Where the report of an export at `model_path` goes: beside it, for folders and archives alike."""
    return Path(str(model_path) + REPORT_SUFFIX)


def _payload_bytes(v: Value) -> Optional[int]:
    dims = tuple(v.shape)
    if not all(isinstance(d, int) for d in dims):
        return None
    return math.prod(dims) * v.dtype.itemsize


@dataclass
class TensorReport:
    """One weight: what happened to it, its payload size before/after, and its relative error."""

    name: str                         # the constant's label (its state_dict name)
    shape: list
    dtype: str
    status: str                       # "packed" or "kept"
    encoding: str = ""                # how a packed weight is stored ("q4_0", a user method's name)
    reason: str = ""                  # why a kept weight was not packed
    bytes_before: Optional[int] = None  # payload of the float tensor (numel * itemsize)
    bytes_after: Optional[int] = None   # payload bytes actually written (None until emitted)
    rel_error: Optional[float] = None   # RMSE(dequant(packed) - w) / RMS(w), from the emitter
    consts: list[Constant] = field(default_factory=list, repr=False)  # what holds it on disk

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "consts"}
        d["shape"] = [x if isinstance(x, int) else str(x) for x in self.shape]
        return d


@dataclass
class QuantReport:
    """Built by the compress-weights pass (decisions), completed by the emitter (bytes, errors)."""

    method: str
    tensors: list[TensorReport] = field(default_factory=list)
    other_bytes: int = 0              # payload of every constant that is not a reported weight
    _by_const: dict[int, TensorReport] = field(default_factory=dict, repr=False)

    # ---- filled by the pass ---------------------------------------------------------------
    def add(self, value: Value, status: str, *, encoding: str = "", reason: str = "",
            consts: Iterable[Value] = ()) -> TensorReport:
        held = [c.const for c in consts] or [value.const]
        entry = TensorReport(value.const.label, list(value.shape), value.dtype.value, status,
                             encoding=encoding, reason=reason, bytes_before=_payload_bytes(value),
                             consts=held)
        self.tensors.append(entry)
        for c in held:
            self._by_const[id(c)] = entry
        return entry

    # ---- filled by the emitter ------------------------------------------------------------
    def record_written(self, v: Value, payload: int, stats: Optional[dict] = None) -> None:
        """Account for one constant the emitter wrote; a packed constant no method planned is
        still reported, so nothing is ever compressed (or skipped) silently."""
        entry = self._by_const.get(id(v.const))
        if entry is None and v.const.encoding != "plain":
            entry = self.add(v, PACKED, encoding=v.const.encoding,
                             reason="encoded outside a compression method")
        if entry is None:
            self.other_bytes += payload
            return
        entry.bytes_after = (entry.bytes_after or 0) + payload
        err = (stats or {}).get("rel_error")
        if err is not None:
            entry.rel_error = err if entry.rel_error is None else max(entry.rel_error, err)

    # ---- results --------------------------------------------------------------------------
    @property
    def packed(self) -> list[TensorReport]:
        return [t for t in self.tensors if t.status == PACKED]

    @property
    def kept(self) -> list[TensorReport]:
        return [t for t in self.tensors if t.status == KEPT]

    def totals(self) -> dict[str, int]:
        before = sum(t.bytes_before or 0 for t in self.tensors)
        after = sum(t.bytes_after or 0 for t in self.tensors)
        return {"packed": len(self.packed), "kept": len(self.kept),
                "weights_bytes_before": before, "weights_bytes_after": after,
                "other_bytes": self.other_bytes,
                "model_bytes_before": before + self.other_bytes,
                "model_bytes_after": after + self.other_bytes}

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "tensors": [t.to_dict() for t in self.tensors],
                "totals": self.totals()}

    def save(self, path: Path | str) -> Path:
        """Write the JSON report atomically (a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        return path

    # ---- display --------------------------------------------------------------------------
    def _rows(self) -> list[list[str]]:
        rows = []
        for t in self.tensors:
            status = t.encoding if t.status == PACKED else "float"
            err = "-" if t.rel_error is None else f"{t.rel_error:.4f}"
            rows.append([t.name, "x".join(map(str, t.shape)), status, err,
                         _size(t.bytes_before), _size(t.bytes_after), t.reason])
        return rows

    def summary(self) -> str:
        t = self.totals()
        ratio = t["weights_bytes_before"] / t["weights_bytes_after"] if t["weights_bytes_after"] else 0
        return (f"{t['packed']} packed, {t['kept']} kept float; weights {_size(t['weights_bytes_before'])}"
                f" -> {_size(t['weights_bytes_after'])} ({ratio:.2f}x smaller); model "
                f"{_size(t['model_bytes_before'])} -> {_size(t['model_bytes_after'])}")

    def render_text(self) -> str:
        head = ["tensor", "shape", "stored", "rel.err", "before", "after", "note"]
        rows = self._rows()
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head) - 1)]
        lines = [f"Quantization report ({self.method})"]
        for r in [head] + rows:
            cells = [c.ljust(w) if i in (0, 1, 2) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells + [r[-1]]).rstrip())
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def print(self, file: Optional[TextIO] = None) -> None:
        """A rich table on a terminal, plain text otherwise (logs, pipes, CI)."""
        file = file or sys.stdout
        if not (hasattr(file, "isatty") and file.isatty()):
            file.write(self.render_text())
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Quantization report ({self.method})", caption=self.summary())
        for col, justify in zip(["tensor", "shape", "stored", "rel.err", "before", "after", "note"],
                                ["left", "left", "left", "right", "right", "right", "left"]):
            wraps = col in ("tensor", "note")  # long names fold; numbers never do
            table.add_column(col, justify=justify, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
        for r in self._rows():
            table.add_row(*r)
        Console(file=file).print(table)


def _size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
