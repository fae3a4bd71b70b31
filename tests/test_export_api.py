"""t2ir.export's contract: names, dynamic axes, check_io, atomic output."""

import pytest
import torch
import torch.nn as nn

import t2ir
from t2ir.ops.builtins import ensure_registered
from t2ir.ops.registry import REGISTRY


class TwoOut(nn.Module):
    def forward(self, x, y):
        return torch.relu(x) + y, x * 2


def test_check_io_reports_the_max_difference(tmp_path):
    ensure_registered()  # (the built-in translations register on first use)
    builtin = REGISTRY.ops["aten.relu"]

    @t2ir.register_op("aten.relu", override=True)
    def wrong_relu(node, ctx):  # deliberately wrong: sigmoid instead of relu
        return ctx.emit("nnef.sigmoid", [node.inputs[0]], ctx.out)

    try:
        with pytest.raises(t2ir.CheckIOError, match=r"sum: max \|diff\| = [0-9.e-]+"):
            t2ir.export(TwoOut(), (torch.randn(2, 3), torch.randn(2, 3)), tmp_path / "m",
                        output_names=["sum", "double"], check_io=True)
    finally:
        REGISTRY.ops["aten.relu"] = builtin


def test_names_follow_torch_onnx_conventions(tmp_path):
    result = t2ir.export(TwoOut(), (torch.randn(2, 3), torch.randn(2, 3)), tmp_path / "m",
                         output_names=["sum", "double"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                         check_io=True)
    g = result.graph
    assert [v.name for v in g.inputs] == ["x", "y"] and [v.name for v in g.outputs] == ["sum", "double"]
    assert g.symbols == ("n",)
    text = (result.path / "graph.nnef").read_text()
    assert "graph main( x, y ) -> ( sum, double )" in text
    assert "extension tract_symbol n;" in text


@pytest.mark.parametrize("axes, message", [
    ({"z": {0: "b"}}, "not an input"),
    ({"x": {5: "b"}}, "does not exist"),
    ({"x": {0: "1b"}}, "not an identifier"),
])
def test_bad_dynamic_axes_are_explained(tmp_path, axes, message):
    with pytest.raises(t2ir.ExportError, match=message):
        t2ir.export(TwoOut(), (torch.randn(2, 3), torch.randn(2, 3)), tmp_path / "m", dynamic_axes=axes)


def test_existing_output_is_never_overwritten_without_permission(tmp_path):
    target = tmp_path / "m.nnef.tgz"
    target.write_bytes(b"a good model")
    with pytest.raises(t2ir.T2IRError, match="already exists"):
        t2ir.export(nn.Linear(3, 3), (torch.randn(2, 3),), target)
    assert target.read_bytes() == b"a good model"
    t2ir.export(nn.Linear(3, 3), (torch.randn(2, 3),), target, overwrite=True, check_io=True)
    assert target.read_bytes() != b"a good model"


def test_failed_export_leaves_nothing_behind(tmp_path):
    class Bad(nn.Module):
        def forward(self, x):
            return torch.fft.fft(x)  # a complex output: tract has none

    with pytest.raises(t2ir.T2IRError):
        t2ir.export(Bad(), (torch.randn(4, 8),), tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []


def test_weight_labels_cannot_escape_the_output_folder(tmp_path):
    from t2ir.emitters.nnef_text import dat_labels
    from t2ir.ir import Graph, InMemory
    from t2ir.types import DType, TensorType

    g = Graph()
    names = ["../../etc/passwd", "/abs/path", ".hidden", "a/b", "A/B"]
    consts = [g.add_const(f"c{i}", TensorType(DType.f32, (1,)), InMemory(None), label=n) for i, n in enumerate(names)]
    labels = list(dat_labels(consts).values())
    assert all("/" not in l and not l.startswith(".") and ".." not in l for l in labels)
    assert len({l.lower() for l in labels}) == len(labels)


def test_failure_while_writing_weights_leaves_no_partial_model(tmp_path):
    from t2ir.emitters.writer import write_model
    from t2ir.ir import Graph, TensorSource
    from t2ir.types import DType, TensorType

    class Broken(TensorSource):
        def load(self):
            raise OSError("disk read failed")

    g = Graph()
    x = g.add_input("x", TensorType(DType.f32, (2,)))
    w = g.add_const("w", TensorType(DType.f32, (2,)), Broken())
    g.set_outputs([g.op("nnef.add", [x, w], x.type, name="y")])
    for target in (tmp_path / "folder", tmp_path / "archive.nnef.tgz"):
        with pytest.raises(t2ir.T2IRError, match="disk read failed; nothing was written"):
            write_model(g, target)
    assert list(tmp_path.iterdir()) == []


def test_forward_with_star_args_keeps_its_dynamic_axes(tmp_path):
    """torch.export wants the dynamic shapes of `*xs` as one tuple under the name `xs`."""
    from tests.helpers import export_and_compare

    class Cat(nn.Module):
        def forward(self, *xs):
            return torch.cat(xs, dim=1)

    export_and_compare(Cat(), (torch.randn(2, 3), torch.randn(2, 4)), tmp_path,
                       more_args=[(torch.randn(5, 3), torch.randn(5, 4))], input_names=["a", "b"],
                       dynamic_axes={"a": {0: "B"}, "b": {0: "B"}})
