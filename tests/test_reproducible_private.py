"""Reproducible and private output.

Reproducible: the same input and options give byte-identical files, whatever the clock, the
output path, the working folder or Python's hash seed; the archive is built like a
reproducible-build tarball. The one difference allowed is export-llm's manifest `time` entry.

Private: nothing written carries the user's folders, user name or host name. An export from a
folder with a distinctive absolute path is searched for it everywhere: every file, inside the
.tgz and each .npz, and the IR dumps.
"""

from __future__ import annotations

import getpass
import gzip
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import t2ir
from t2ir.cli import _register, app
from t2ir.demo import make_tiny_llm_folder
from t2ir.emitters.archive import ZIP_EPOCH

ROOT = Path(__file__).resolve().parents[1]
_register()


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(16)
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, x):
        return torch.softmax(self.proj(self.norm(x)), dim=-1) * x


def export_block(path: Path) -> Path:
    torch.manual_seed(0)
    return t2ir.export(Block(), (torch.randn(2, 5, 16),), path, input_names=["x"],
                       dynamic_axes={"x": {0: "batch", 1: "S"}}).path


def tree(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["model.nnef.tgz", "model"])
def test_same_model_same_bytes_whatever_the_clock_and_path(tmp_path, monkeypatch, name):
    first = export_block(tmp_path / "a" / name)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 123_456_789)  # a clock far ahead
    monkeypatch.chdir(tmp_path)
    second = export_block(Path("elsewhere") / name)
    assert tree(first) == tree(tmp_path / second)


def test_same_bytes_in_another_process_with_another_hash_seed(tmp_path):
    first = export_block(tmp_path / "here.nnef.tgz")
    code = ("import sys; from pathlib import Path; from tests.test_reproducible_private import export_block; "
            "export_block(Path(sys.argv[1]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "there.nnef.tgz")], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    assert first.read_bytes() == (tmp_path / "there.nnef.tgz").read_bytes()


def test_archive_is_built_like_a_reproducible_tarball(tmp_path, monkeypatch):
    raw = export_block(tmp_path / "m.nnef.tgz").read_bytes()
    flags, mtime = raw[3], int.from_bytes(raw[4:8], "little")
    assert raw[:3] == b"\x1f\x8b\x08" and flags & 0x08 == 0  # gzip, no FNAME field
    assert mtime == ZIP_EPOCH
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(ZIP_EPOCH, 0, 0, "", "", 0o644)}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # reproducible-builds.org's variable
    again = export_block(tmp_path / "epoch.nnef.tgz").read_bytes()
    assert int.from_bytes(again[4:8], "little") == 1700000000
    with tarfile.open(fileobj=io.BytesIO(again)) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    assert gzip.decompress(again) != gzip.decompress(raw)  # only the stamps differ


def test_source_locations_are_relative_to_their_package(tmp_path):
    path = export_block(tmp_path / "m.nnef.tgz")
    with tarfile.open(path) as tar:
        ir = tar.extractfile("graph.t2ir").read().decode()
    assert f"({Path(__file__).name}:" in ir  # this file, by name: tests/ is not a package
    assert str(ROOT) not in ir and "site-packages" not in ir


# ---- export-llm: a distinctive folder, two runs ---------------------------------------------

DISTINCTIVE = "Zebra_Secret_Folder_8f3a"


def every_text(path: Path) -> dict[str, bytes]:
    """Each file under `path`, and each member of the archives and npz files among them."""
    out = {}
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        out[str(p.relative_to(path))] = data
        if p.name.endswith(".tgz"):
            with tarfile.open(p) as tar:
                out.update({f"{p.name}/{m.name}": tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()})
        if p.suffix == ".npz":
            with zipfile.ZipFile(p) as z:
                out.update({f"{p.name}/{n}": z.read(n) for n in z.namelist()})
                out.update({f"{p.name}/{n}@": repr(z.getinfo(n)).encode() for n in z.namelist()})
    return out


def private_paths(*folders: Path) -> list[str]:
    """Paths that must not appear: the folders' absolute paths, their distinctive part, where
    t2ir and the Python packages are installed, and the home folder."""
    return [DISTINCTIVE, str(Path.home()), str(Path(t2ir.__file__).resolve().parents[1]), sys.prefix,
            *(str(f.resolve()) for f in folders)]


def who_and_where() -> list[re.Pattern]:
    """The user and host names, as whole words, when long enough to mean something."""
    return [re.compile(rf"\b{re.escape(n)}\b".encode()) for n in (getpass.getuser(), socket.gethostname())
            if len(n) >= 4]


@pytest.mark.slow
def test_export_llm_is_reproducible_and_private(tmp_path):
    secret = tmp_path / DISTINCTIVE
    model_dir = make_tiny_llm_folder(secret / "tiny-llama")
    flags = ["--with-tokenizer-and-config", "--check-io", "very", "--compression", "q4_0", "--quiet"]
    first, dumps = secret / "out-1", secret / "dumps"
    result = CliRunner().invoke(app, ["export-llm", "-d", str(model_dir), "-e", str(first), "--dump-ir", str(dumps),
                                      *flags])
    assert result.exit_code == 0, result.output
    # again: another process, another hash seed, another working folder, a relative model path
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(model_dir, elsewhere / "tiny-llama")
    # (torch's own thread count kept: the reference outputs are summed in another order with another)
    env = {**os.environ, "PYTHONHASHSEED": "7", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    subprocess.run([sys.executable, "-c", "from t2ir.cli import main; main()", "export-llm", "-d", "tiny-llama",
                    "-e", "out-2", *flags], cwd=elsewhere, env=env, check=True, capture_output=True)
    one, two = every_text(first), every_text(elsewhere / "out-2")
    assert one.keys() == two.keys()
    differ = sorted(k for k in one if one[k] != two[k])
    assert differ == ["manifest.json"], differ
    m1, m2 = json.loads(one["manifest.json"]), json.loads(two["manifest.json"])
    assert m1.pop("time") != m2.pop("time") and m1 == m2

    written = {**one, **{f"dumps/{k}": v for k, v in every_text(dumps).items()}}
    for path in private_paths(secret, first, dumps, model_dir, tmp_path):
        leaks = [name for name, data in written.items() if path.encode() in data]
        assert not leaks, f"{path!r} is written in {leaks}"
    copied = {p.read_bytes() for p in model_dir.iterdir()}  # the model's own files, copied as they are
    for name in who_and_where():
        leaks = [k for k, data in written.items() if data not in copied and name.search(data)]
        assert not leaks, f"{name.pattern!r} is written in {leaks}"
