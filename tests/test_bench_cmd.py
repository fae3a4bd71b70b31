"""`t2ir bench`: llama-bench style ppN / tgN speed of an export, with the machine and versions."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from typer.testing import CliRunner

from t2ir.cli import _register, app
from t2ir.demo import make_tiny_llm_folder

_register()


def test_bench_reports_prompt_and_generation_speed(tmp_path: Path):
    model = make_tiny_llm_folder(tmp_path / "tiny")
    out = tmp_path / "out"
    runner = CliRunner()
    assert runner.invoke(app, ["export-llm", "-d", str(model), "-e", str(out), "-q", "-nv"]).exit_code == 0
    result = runner.invoke(app, ["bench", str(out), "-p", "16", "-n", "4", "-r", "2", "--past", "8",
                                 "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "pp16" in result.output and "tg4@8" in result.output and "tract 0.23.9" in result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["machine"]["cores"] and [r["test"] for r in data["results"]] == ["pp16", "tg4@8"]
    for r in data["results"]:
        assert len(r["seconds"]) == 2 and all(s > 0 for s in r["seconds"])
        assert r["tokens_per_second"] == pytest.approx(r["tokens"] / statistics.median(r["seconds"]))
    # the A/B script times single calls on a past of P random positions the same way
    from t2ir.llm.bench import Bench

    b = Bench(out)
    assert all(c.shape[2] == 8 for c in b._past(8)) and b.step(1, 8) > 0
