"""A fast subset of the OpInfo conformance run (`python -m t2ir.tools.opinfo`, docs/ops.md):
torch's own sample inputs for a spread of ops, each exported alone and compared in tract. Every
sample must pass or be refused with one of t2ir's errors; none may give wrong numbers."""

from __future__ import annotations

import pytest

pytest.importorskip("expecttest")  # torch's OpInfo database imports it

SUBSET = [
    "add", "mul", "div.no_rounding_mode", "where", "clamp", "nn.functional.conv2d", "nn.functional.max_pool2d",
    "nn.functional.interpolate.bilinear", "sort", "cumsum", "gather", "scatter_add", "index_select",
    "nn.functional.layer_norm", "softmax", "matmul", "einsum", "nn.functional.pad.reflect", "flip", "roll", "topk",
    "var", "logsumexp", "nn.functional.gelu", "atan2", "unfold", "diagonal", "take_along_dim", "expm1",
    "nn.functional.pixel_shuffle",
]
SAMPLES = 2


@pytest.fixture(scope="module")
def ops():
    from t2ir.tools.opinfo import float32_ops, op_key

    found = {op_key(op): op for op in float32_ops(set(SUBSET))}
    assert set(found) >= set(SUBSET), set(SUBSET) - set(found)
    return found


@pytest.mark.parametrize("name", SUBSET)
def test_opinfo_samples(name, ops, tmp_path):
    from t2ir.tools.opinfo import run_sample, samples

    outcomes = [run_sample(ops[name], s, tmp_path) for s in samples(ops[name], SAMPLES)]
    failed = [o.reason for o in outcomes if o.status == "failed"]
    assert not failed, failed
    assert any(o.status == "passed" for o in outcomes), [o.reason for o in outcomes]
