"""Half precision: f16 models run in f16 in tract; bf16 models are exported as f16."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import t2ir
from t2ir.tract_run import load_runnable, run_tract


def mlp(dtype):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 8)).to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_mlp(tmp_path, dtype):
    model = mlp(dtype)
    x = torch.randn(4, 16)
    result = t2ir.export(model, (x.to(dtype),), tmp_path / "m.nnef.tgz", input_names=["x"],
                         dynamic_axes={"x": {0: "batch"}}, check_io=True, atol=3e-2)
    assert all(v.dtype != t2ir.DType.bf16 for v in result.graph.inputs + result.graph.consts)
    assert result.graph.inputs[0].dtype == t2ir.DType.f16
    got = run_tract(load_runnable(result.path), [x.half().numpy()])[0]
    assert got.dtype == np.float16
    want = model.float()(x).detach().numpy()  # f32 reference of the same weights
    np.testing.assert_allclose(got.astype(np.float32), want, atol=3e-2, rtol=0)


def test_bf16_to_f32_on_request(tmp_path):
    model = mlp(torch.bfloat16)
    x = torch.randn(4, 16)
    options = t2ir.ExportOptions(bf16_as=t2ir.DType.f32)
    result = t2ir.export(model, (x.bfloat16(),), tmp_path / "m", options=options)
    assert result.graph.inputs[0].dtype == t2ir.DType.f32
    got = run_tract(load_runnable(result.path), [x.float().numpy()])[0]
    np.testing.assert_allclose(got, model.float()(x).detach().numpy(), atol=1e-4, rtol=0)


class LearnedSlope(nn.Module):
    """An activation whose parameters go through ops with literal operands before meeting the
    input (transformers' xIELU: softplus(alpha)): tract folds those ops on the constants."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([0.8]))

    def forward(self, x):
        return x * nn.functional.softplus(self.alpha) + (self.alpha * 2.0 - 1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_literal_ops_on_constants_keep_the_constants_type(tmp_path, dtype):
    model = LearnedSlope().to(dtype)
    x = torch.randn(3, 5).to(dtype)
    result = t2ir.export(model, (x,), tmp_path / "m.nnef.tgz", check_io=True)
    got = run_tract(load_runnable(result.path), [x.numpy()])[0]
    assert got.dtype == x.numpy().dtype
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=2e-3 if dtype == torch.float16 else 1e-9)
