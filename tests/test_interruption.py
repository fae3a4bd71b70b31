"""Exports stopped mid-write, in a real subprocess: Ctrl-C (SIGINT) and SIGKILL while weights are
being written, and SIGKILL between the two renames that swap a folder export in. Each leaves the
previous export intact and no partial one; the next export to the same place removes a killed
run's staging folder (and puts back a set-aside previous export first).

The subprocess stalls after writing its second weight file, so the signal lands mid-write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import t2ir
from t2ir.emitters.staging import STAGING_SUFFIX

ROOT = Path(__file__).resolve().parents[1]

EXPORT = textwrap.dedent("""
    import os, signal, sys, time
    import torch, t2ir
    from t2ir.emitters import encodings, staging

    # Ctrl-C raises KeyboardInterrupt even when pytest runs as a background job (which starts
    # with SIGINT ignored, and a child inherits that)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    target, stop = sys.argv[1], sys.argv[2]
    plain, written = encodings.ENCODINGS["plain"], []

    def stalling_write(f, tensor, v):
        measured = plain.write(f, tensor, v)
        written.append(v)
        if stop == "mid-write" and len(written) == 2:
            print("stalled mid-write", flush=True)
            time.sleep(120)
        return measured

    encodings.register_encoding("plain", stalling_write, 0, override=True)
    if stop == "mid-swap":  # die right after the previous export is set aside
        replace = os.replace
        def dying_replace(src, dst):
            replace(src, dst)
            if str(src) == target:
                os.kill(os.getpid(), signal.SIGKILL)
        staging.os.replace = dying_replace
    if len(sys.argv) > 3:  # the command line: t2ir ARGS...
        from t2ir.cli import main
        sys.argv = ["t2ir", *sys.argv[3:]]
        main()
    else:
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
        t2ir.export(model, (torch.randn(2, 8),), target, overwrite=True)
    print("done", flush=True)
""")


def start_export(target: Path, stop: str, *cli_args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", EXPORT, str(target), stop, *cli_args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def previous_export(target: Path) -> dict[str, bytes]:
    t2ir.export(torch.nn.Linear(8, 8), (torch.randn(2, 8),), target)
    return snapshot(target)


def snapshot(target: Path) -> dict[str, bytes]:
    if target.is_file():
        return {target.name: target.read_bytes()}
    return {str(p.relative_to(target)): p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}


def staging_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(STAGING_SUFFIX))


def signal_mid_write(target: Path, sig: int, *cli_args: str) -> subprocess.CompletedProcess:
    proc = start_export(target, "mid-write", *cli_args)
    line = proc.stdout.readline()
    assert line == "stalled mid-write\n", (line, proc.stderr.read() if proc.poll() is not None else "")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("name", ["model.nnef.tgz", "model"])
def test_ctrl_c_mid_write_leaves_the_previous_export_and_no_trace(tmp_path, name):
    target = tmp_path / name
    before = previous_export(target)
    result = signal_mid_write(target, signal.SIGINT)
    assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no staging folder, no partial model


@pytest.mark.parametrize("name", ["model.nnef.tgz", "model"])
def test_sigkill_mid_write_is_cleaned_by_the_next_export(tmp_path, name):
    target = tmp_path / name
    before = previous_export(target)
    result = signal_mid_write(target, signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    assert snapshot(target) == before
    assert len(staging_folders(tmp_path)) == 1  # what a killed process cannot clean up
    with pytest.raises(t2ir.T2IRError, match="already exists"):  # refused, but the leftovers are gone
        t2ir.export(torch.nn.Linear(8, 8), (torch.randn(2, 8),), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert snapshot(target) == before


def test_sigkill_between_the_renames_puts_the_previous_export_back(tmp_path):
    """A folder export is swapped in with two renames (old aside, new in); dying between them
    leaves no export at the target until the next run puts the old one back."""
    target = tmp_path / "model"
    before = previous_export(target)
    proc = start_export(target, "mid-swap")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and len(staging_folders(tmp_path)) == 1
    t2ir.export(torch.nn.Linear(8, 8), (torch.randn(2, 8),), tmp_path / "other.nnef.tgz")  # another target
    assert not target.exists() and len(staging_folders(tmp_path)) == 1  # ...leaves it alone
    with pytest.raises(t2ir.T2IRError, match="already exists"):
        t2ir.export(torch.nn.Linear(8, 8), (torch.randn(2, 8),), target)
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "other.nnef.tgz"]


def test_a_running_export_keeps_its_staging_folder(tmp_path):
    """Another export to the same target while one runs: the running one's folder is not
    touched (its lock is held), and both finish."""
    target = tmp_path / "model.nnef.tgz"
    proc = start_export(target, "mid-write")
    assert proc.stdout.readline() == "stalled mid-write\n"
    t2ir.export(torch.nn.Linear(8, 8), (torch.randn(2, 8),), target)  # the second finishes first
    assert len(staging_folders(tmp_path)) == 1  # the running export's, kept
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.nnef.tgz"]


@pytest.mark.slow
def test_ctrl_c_during_export_llm(tmp_path):
    """The command line: the whole OUT folder is staged; Ctrl-C exits with 128 + SIGINT, quietly."""
    from t2ir.demo import make_tiny_llm_folder

    model_dir = make_tiny_llm_folder(tmp_path / "tiny-llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("an earlier export")
    result = signal_mid_write(out, signal.SIGINT, "export-llm", "-d", str(model_dir), "-e", str(out), "--force",
                              "--quiet")
    assert result.returncode == 128 + signal.SIGINT and "Traceback" not in result.stderr
    assert snapshot(out) == {"previous.txt": b"an earlier export"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny-llama"]
