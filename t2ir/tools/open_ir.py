"""Finds and reads the IR in anything t2ir writes: a `.t2ir` dump, a model archive or folder
(its `graph.t2ir`), an `export-llm` output folder, or a `--dump-ir` folder (one pass of it).

No torch here: `t2ir dump`, `t2ir diff` and `t2ir.diff` start fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from t2ir.emitters.archive import read_member
from t2ir.emitters.layout import ARCHIVE_SUFFIXES, IR_DUMP_NAME
from t2ir.errors import T2IRError
from t2ir.ir import Graph
from t2ir.parser import IRParseError, parse_ir

LLM_MODEL = Path("model") / "model.nnef.tgz"  # where export-llm puts the model in its folder
_DUMP = re.compile(r"^(?P<index>\d+)-(?P<name>.+)\.t2ir$")

IRSource = Union[Graph, str, Path]


@dataclass(frozen=True)
class PassDump:
    """One file of a `--dump-ir` folder: `03-fuse-attention.t2ir` is pass 3, `fuse-attention`."""

    index: int
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.index:02d}-{self.name}"


def pass_dumps(folder: Path) -> list[PassDump]:
    """The dumps of a `--dump-ir` folder, in pipeline order (empty when it is not one)."""
    found = []
    for p in Path(folder).iterdir():
        m = _DUMP.match(p.name)
        if m and p.is_file():
            found.append(PassDump(int(m["index"]), m["name"], p))
    return sorted(found, key=lambda d: d.index)


def pick_pass(dumps: list[PassDump], after: str, folder: Path) -> PassDump:
    """The dump written after pass `after`: a name (`fuse-attention`, `lift`), a file stem
    (`07-cleanup`) or an index (`7`). A name that ran twice (cleanup) must be given by index."""
    choices = ", ".join(d.label for d in dumps)
    hits = [d for d in dumps if after in (d.name, d.label, str(d.index), f"{d.index:02d}")]
    if not hits:
        raise T2IRError(f"no pass {after!r} in {folder}; the dumps are: {choices}")
    if len(hits) > 1:
        raise T2IRError(f"pass {after!r} ran {len(hits)} times in {folder}: pick one of "
                        f"{', '.join(d.label for d in hits)}")
    return hits[0]


def is_archive(path: Path) -> bool:
    """A model archive by its name or its first bytes (gzip magic, or a tar header's "ustar"),
    without parsing it: a damaged archive is reported when it is read, not mistaken for text."""
    if path.name.endswith(ARCHIVE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar"


def _archive_text(path: Path) -> str:
    """The IR inside an exported archive; refused when any member would land outside its folder."""
    data = read_member(path, IR_DUMP_NAME)
    if data is None:
        raise T2IRError(f"{path} has no {IR_DUMP_NAME}: was it exported by t2ir?")
    return _decoded(data, path)


def _decoded(data: bytes, path: Path) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise T2IRError(f"{path} is not IR text (byte {e.start} is not UTF-8): pass a .t2ir dump, "
                        "an exported folder or .nnef.tgz") from None


def locate(path: Path | str, after: Optional[str] = None) -> tuple[Path, str]:
    """The file holding the IR `path` stands for, and a label saying which IR it is."""
    path = Path(path)
    if not path.exists():
        raise T2IRError(f"{path} does not exist")
    if path.is_dir():
        dumps = pass_dumps(path)
        if dumps:
            chosen = pick_pass(dumps, after, path) if after else dumps[-1]
            return chosen.path, f"after {chosen.label}"
        if after:
            raise T2IRError(f"--after picks a pass from a --dump-ir folder; {path} has no NN-<pass>.t2ir dumps")
        if (path / IR_DUMP_NAME).exists():
            return path / IR_DUMP_NAME, "exported model"
        if (path / LLM_MODEL).exists():
            return path / LLM_MODEL, "exported model"
        raise T2IRError(f"{path} holds no t2ir IR: expected a --dump-ir folder (00-lift.t2ir, ...), a model "
                        f"folder with {IR_DUMP_NAME}, or an export-llm folder with {LLM_MODEL}")
    if after:
        raise T2IRError(f"--after picks a pass from a --dump-ir folder, not from the file {path}")
    return path, "exported model" if is_archive(path) else "dump"


def read_ir_text(path: Path | str, after: Optional[str] = None) -> str:
    """The IR text of a dump, a model (archive or folder), an export-llm folder or a dump folder."""
    return _read(locate(path, after)[0])


def _read(file: Path) -> str:
    try:
        if is_archive(file):
            return _archive_text(file)
        return _decoded(file.read_bytes(), file)
    except OSError as e:
        raise T2IRError(f"cannot read {file}: {e.strerror or e}") from None


def load_ir(path: Path | str, after: Optional[str] = None) -> Graph:
    """Parse (and verify) the IR found at `path`; weights come back as detached handles.

        g = t2ir.load_ir("out/")                              # an export-llm folder
        g = t2ir.load_ir("dumps/", after="fuse-attention")    # one pass of a --dump-ir folder
    """
    file, _ = locate(path, after)
    try:
        return parse_ir(_read(file))
    except IRParseError as e:
        raise T2IRError(f"{file}:{e}") from None


def as_graph(source: IRSource) -> Graph:
    """A Graph as it is, IR text parsed, or a path loaded."""
    if isinstance(source, Graph):
        return source
    if isinstance(source, str) and source.lstrip().startswith("graph "):
        return parse_ir(source)
    return load_ir(source)
