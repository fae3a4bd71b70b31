"""Every command the README shows runs as written (its demo folder moved to a temporary one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path: Path):
    python_block, = blocks("python")
    subprocess.run([sys.executable, "-c", python_block], cwd=tmp_path, check=True, timeout=600)
    assert (tmp_path / "mlp.nnef.tgz").exists() and (tmp_path / "ir-dumps" / "00-lift.t2ir").exists()
    shell = blocks("bash")[-1].replace("/tmp/t2ir-demo", str(tmp_path / "demo"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", shell], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fox jumps over the lazy dog" in result.stdout  # what the README says the user will see
