"""Writes an NNEF-level graph to disk: graph.nnef plus one streamed .dat per constant, as a
folder or a .tgz, atomically (temporary place first, moved into place at the end)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

from t2ir.compression.report import QuantReport, report_path
from t2ir.emitters.archive import ArchiveSink, FolderSink
from t2ir.emitters.dat import HEADER_SIZE
from t2ir.emitters.encodings import ENCODINGS
from t2ir.emitters.layout import ARCHIVE_SUFFIXES, GRAPH_FILE, IR_DUMP_NAME
from t2ir.emitters.nnef_text import build_document
from t2ir.emitters.staging import OutputError, OutputExistsError, atomic_output  # noqa: F401 (re-exported)
from t2ir.errors import ExportError, Problem
from t2ir.ir import Graph, Value

Sink = Union[ArchiveSink, FolderSink]

# gzip level 0 (stored blocks): float weights barely compress (7 % at level 1, measured in
# bench/results/llm_export.md) while level 1 runs at ~19 MB/s against ~490 MB/s, and tract
# loads a stored archive faster too. The file is still a valid .tgz for every reader.
ARCHIVE_COMPRESSLEVEL = 0


def is_archive_path(path: Path) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIXES)


_WRITE_HINT = ("check the weight in the checkpoint (a broken shard, a config.json that does not match it), "
               "or keep it float (--keep-float)")


def write_members(g: Graph, sink: Sink, progress: Optional[Callable[[str, int], None]] = None,
                  report: Optional[QuantReport] = None) -> int:
    """graph.nnef, graph.t2ir and one .dat per constant, in name order (reproducible archives),
    each constant loaded, encoded and written on its turn: one weight in memory at a time.
    Returns the bytes written; with a `report`, each constant's payload size and what its
    encoding measured are recorded."""
    doc = build_document(g)
    texts = {GRAPH_FILE: doc.render().encode(), IR_DUMP_NAME: str(g).encode()}
    consts = {f"{doc.labels[v.name]}.dat": v for v in g.consts}
    total = 0
    for name in sorted([*texts, *consts]):
        if name in texts:
            total += sink.add(name, lambda f, data=texts[name]: f.write(data))[0]
            continue
        v = consts[name]
        size, measured = sink.add(name, lambda f, v=v: _encode(f, v))
        total += size
        if report is not None:
            report.record_written(v, size - HEADER_SIZE, measured)
        if progress:
            progress(v.name, size)
    return total


def _encode(f: BinaryIO, v: Value) -> Optional[dict]:
    tensor = v.const.source.load()
    try:
        return ENCODINGS[v.const.encoding].write(f, tensor, v)
    except ValueError as e:  # an encoding's refusal (nan in a packed weight, a wrong shape)
        raise ExportError(f"cannot write constant {v.const.label!r}:", [Problem(str(e), hint=_WRITE_HINT)]) from None


def write_model(g: Graph, path: Path | str, *, overwrite: bool = False, progress=None,
                report: Optional[QuantReport] = None) -> Path:
    """Write `g` to `path`: a folder, or a gzip'd tar when the name ends in .tgz / .tar.gz.

    A quantization `report` is completed while the weights stream and saved beside the model
    as `<path>.quant_report.json`; a stale one from an earlier export of `path` is removed."""
    path = Path(path)
    archive = is_archive_path(path)
    with atomic_output(path, overwrite, folder=not archive) as staged:
        sink = ArchiveSink(staged, compresslevel=ARCHIVE_COMPRESSLEVEL) if archive else FolderSink(staged)
        with sink:
            write_members(g, sink, progress, report)
    try:
        if report is not None:
            report.save(report_path(path))
        else:
            report_path(path).unlink(missing_ok=True)
    except OSError as e:
        raise OutputError(f"{path} was written, but not its quantization report {report_path(path)}: "
                          f"{e.strerror or e}") from None
    return path
