"""A few of transformers' masked-LM encoders (bench/sweep_encoders.py runs them all): exported
with a dynamic batch and length and checked in tract against transformers on a padded batch."""

from __future__ import annotations

import pytest

from encoders import TOLERANCE, build_masked_lm, export_and_check

# bert: the common case; fnet: FFT token mixing (complex values as real pairs, tract's FFT);
# eurobert: grouped heads with a per-row padding mask
TYPES = ["bert", "fnet", "eurobert"]


@pytest.mark.parametrize("model_type", TYPES)
def test_encoder_matches_transformers(model_type, tmp_path):
    model, config = build_masked_lm(model_type)
    assert export_and_check(model, config, tmp_path / "model") <= TOLERANCE
