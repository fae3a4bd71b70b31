"""docs/debugging.md runs as written: its ```python blocks in one namespace and its ```bash blocks
as shell scripts, in order, in one fresh folder (with this interpreter's `t2ir` on PATH)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from t2ir.ops.builtins import ensure_registered
from t2ir.ops.registry import REGISTRY

DOC = Path(__file__).resolve().parents[1] / "docs" / "debugging.md"
ROOT = DOC.parents[1]


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(python|bash)\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def registry_restored():
    ensure_registered()
    saved = dict(REGISTRY.ops)
    yield
    REGISTRY.ops.clear()
    REGISTRY.ops.update(saved)


def test_walkthrough_runs_as_written(tmp_path, monkeypatch, registry_restored):
    found = blocks()
    assert [k for k, _ in found].count("bash") >= 4 and [k for k, _ in found].count("python") >= 6
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    namespace: dict = {"__name__": "debugging_doc"}
    for i, (kind, code) in enumerate(found):
        if kind == "python":
            exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)
        else:
            r = subprocess.run(["bash", "-eu", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=600)
            assert r.returncode == 0, f"block {i} failed:\n{code}\n{r.stdout}\n{r.stderr}"
            assert "Traceback" not in r.stderr
    assert (tmp_path / "lower.html").exists() and (tmp_path / "llm-out" / "manifest.json").exists()
