"""Hypothesis settings shared by the property tests.

CI runs the same derandomized examples every time, so a failure reproduces and never flakes;
`T2IR_FUZZ=N` runs N fresh random examples per property test instead, for a longer hunt:

    T2IR_FUZZ=500 python -m pytest -q tests/test_property_*.py
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ = int(os.environ.get("T2IR_FUZZ", "0"))

settings.register_profile("t2ir", deadline=None, derandomize=not FUZZ, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("t2ir")


def examples(n: int) -> settings:
    """Settings of a property test that runs `n` examples in CI (T2IR_FUZZ overrides)."""
    return settings(max_examples=FUZZ or n)
