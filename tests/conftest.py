"""pytest configuration: deterministic seeds for every test, hypothesis settings, and a count of
the cases each property test ran (printed at the end of the run)."""

import collections
import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("torchvision") is not None:
    # a torchvision whose C++ operators do not load beside the CPU torch breaks `import
    # transformers` (which imports it); t2ir's compat import makes it importable first
    from t2ir.tools.torchvision_compat import import_torchvision

    import_torchvision()

import tests.fuzzing  # noqa: F401 (loads the hypothesis profile)

_CASES = pytest.StashKey[collections.Counter]()


def pytest_configure(config):
    config.stash[_CASES] = collections.Counter()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)  # one core per worker: the workers share the machine's cores


def pytest_sessionfinish(session):
    """A worker sends its property-case counts to the controller (pytest-xdist)."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["property_cases"] = dict(session.config.stash[_CASES])


def pytest_testnodedown(node, error):
    """The controller adds up its workers' counts."""
    node.config.stash[_CASES].update(getattr(node, "workeroutput", {}).get("property_cases", {}))


@pytest.fixture(scope="session")
def property_cases(request) -> collections.Counter:
    """Property tests add one per example they run; the total is reported per test."""
    return request.config.stash[_CASES]


def pytest_terminal_summary(terminalreporter, config):
    counts = config.stash.get(_CASES, None)
    if counts:
        terminalreporter.write_sep("-", "property tests: cases run")
        for name, n in sorted(counts.items()):
            terminalreporter.write_line(f"{n:6d}  {name}")


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
