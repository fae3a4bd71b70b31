"""`t2ir export` on saved models: an ExportedProgram (.pt2) and a TorchScript file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from t2ir.cli import _register, app
from t2ir.tract_run import load_runnable, run_tract

_register()
runner = CliRunner()


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("saved")
    model = Net().eval()
    dyn = torch.export.Dim.DYNAMIC
    ep = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},))
    torch.export.save(ep, d / "net.pt2")
    torch.jit.trace(model, (torch.randn(1, 3, 16, 16),)).save(str(d / "net.pt"))
    return d, model


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_pt2_with_its_own_example_and_named_axes(saved, tmp_path):
    d, model = saved
    out = tmp_path / "net.nnef.tgz"
    result = cli("export", d / "net.pt2", "-o", out, "--dynamic-axes", "x:0=batch,2=H,3=W", "--check-io", "approximate")
    assert result.exit_code == 0, result.output
    assert "inputs: x f32[batch, 3, H, W]" in result.output and "check output" in result.output
    x = torch.randn(3, 3, 20, 24)
    got = run_tract(load_runnable(out), [x.numpy()])[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)


def test_torchscript_file_needs_and_takes_example_inputs(saved, tmp_path):
    d, model = saved
    result = cli("export", d / "net.pt", "-o", tmp_path / "a")
    assert result.exit_code == 2 and "--input NAME=SHAPE" in result.output
    result = cli("export", d / "net.pt", "-o", tmp_path / "b", "--input", "image=1,3,16,16",
                 "--dynamic-axes", "image:0=batch", "--output-names", "logits", "--check-io", "close",
                 "--atol", "1e-5")
    assert result.exit_code == 0, result.output
    assert "inputs: image f32[batch, 3, 16, 16]" in result.output and "outputs: logits f32[batch, 5]" in result.output


def test_bad_inputs_are_one_line_errors(saved, tmp_path):
    d, _ = saved
    (tmp_path / "weights.pt").write_bytes(b"not a model")
    for args, message in [
        ((tmp_path / "weights.pt", "-o", tmp_path / "x"), "neither an ExportedProgram"),
        ((d / "net.pt", "-o", tmp_path / "x", "--input", "x=1;3"), "NAME=D0,D1"),
        ((d / "net.pt2", "-o", tmp_path / "x", "--check-io", "loose"), "use one of exact, close"),
        ((d / "net.pt2", "-o", tmp_path / "x", "--dynamic-axes", "x0"), "NAME:AXIS=SYMBOL"),
    ]:
        result = cli("export", *args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
