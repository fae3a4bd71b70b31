"""pytest configuration: deterministic seeds for every test, hypothesis settings, and a count of
the cases each property test ran (printed at the end of the run)."""

import collections

import pytest
import torch

import tests.fuzzing  # noqa: F401 (loads the hypothesis profile)

_CASES = pytest.StashKey[collections.Counter]()


def pytest_configure(config):
    config.stash[_CASES] = collections.Counter()


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
