"""Bad input, case by case: each gives one clear error line (a t2ir error from the API, `error: ...`
and exit code 2 from the command line), never a traceback, and writes nothing.

Model folders are broken copies of a tiny save_pretrained folder; output paths are files, read-only
folders, existing exports; a full disk is simulated by a file object that raises ENOSPC.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import t2ir
from t2ir.cli import _register, app
from t2ir.demo import make_tiny_llm_folder
from t2ir.emitters import archive

_register()
THIS = Path(__file__).name


def line_of(marker: str) -> int:
    return next(i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1) if text.endswith(f"# {marker}"))


def cli_error(*args: str) -> str:
    """Run the CLI expecting a handled error: exit code 2 and one `error:` line, no traceback."""
    result = CliRunner().invoke(app, list(args))
    assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}"
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: "), result.output
    assert "Traceback" not in result.output
    return result.output.splitlines()[0]


def api_error(fn, *args, error=t2ir.T2IRError, **kwargs) -> str:
    """Call the API expecting a t2ir error; its first line."""
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "Traceback" not in msg and 'File "' not in msg
    return msg.splitlines()[0]


def nothing_but(folder: Path, *names: str) -> None:
    """`folder` holds exactly `names`: no partial export, no staging folder."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


# ---- IR text and archives read back by `t2ir dump` ------------------------------------------

GOOD_IR = "graph g\ninput %x : f32[S, 4]\n%y = aten.relu(%x) : f32[S, 4]\noutput %y\n"


@pytest.mark.parametrize("text, expected", [
    ("graph g\ninput %x : f32[S, 4\noutput %x\n", "2:"),
    ("graph g\ninput %x : f32[2]\n%y = aten.relu(%z) : f32[2]\noutput %y\n", "3:16: value %z is used before it is defined"),
    ("graph g\ninput %x : q7[2]\noutput %x\n", "2:12: unknown element type 'q7'"),
    ("graph g\ninput %x : f32[2]\n", "missing 'output' line"),
    ('graph g\nconst %w : f32[2] = "bad \\u12"\noutput %w\n', "2:"),
    ("graph g\ninput %x : f32[__import__('os').getcwd()]\noutput %x\n", "2:16: bad dimension"),
    ("graph g\ninput %x : f32[9**9**9**9]\noutput %x\n", "2:16: bad dimension"),
], ids=["unclosed-type", "undefined-value", "unknown-dtype", "no-output", "bad-string-escape",
        "python-in-a-dimension", "huge-power"])
def test_malformed_ir_text(tmp_path, text, expected):
    path = tmp_path / "bad.t2ir"
    path.write_text(text)
    line = cli_error("dump", str(path))
    assert line.startswith(f"error: {path}:") and expected in line


def _archive(path: Path, members: dict[str, bytes], links: dict[str, str] = {}) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


@pytest.mark.parametrize("members, links", [
    ({"graph.t2ir": GOOD_IR.encode(), "../escape.dat": b"x"}, {}),
    ({"graph.t2ir": GOOD_IR.encode(), "/tmp/t2ir-absolute.dat": b"x"}, {}),
    ({"a.dat": b"x"}, {"graph.t2ir": "/etc/passwd"}),
], ids=["dotdot", "absolute", "symlink"])
def test_archive_with_members_outside_its_folder(tmp_path, members, links):
    archive = _archive(tmp_path / "evil.nnef.tgz", members, links)
    line = cli_error("dump", str(archive))
    assert "outside its folder" in line or "is a link or device" in line
    assert "refusing to read it" in line
    nothing_but(tmp_path, "evil.nnef.tgz")


def test_truncated_archive(tmp_path):
    good = _archive(tmp_path / "good.nnef.tgz", {"graph.t2ir": GOOD_IR.encode() * 200})
    cut = tmp_path / "cut.nnef.tgz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "is not a readable archive" in cli_error("dump", str(cut))


# ---- t2ir.export: inputs, dynamic axes, modules ---------------------------------------------

class Add(torch.nn.Module):
    def forward(self, x, y):
        return x + y  # add


def test_dynamic_axes_naming_a_missing_input(tmp_path):
    line = api_error(t2ir.export, Add(), (torch.randn(2, 3), torch.randn(2, 3)), tmp_path / "m.nnef.tgz",
                     input_names=["x", "y"], dynamic_axes={"z": {0: "B"}})
    assert line == "invalid dynamic_axes:"
    with pytest.raises(t2ir.ExportError, match="dynamic_axes names 'z', which is not an input"):
        t2ir.export(Add(), (torch.randn(2, 3), torch.randn(2, 3)), tmp_path / "m.nnef.tgz",
                    dynamic_axes={"z": {0: "B"}})
    nothing_but(tmp_path)


def test_dynamic_axis_out_of_range(tmp_path):
    with pytest.raises(t2ir.ExportError, match="dynamic axis 5 of input 'y' does not exist"):
        t2ir.export(Add(), (torch.randn(2, 3), torch.randn(2, 3)), tmp_path / "m.nnef.tgz",
                    dynamic_axes={"y": {5: "B"}})
    nothing_but(tmp_path)


@pytest.mark.parametrize("args, expected", [
    ((torch.randn(2, 3),), "missing a required argument: 'y' (1 positional given)"),
    ((torch.randn(2, 3),) * 3, "too many positional arguments (3 positional given)"),
], ids=["too-few", "too-many"])
def test_args_that_do_not_match_the_forward_signature(tmp_path, args, expected):
    with pytest.raises(t2ir.ExportError) as info:
        t2ir.export(Add(), args, tmp_path / "m.nnef.tgz")
    assert str(info.value).splitlines()[:2] == ["the example inputs do not fit Add.forward(x, y):", f"  - {expected}"]
    nothing_but(tmp_path)


def test_args_whose_shapes_do_not_fit_the_module(tmp_path, capfd):
    with pytest.raises(t2ir.ExportError) as info:
        t2ir.export(Add(), (torch.randn(2, 3), torch.randn(4, 5)), tmp_path / "m.nnef.tgz")
    assert str(info.value).startswith("torch.export could not trace the model:\n  - RuntimeError: Attempting to "
                                      "broadcast a dimension of length 5")
    assert f"{THIS}:{line_of('add')}" in str(info.value)
    assert "Traceback" not in capfd.readouterr().err  # torch's own dump of the failed trace is held back
    nothing_but(tmp_path)


class Untraceable(torch.nn.Module):
    def forward(self, x):
        return x[: int(x.sum().item() > 0) + 1]


def test_module_torch_export_cannot_trace(tmp_path, capfd):
    with pytest.raises(t2ir.ExportError) as info:
        t2ir.export(Untraceable(), (torch.randn(4, 3),), tmp_path / "m.nnef.tgz")
    assert str(info.value).startswith("torch.export could not trace the model:")
    assert "data-dependent" in str(info.value)
    assert "def forward" not in capfd.readouterr().err  # torch's partial graph is not printed
    nothing_but(tmp_path)


class Inverse(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.inv(x)


def test_unsupported_op(tmp_path):
    line = api_error(t2ir.export, Inverse(), (torch.randn(3, 3),), tmp_path / "m.nnef.tgz",
                     error=t2ir.UnsupportedOpsError)
    assert line.startswith("1 operator(s) have no NNEF translation: aten.linalg_inv.")
    nothing_but(tmp_path)


# ---- where the output goes ------------------------------------------------------------------

def _export_linear(path: Path, **kw) -> t2ir.ExportResult:
    return t2ir.export(torch.nn.Linear(4, 2), (torch.randn(3, 4),), path, **kw)


def test_output_path_that_exists(tmp_path):
    _export_linear(tmp_path / "m.nnef.tgz")
    before = (tmp_path / "m.nnef.tgz").read_bytes()
    line = api_error(_export_linear, tmp_path / "m.nnef.tgz")
    assert line.startswith(f"{tmp_path / 'm.nnef.tgz'} already exists") and "overwrite=True" in line
    assert (tmp_path / "m.nnef.tgz").read_bytes() == before


def test_output_path_that_is_a_file(tmp_path):
    (tmp_path / "model").write_text("my notes")
    line = api_error(_export_linear, tmp_path / "model", overwrite=True)
    assert line == f"{tmp_path / 'model'} is a file and the export is a folder: remove it or choose another " \
                   "path (it was left as it is)"
    assert (tmp_path / "model").read_text() == "my notes"
    (tmp_path / "parent").write_text("not a folder")
    line = api_error(_export_linear, tmp_path / "parent" / "m.nnef.tgz")
    assert line == f"cannot write {tmp_path / 'parent' / 'm.nnef.tgz'}: {tmp_path / 'parent'} is a file, not a folder"
    nothing_but(tmp_path, "model", "parent")


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: read-only, or /sys for root (who ignores
    permission bits)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").mkdir()
    except PermissionError:
        return folder
    (folder / "probe").rmdir()
    return Path("/sys")


def test_output_path_that_is_unwritable(tmp_path):
    folder = _unwritable_folder(tmp_path)
    try:
        line = api_error(_export_linear, folder / "m.nnef.tgz")
        assert line.startswith(f"export to {folder / 'm.nnef.tgz'} failed: ")
        assert "Permission denied" in line or "Operation not permitted" in line
        assert line.endswith("nothing was written")
    finally:
        (tmp_path / "read-only").chmod(0o700)


def test_dump_ir_folder_that_is_unwritable(tmp_path):
    folder = _unwritable_folder(tmp_path)
    try:
        line = api_error(_export_linear, tmp_path / "m.nnef.tgz", dump_ir=folder / "dumps")
        assert line.startswith(f"cannot write the IR dumps to {folder / 'dumps'}: ")
    finally:
        (tmp_path / "read-only").chmod(0o700)
    nothing_but(tmp_path, "read-only")


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after 1000 bytes."""

    def write(self, data) -> int:
        if self.tell() + len(data) > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
        return super().write(data)


@pytest.mark.parametrize("name", ["model.nnef.tgz", "model"])
def test_disk_full_mid_write(tmp_path, monkeypatch, name):
    previous = _export_linear(tmp_path / name).path
    before = sorted((p.relative_to(tmp_path), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    monkeypatch.setattr(archive, "open", lambda path, mode="r": _FullDisk(path, mode.replace("b", "")), raising=False)
    big = torch.nn.Linear(64, 64)
    with pytest.raises(t2ir.T2IRError) as info:
        t2ir.export(big, (torch.randn(3, 64),), tmp_path / name, overwrite=True)
    # a folder names the weight file; the streamed archive buffers, so the archive is what failed
    failed = "model.nnef.tgz" if name.endswith(".tgz") else "weight.dat"
    assert str(info.value) == (f"export to {previous} failed: No space left on device (writing {failed}); "
                               "the previous export is unchanged; free some space and export again")
    after = sorted((p.relative_to(tmp_path), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    assert after == before  # the previous export, byte for byte, and nothing else


def test_tensor_names_cannot_leave_the_output_folder(tmp_path):
    """Constant names become .dat file names; ones that look like paths stay inside the export."""
    class Sneaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name in self.NAMES:  # names with "." are refused by torch itself
                self.register_buffer(name, torch.rand(3))

        NAMES = ("/tmp/t2ir-sneaky", "\\windows\\evil", "~root", "/")

        def forward(self, x):
            for name in self.NAMES:
                x = x + getattr(self, name)
            return x

    out = tmp_path / "out" / "m.nnef.tgz"
    t2ir.export(Sneaky(), (torch.randn(2, 3),), out, check_io=True)
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert all("/" not in n and "\\" not in n and not n.startswith((".", "~")) for n in names), names
    assert len(names) == 2 + len(Sneaky.NAMES)  # graph.nnef, graph.t2ir and one .dat each
    assert not Path("/tmp/t2ir-sneaky.dat").exists()
    nothing_but(tmp_path, "out")
    nothing_but(tmp_path / "out", "m.nnef.tgz")


# ---- export-llm: broken model folders -------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_llm_folder(tmp_path_factory.mktemp("hf") / "tiny-llama")


def _broken(model_dir: Path, tmp_path: Path, damage) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    damage(broken)
    return broken


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _corrupt_header(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[8:40] = b"\xff" * 32
    p.write_bytes(bytes(data))


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (folder / "config.json").write_text(json.dumps(cfg))


def _index_missing_shard(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {"lm_head.weight": "model-00002-of-00002.safetensors",
                  "model.embed_tokens.weight": "model-00001-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


LLM_CASES = {
    "truncated-safetensors": (lambda f: _truncate(f / "model.safetensors"),
                              "model.safetensors is not a readable safetensors file"),
    "corrupted-safetensors": (lambda f: _corrupt_header(f / "model.safetensors"),
                              "model.safetensors is not a readable safetensors file"),
    "config-without-vocab_size": (lambda f: _edit_config(f, vocab_size=None),
                                  "config.json does not match the weights: model.embed_tokens.weight is [258, 64] "
                                  "in model.safetensors, config.json implies [32000, 64]"),
    "config-without-model_type": (lambda f: _edit_config(f, model_type=None), "config.json has no model_type"),
    "index-naming-a-missing-shard": (_index_missing_shard, "model.safetensors.index.json lists shards that are "
                                     "missing: model-00002-of-00002.safetensors"),
}


@pytest.mark.parametrize("case", sorted(LLM_CASES))
def test_broken_model_folder(model_dir, tmp_path, case):
    damage, expected = LLM_CASES[case]
    broken = _broken(model_dir, tmp_path, damage)
    line = cli_error("export-llm", "-d", str(broken), "-e", str(tmp_path / "out"), "--quiet")
    assert expected in line
    nothing_but(tmp_path, "broken")


def test_tokenizer_missing_when_requested(model_dir, tmp_path):
    broken = _broken(model_dir, tmp_path, lambda f: (f / "tokenizer.json").unlink())
    line = cli_error("export-llm", "-d", str(broken), "-e", str(tmp_path / "out"), "--quiet",
                     "--with-tokenizer-and-config")
    assert line == f"error: {broken} has no tokenizer files (tokenizer.json): save the tokenizer next to the " \
                   "model or drop --with-tokenizer-and-config"
    nothing_but(tmp_path, "broken")


def test_export_dir_that_is_a_file(model_dir, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    line = cli_error("export-llm", "-d", str(model_dir), "-e", str(tmp_path / "out"), "--quiet", "--force")
    assert line == f"error: {tmp_path / 'out'} is a file and the export is a folder: remove it or choose " \
                   "another path (it was left as it is)"
    assert (tmp_path / "out").read_text() == "not a folder"


def test_nan_weight_under_q4_0(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    def poison(folder: Path) -> None:
        tensors = load_file(folder / "model.safetensors")
        tensors["model.layers.0.mlp.up_proj.weight"][3, 5] = float("nan")
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})

    broken = _broken(model_dir, tmp_path, poison)
    line = cli_error("export-llm", "-d", str(broken), "-e", str(tmp_path / "out"), "--quiet",
                     "--compression", "q4_0")
    assert line == "error: cannot write constant 'model.layers.0.mlp.up_proj.weight':"
    nothing_but(tmp_path, "broken")
