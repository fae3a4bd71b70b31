"""An export is written in a staging folder beside its target and moved into place at the end.

So an export either appears whole or not at all, and a previous export at the same path stays
as it was until the new one is complete. The staging folder, `.<name>.<8 hex>.t2ir-tmp`, sits
in the target's own folder (the final move is a rename on one file system) and holds:

    <name>          what is being written
    <name>.old      (folder targets) the previous export, set aside between the two renames
    .t2ir-lock      locked (flock) for as long as the export runs; holds the target's name

An export stopped by Ctrl-C removes its staging folder on the way out. One killed outright
(SIGKILL, power loss) leaves it behind: the next export to the same target removes each such
folder whose lock it can take — the owner is gone — after putting a set-aside previous export
back when the target is missing. Folders without our lock file, or for another target, are
never touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterator, Optional

from t2ir.errors import T2IRError

try:
    import fcntl
except ImportError:  # Windows: no flock, so stale staging folders are left for the user
    fcntl = None  # type: ignore[assignment]

STAGING_SUFFIX = ".t2ir-tmp"
LOCK_FILE = ".t2ir-lock"
OLD_SUFFIX = ".old"


class OutputError(T2IRError):
    """The export cannot be written where it was asked to go; nothing was changed there."""


class OutputExistsError(OutputError):
    pass


def staging_pattern(target: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{8}}{re.escape(STAGING_SUFFIX)}")


def _lock(folder: Path, target_name: str, *, create: bool) -> Optional[int]:
    """An exclusive flock on `folder`'s lock file: the open descriptor, or None when another
    process holds it (or, with create=False, when the folder has no lock file for `target_name`)."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
    except FileNotFoundError:
        return None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if create:
            os.write(fd, target_name.encode())
        elif os.read(fd, 4096).decode(errors="replace") != target_name:
            raise BlockingIOError  # a folder of another target that happens to match
        return fd
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise


def clean_stale_staging(target: Path) -> list[Path]:
    """Remove the staging folders that dead exports to `target` left; returns the ones removed.

    A previous export found set aside while the target is missing is put back first."""
    if fcntl is None or not target.parent.is_dir():
        return []
    removed = []
    pattern = staging_pattern(target)
    for folder in sorted(target.parent.iterdir()):
        if not pattern.fullmatch(folder.name) or not folder.is_dir() or folder.is_symlink():
            continue
        fd = _lock(folder, target.name, create=False)
        if fd is None:
            continue
        try:
            old = folder / (target.name + OLD_SUFFIX)
            if old.exists() and not os.path.lexists(target):
                os.replace(old, target)
            shutil.rmtree(folder)
            removed.append(folder)
        except OSError:
            pass  # left for the user to remove; this export goes on
        finally:
            os.close(fd)
    return removed


def _make_staging(target: Path) -> Path:
    while True:
        folder = target.parent / f".{target.name}.{secrets.token_hex(4)}{STAGING_SUFFIX}"
        try:
            folder.mkdir(mode=0o700)
            return folder
        except FileExistsError:
            continue


def check_target(target: Path, overwrite: bool, folder: bool) -> None:
    """Refuse a target that cannot be written or replaced, with what to do about it."""
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"cannot write {target}: {parent} is a file, not a folder")
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise OutputExistsError(f"{target} already exists; choose another path or allow overwriting "
                                f"(overwrite=True / --force)")
    if target.is_symlink() or target.is_dir() != folder:
        what = "a link" if target.is_symlink() else ("a folder" if target.is_dir() else "a file")
        raise OutputError(f"{target} is {what} and the export is a {'folder' if folder else 'file'}: "
                          "remove it or choose another path (it was left as it is)")


def _shown(path: object, root: Optional[Path]) -> str:
    """A file of the staging folder by its name (the folder is gone when the user reads it)."""
    path = Path(str(path))
    if root is not None and root in path.parents:
        return f"writing {path.name}"
    return str(path)


@contextlib.contextmanager
def atomic_output(target: Path | str, overwrite: bool, *, folder: Optional[bool] = None) -> Iterator[Path]:
    """Yield a path to write the export to; on success it replaces `target` in one rename.

    `folder` says whether the export is a folder (default: unless the name ends in .tgz). A
    failure or Ctrl-C leaves no trace and the previous export as it was; an OS error (disk full,
    permission denied) becomes an OutputError naming the file.
    """
    from t2ir.emitters.layout import ARCHIVE_SUFFIXES

    target = Path(target)
    folder = not str(target).endswith(ARCHIVE_SUFFIXES) if folder is None else folder
    existed = False
    root: Optional[Path] = None
    lock: Optional[int] = None
    try:
        clean_stale_staging(target)
        check_target(target, overwrite, folder)
        existed = os.path.lexists(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        root = _make_staging(target)
        lock = _lock(root, target.name, create=True)
        staged = root / target.name
        yield staged
        if folder and os.path.lexists(target):
            os.replace(target, root / (target.name + OLD_SUFFIX))
        os.replace(staged, target)
    except OSError as e:
        what = e.strerror or str(e)
        where = f" ({_shown(e.filename, root)})" if e.filename else ""
        kept = "the previous export is unchanged" if existed else "nothing was written"
        hint = "; free some space and export again" if e.errno == errno.ENOSPC else ""
        raise OutputError(f"export to {target} failed: {what}{where}; {kept}{hint}") from None
    finally:
        if root is not None:
            old = root / (target.name + OLD_SUFFIX)
            if old.exists() and not os.path.lexists(target):  # stopped between the two renames
                os.replace(old, target)
            shutil.rmtree(root, ignore_errors=True)
        if lock is not None:
            os.close(lock)
