"""Archives t2ir writes (.tgz models, .npz test cases) and reads back (`t2ir dump`).

Written archives are reproducible, as reproducible-build tarballs are: the same content gives
the same bytes on any machine, at any time. Members are sorted, stamped with one fixed time
(`SOURCE_DATE_EPOCH` when set, else 1980-01-01, the first time a zip can hold), owned by uid/gid
0 with no user or group name, mode 0644; the gzip header has a fixed time and no file name.

Archives read back are checked first: every member must be a plain file or folder inside the
archive's own folder (no absolute paths, no `..`, no links), so a crafted archive cannot make a
tool read or write outside it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import posixpath
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, TypeVar

from t2ir.errors import T2IRError

T = TypeVar("T")
COPY_BYTES = 4 << 20  # a member's bytes go to gzip this many at a time
ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z
FILE_MODE = 0o644


class ArchiveError(T2IRError):
    """An archive that is not readable, or holds members outside its own folder."""


def archive_mtime() -> int:
    """The time stamped on every member: SOURCE_DATE_EPOCH (reproducible-builds.org) or 1980."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    try:
        return max(int(value), ZIP_EPOCH) if value else ZIP_EPOCH
    except ValueError:
        raise T2IRError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds") from None


def _normalised(info: tarfile.TarInfo, mtime: int) -> tarfile.TarInfo:
    info.mtime, info.mode = mtime, FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Chunks(io.RawIOBase):
    """What one member's writer wrote, held as views of its buffers (no copy), read back once."""

    def __init__(self):
        super().__init__()
        self.parts: list[memoryview] = []
        self.size = 0
        self._part, self._offset = 0, 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        # a bytearray may be reused by its writer after this call: keep a copy of those only
        view = memoryview(bytes(b) if isinstance(b, bytearray) else b).cast("B")
        self.parts.append(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1):
        """Exactly n bytes while there are (tarfile requires it): a view when one part holds them."""
        pieces, want = [], self.size if n < 0 else n
        while want > 0 and self._part < len(self.parts):
            part = self.parts[self._part]
            piece = part[self._offset:self._offset + want]
            pieces.append(piece)
            want -= piece.nbytes
            self._offset += piece.nbytes
            if self._offset >= part.nbytes:
                self._part, self._offset = self._part + 1, 0
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class ArchiveSink:
    """A reproducible gzip'd tar filled member by member as each is produced: nothing is staged
    on disk first, and each member's bytes are held only while they are appended."""

    def __init__(self, dest: Path, *, compresslevel: int):
        self.mtime = archive_mtime()
        self.dest = dest
        self._stack = contextlib.ExitStack()
        raw = self._stack.enter_context(open(dest, "wb"))
        gz = self._stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                     compresslevel=compresslevel, mtime=self.mtime))
        self.tar = self._stack.enter_context(tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT,
                                                          copybufsize=COPY_BYTES))

    def add(self, name: str, write: Callable[[BinaryIO], T]) -> tuple[int, T]:
        """Append member `name` with what `write(file)` writes; returns (its size, write's result)."""
        chunks = _Chunks()
        result = write(chunks)
        info = _normalised(tarfile.TarInfo(name), self.mtime)
        info.size = chunks.size
        try:
            self.tar.addfile(info, chunks)
        except OSError as e:  # name the member being written, not only the archive (disk full)
            raise OSError(e.errno, e.strerror, str(self.dest / name)) from None
        return chunks.size, result

    def __enter__(self) -> "ArchiveSink":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


class FolderSink:
    """The same interface, writing each member as a file of `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True)

    def add(self, name: str, write: Callable[[BinaryIO], T]) -> tuple[int, T]:
        path = self.folder / name
        with open(path, "wb") as f:
            result = write(f)
        return path.stat().st_size, result

    def __enter__(self) -> "FolderSink":
        return self

    def __exit__(self, *exc) -> None:
        pass


def write_npz(path: Path, arrays: Mapping[str, "object"]) -> None:
    """Like `numpy.savez` (np.load reads it), without the clock and the host OS in the zip."""
    import numpy as np

    date_time = time.gmtime(archive_mtime())[:6]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=date_time)
            info.create_system = 3  # unix, whatever the host: the byte is part of the file
            info.external_attr = FILE_MODE << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def _check_member(archive: Path, info: tarfile.TarInfo) -> None:
    name = info.name
    normal = posixpath.normpath(name)
    if name.startswith(("/", "\\")) or normal == ".." or normal.startswith("../"):
        raise ArchiveError(f"{archive} has a member outside its folder ({name!r}): not a t2ir export, "
                           "refusing to read it")
    if not (info.isfile() or info.isdir()):
        raise ArchiveError(f"{archive} has a member {name!r} that is a link or device: not a t2ir export, "
                           "refusing to read it")


def read_member(archive: Path, name: str) -> bytes | None:
    """The bytes of member `name` of a tar archive (None when absent), after checking every
    member stays inside the archive's folder."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for info in members:
                _check_member(archive, info)
            found = [m for m in members if posixpath.normpath(m.name) == name and m.isfile()]
            if not found:
                return None
            f = tar.extractfile(found[-1])
            return f.read() if f is not None else None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ArchiveError(f"{archive} is not a readable archive ({e or type(e).__name__}): "
                           "it may be truncated; export the model again") from None

