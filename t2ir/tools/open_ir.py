"""Finds and reads the IR in anything t2ir writes: a `.t2ir` dump, a model archive or folder
(its `graph.t2ir`), an `export-llm` output folder, or a `--dump-ir` folder (one pass of it).

No torch here: `t2ir dump`, `t2ir diff` and `t2ir.diff` start fast.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from t2ir.emitters.layout import IR_DUMP_NAME
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


def _archive_text(path: Path) -> str:
    with tarfile.open(path) as tar:
        try:
            member = tar.extractfile(IR_DUMP_NAME)
        except KeyError:
            member = None
        if member is None:
            raise T2IRError(f"{path} has no {IR_DUMP_NAME}: was it exported by t2ir?")
        return member.read().decode()


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
    return path, "exported model" if tarfile.is_tarfile(path) else "dump"


def read_ir_text(path: Path | str, after: Optional[str] = None) -> str:
    """The IR text of a dump, a model (archive or folder), an export-llm folder or a dump folder."""
    return _read(locate(path, after)[0])


def _read(file: Path) -> str:
    if tarfile.is_tarfile(file):
        return _archive_text(file)
    try:
        return file.read_text()
    except UnicodeDecodeError:
        raise T2IRError(f"{file} is not IR text (nor a model archive)") from None


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
