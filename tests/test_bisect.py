"""`t2ir.bisect` / `t2ir bisect` find the first wrong value of an export, and `check_passes` /
`--check-passes` name the pass that breaks numerics, on real exports with planted mistakes."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import t2ir
from t2ir.cli import _register, app
from t2ir.interpret.ops import REFERENCE
from t2ir.ops.builtins import ensure_registered
from t2ir.ops.registry import REGISTRY
from t2ir.passcheck import PassNumericsError
from t2ir.rewrite import RewritePass, op, rule, var
from t2ir.tools.bisect import TRACT, TRANSLATION

_register()
runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_registries():
    """Planted translations, references and passes are undone after each test."""
    ensure_registered()
    ops, refs = dict(REGISTRY.ops), dict(REFERENCE)
    yield
    REGISTRY.ops.clear()
    REGISTRY.ops.update(ops)
    REFERENCE.clear()
    REFERENCE.update(refs)
    t2ir.unregister_pass("break-mul")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(8, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.down = torch.nn.Linear(16, 4)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.norm(self.up(x)))  # the line bisect must point at
        return self.down(h) * 2


GELU_LINE = Net.forward.__code__.co_firstlineno + 1


def plant_wrong_gelu():
    @t2ir.register_op("aten.gelu", override=True)
    def gelu_as_relu(node, ctx):
        return ctx.emit("nnef.relu", [node.inputs[0]], ctx.out)


def test_bisect_of_a_correct_export_finds_nothing():
    report = t2ir.bisect(Net().eval(), (torch.randn(3, 8),), input_names=["x"], dynamic_axes={"x": {0: "B"}})
    assert report.first is None and "all within tolerance" in str(report)
    assert sum(c.vs_reference is not None for c in report.checked) >= 5


def test_bisect_finds_a_planted_wrong_translation():
    plant_wrong_gelu()
    report = t2ir.bisect(Net().eval(), (torch.randn(3, 8),))
    first = report.first
    assert first.name == "gelu" and first.op == "nnef.relu" and first.reference_op == "aten.gelu"
    assert first.culprit == TRANSLATION
    assert first.reference_loc.endswith(f"test_bisect.py:{GELU_LINE}")
    # everything before it agreed with PyTorch
    before = report.checked[:report.checked.index(first)]
    assert before and all(c.passed for c in before)
    assert "the translation of aten.gelu or a pass before it is wrong" in str(report)


def test_bisect_tells_when_tract_disagrees_with_the_ops_meaning():
    """If t2ir meant something else by an NNEF op than tract computes, the culprit is tract's side."""
    REFERENCE["tract_core.erf"] = lambda c: torch.tanh(c.args[0])  # a wrong idea of erf
    report = t2ir.bisect(Net().eval(), (torch.randn(3, 8),))
    assert report.first.op == "tract_core.erf" and report.first.culprit == TRACT


def test_check_passes_per_pass(tmp_path):
    net, x = Net().eval(), torch.randn(3, 8)
    result = t2ir.export(net, (x,), tmp_path / "ok.nnef.tgz", check_passes=True)
    names = [c.name for c in result.pass_checks]
    assert names == ["lift"] + [r.name for r in result.passes]
    assert all(c.passed for c in result.pass_checks)
    assert result.pass_checks[0].max_abs_diff == 0.0  # the lifted graph runs the module's own ops

    @rule(op("nnef.mul", var("x"), var("y")))
    def mul_as_add(m):
        "x * y -> x + y (deliberately wrong)"
        return m.op("nnef.add", [m.x, m.y], m.out)

    t2ir.register_pass(RewritePass("break-mul", [mul_as_add]), after="lower-to-nnef")
    with pytest.raises(PassNumericsError, match="pass 'break-mul' changed the outputs") as e:
        t2ir.export(net, (x,), tmp_path / "broken.nnef.tgz", check_passes=True)
    assert "before it (lower-to-nnef)" in str(e.value)
    assert not (tmp_path / "broken.nnef.tgz").exists()


def test_export_llm_check_passes_and_op_report(llm_export):
    out, _, output = llm_export
    manifest = json.loads((out / "manifest.json").read_text())
    checks = manifest["pass_checks"]
    assert [c["pass"] for c in checks] == ["lift"] + [p["name"] for p in manifest["passes"]]
    assert all(c["passed"] for c in checks)
    assert "check-passes" in output and "op report:" in output
    rows = {r["op"]: r for r in manifest["op_report"]}
    layers = json.loads((out / "model" / "config.json").read_text())["num_hidden_layers"]
    assert rows["nnef.softmax"]["made_by"] == {  # one per fused attention, in its matmul form
        "aten.scaled_dot_product_attention -> fuse-attention -> lower-to-nnef": layers}
    assert sum(r["nodes"] for r in manifest["op_report"]) == sum(manifest["ops_after"].values())


def test_bisect_cli_on_an_export_llm_folder(llm_export, tiny_llm_dir):
    out, _, _ = llm_export
    model_dir = tiny_llm_dir
    result = runner.invoke(app, ["bisect", str(out)])
    assert result.exit_code == 2 and "-d MODEL_DIR" in result.output  # the manifest holds no local path
    result = runner.invoke(app, ["bisect", str(out), "-d", str(model_dir)])
    assert result.exit_code == 0, result.output
    assert "all within tolerance" in result.output


@pytest.mark.slow
def test_bisect_cli_finds_a_planted_wrong_translation_in_an_llm(tiny_llm_dir, tmp_path):
    @t2ir.register_op("t2ir.silu", override=True)
    def silu_as_sigmoid(node, ctx):
        return ctx.emit("nnef.sigmoid", [node.inputs[0]], ctx.out)

    broken = tmp_path / "broken"
    result = runner.invoke(app, ["export-llm", "-d", str(tiny_llm_dir), "-e", str(broken), "--quiet"])
    assert result.exit_code == 1 and "differ from PyTorch" in result.output  # the default check catches it ...
    result = runner.invoke(app, ["export-llm", "-d", str(tiny_llm_dir), "-e", str(broken), "--quiet", "-nv", "--force"])
    assert result.exit_code == 0, result.output  # ... and bisect says where
    result = runner.invoke(app, ["bisect", str(broken), "-d", str(tiny_llm_dir), "--case", "prompt"])
    assert result.exit_code == 1, result.output
    assert "nnef.sigmoid" in result.output and "model.layers.0.mlp" in result.output


def test_bisect_cli_on_any_model_with_inputs(tmp_path):
    import numpy as np

    x = torch.randn(3, 8)
    t2ir.export(Net().eval(), (x,), tmp_path / "net.nnef.tgz", input_names=["x"], dynamic_axes={"x": {0: "B"}})
    np.savez(tmp_path / "in.npz", x=torch.randn(5, 8).numpy())
    args = ["bisect", str(tmp_path / "net.nnef.tgz"), "--inputs", str(tmp_path / "in.npz")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "(0 also with the PyTorch reference): all within tolerance" in result.output
    REFERENCE["tract_core.erf"] = lambda c: torch.tanh(c.args[0])
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "tract_core.erf" in result.output and "tract's value differs" in result.output
    result = runner.invoke(app, args + ["--level", "loose"])
    assert result.exit_code == 2 and "unknown tolerance level" in result.output
