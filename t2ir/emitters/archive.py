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

import gzip
import os
import posixpath
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Mapping

from t2ir.errors import T2IRError

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


def write_tgz(dest: Path, folder: Path, *, compresslevel: int) -> None:
    """The files of `folder` (flat, sorted by name) as a reproducible gzip'd tar at `dest`."""
    mtime = archive_mtime()
    with open(dest, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=mtime) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            info = _normalised(tar.gettarinfo(path, arcname=path.name), mtime)
            with open(path, "rb") as f:
                tar.addfile(info, f)


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

