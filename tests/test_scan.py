"""torch's `scan` higher-order op exported as tract's scan (t2ir.frontend.scan): one loop over a
symbolic length, its step a fragment of its own; checked against eager in tract and in t2ir's
interpreter at lengths other than the traced one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch._higher_order_ops.scan import scan

import t2ir
from t2ir import driver
from t2ir.interpret import Interpreter
from t2ir.tract_run import load_runnable, run_tract


class GatedRecurrence(torch.nn.Module):
    """Two carries (a state and a running count), two scanned inputs, a weight read by the step."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(6, 6) * 0.4)

    def forward(self, x: torch.Tensor, gate: torch.Tensor, h0: torch.Tensor):
        def step(carry, xs):
            h, n = carry
            x_t, g_t = xs
            h = torch.sigmoid(g_t) * h + torch.tanh(x_t @ self.w)
            return (h, n + 1.0), h * 2.0

        (h, n), ys = scan(step, (h0, torch.zeros(1, 1)), (x, gate), dim=1)
        return ys, h, n


def _inputs(length: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, length, 6, generator=g), torch.randn(1, length, 6, generator=g), torch.randn(1, 6, generator=g)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = GatedRecurrence().eval()
    path = tmp_path_factory.mktemp("scan") / "scan.nnef.tgz"
    t2ir.export(model, _inputs(4, 0), path, input_names=["x", "gate", "h0"],
                dynamic_axes={"x": {1: "S"}, "gate": {1: "S"}})
    return model, path


@pytest.mark.parametrize("length", [1, 3, 11])
def test_scan_over_any_length_matches_eager_in_tract(exported, length):
    model, path = exported
    args = _inputs(length, length)
    got = run_tract(load_runnable(path), [a.numpy() for a in args])
    with torch.no_grad():
        want = model(*args)
    assert got[0].shape == (1, length, 6)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-5, rtol=1e-5)


def test_one_scan_op_with_its_step_as_a_fragment(exported):
    import tarfile

    _, path = exported
    with tarfile.open(path) as tar:
        text = tar.extractfile("graph.nnef").read().decode()
    assert text.count("tract_core_scan(") == 1 and "fragment t2ir_scan_step_" in text
    assert 'full = [("full0", w)]' in text  # the weight is read whole, not copied into the body


def test_interpreter_runs_the_scan_as_eager():
    model = GatedRecurrence().eval()
    graph = t2ir.lift(model, _inputs(4, 0), input_names=["x", "gate", "h0"],
                      dynamic_axes={"x": {1: "S"}, "gate": {1: "S"}})
    driver.compile_graph(graph, t2ir.ExportOptions())
    args = _inputs(7, 5)
    with torch.no_grad():
        want = model(*args)
    for got, w in zip(Interpreter(graph).outputs(list(args)), want):
        torch.testing.assert_close(got, w, atol=1e-5, rtol=1e-5)


class StepWithTensorsOfItsOwn(torch.nn.Module):
    """The step's antialiased resize lowers to products with interpolation matrices: tensors the
    lowered body makes, which a fragment cannot hold."""

    def forward(self, x: torch.Tensor):
        def step(h, x_t):
            up = torch.nn.functional.interpolate(x_t, size=(3, 5), mode="bilinear", antialias=True)
            h = 0.5 * h + up
            return h, h * 2.0

        return scan(step, torch.zeros(1, 1, 3, 5), x, dim=1)[1]


def test_tensors_the_step_makes_are_fed_from_the_graph(tmp_path):
    model = StepWithTensorsOfItsOwn().eval()
    path = tmp_path / "m.nnef.tgz"
    t2ir.export(model, (torch.randn(1, 3, 1, 6, 9),), path, dynamic_axes={"x": {1: "S"}})
    x = torch.randn(1, 5, 1, 6, 9)
    got = run_tract(load_runnable(path), [x.numpy()])[0]
    np.testing.assert_allclose(got, model(x).numpy(), atol=1e-5, rtol=1e-5)
