"""pytest configuration: deterministic seeds for every test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    """A tiny random Llama (+ tokenizer) saved with save_pretrained, shared by the tests."""
    from t2ir.demo import make_tiny_llm_folder

    return make_tiny_llm_folder(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="session")
def llm_export(tiny_llm_dir, tmp_path_factory):
    """One `t2ir export-llm --dump-ir --check-passes` of the tiny Llama: (out folder, dumps folder)."""
    from typer.testing import CliRunner

    from t2ir.cli import _register, app

    _register()
    root = tmp_path_factory.mktemp("llm-export")
    out, dumps = root / "out", root / "dumps"
    result = CliRunner().invoke(app, ["export-llm", "-d", str(tiny_llm_dir), "-e", str(out), "--dump-ir", str(dumps),
                                      "--check-passes", "--check-io", "very"])
    assert result.exit_code == 0, result.output
    return out, dumps, result.output
