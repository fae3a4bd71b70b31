"""What t2ir.export accepts: size-1 examples on dynamic axes, TorchScript modules as they are
(traced, scripted, loaded), ExportedPrograms, forwards with *args; each checked in tract."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import t2ir
from t2ir.tract_run import load_runnable, run_tract
from tests.helpers import export_and_compare


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.conv(x).relu().mean((2, 3)))


def test_batch_one_example_on_a_dynamic_axis(tmp_path):
    """torch.onnx users trace with batch 1: the axis stays dynamic and runs at other sizes."""
    result = export_and_compare(Tiny(), (torch.randn(1, 3, 9, 9),), tmp_path, input_names=["x"],
                                dynamic_axes={"x": {0: "batch", 2: "H", 3: "W"}},
                                more_args=[(torch.randn(3, 3, 12, 7),)])
    assert result.graph.inputs[0].shape[0] == t2ir.types.symbol("batch")


class PinsBatchToOne(nn.Module):
    def forward(self, x):
        return x.view(1, 4) * 2  # pins-batch


def test_a_model_that_only_works_at_size_one_is_reported(tmp_path):
    with pytest.raises(t2ir.ExportError) as info:
        t2ir.export(PinsBatchToOne(), (torch.randn(1, 4),), tmp_path / "m", input_names=["x"],
                    dynamic_axes={"x": {0: "batch"}})
    msg = str(info.value)
    assert "size 1 on dynamic axis 0 of 'x'" in msg and "make that axis static" in msg
    assert not (tmp_path / "m").exists()


class ShapeBranch(nn.Module):
    def forward(self, x):
        if x.shape[1] > 2:
            return torch.relu(x) * 2
        return x


class ValueBranch(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # value-branch
            return x * 2
        return x


class Unrolled(nn.Module):
    def forward(self, x):
        for _ in range(3):
            x = x * 2 + 1
        return x


def test_traced_module_is_exported_as_it_is(tmp_path):
    traced = torch.jit.trace(Tiny().eval(), (torch.randn(2, 3, 8, 8),))
    export_and_compare(traced, (torch.randn(2, 3, 8, 8),), tmp_path, input_names=["x"],
                       dynamic_axes={"x": {0: "batch"}}, more_args=[(torch.randn(5, 3, 8, 8),)])


def test_scripted_branch_on_a_shape_is_folded(tmp_path):
    scripted = torch.jit.script(ShapeBranch())
    result = export_and_compare(scripted, (torch.randn(2, 4),), tmp_path, input_names=["x"],
                                dynamic_axes={"x": {0: "batch"}}, more_args=[(torch.randn(3, 4),)])
    assert {n.op for n in result.graph.nodes} >= {"nnef.relu"}


def test_scripted_loop_with_a_constant_trip_count_is_unrolled(tmp_path):
    export_and_compare(torch.jit.script(Unrolled()), (torch.randn(2, 3),), tmp_path)


def test_scripted_branch_on_a_value_is_refused(tmp_path):
    with pytest.raises(t2ir.ExportError) as info:
        t2ir.export(torch.jit.script(ValueBranch()), (torch.randn(2, 3),), tmp_path / "m")
    line = next(i for i, text in enumerate(open(__file__), 1) if "# value-branch" in text)
    msg = str(info.value)
    assert "data-dependent control flow" in msg and f"test_frontends.py:{line}: if x.sum() > 0:" in msg


def test_loaded_torchscript_file(tmp_path):
    """torch.jit.load gives plain tensors, not Parameters; they still become NNEF variables."""
    path = tmp_path / "tiny.pt"
    torch.jit.trace(Tiny().eval(), (torch.randn(1, 3, 8, 8),)).save(str(path))
    loaded = torch.jit.load(str(path))
    result = export_and_compare(loaded, (torch.randn(2, 3, 8, 8),), tmp_path, input_names=["x"],
                                dynamic_axes={"x": {0: "batch"}}, more_args=[(torch.randn(1, 3, 8, 8),)])
    assert {v.const.label for v in result.graph.consts} >= {"conv.weight", "head.weight"}


def test_exported_program_keeps_its_dynamic_axes(tmp_path):
    batch = torch.export.Dim("batch")
    ep = torch.export.export(Tiny().eval(), (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: batch},))
    result = t2ir.export(ep, None, tmp_path / "m.nnef.tgz", dynamic_axes={"x": {0: "N"}}, check_io=True)
    assert [str(d) for d in result.graph.inputs[0].shape] == ["N", "3", "8", "8"]
    x = torch.randn(5, 3, 8, 8)
    got = run_tract(load_runnable(result.path), [x.numpy()])[0]
    torch.testing.assert_close(torch.from_numpy(got), ep.module()(x), atol=1e-4, rtol=0)


def test_exported_program_refuses_to_make_a_static_axis_dynamic(tmp_path):
    ep = torch.export.export(Tiny().eval(), (torch.randn(2, 3, 8, 8),))
    with pytest.raises(t2ir.ExportError, match="static .* in the exported program"):
        t2ir.export(ep, None, tmp_path / "m", dynamic_axes={"x": {0: "N"}})


class VarArgs(nn.Module):
    def forward(self, x, *rest):
        return x + sum(rest)


def test_star_args_forward_with_dynamic_axes(tmp_path):
    args = (torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3))
    export_and_compare(VarArgs(), args, tmp_path, input_names=["a", "b", "c"],
                       dynamic_axes={"a": {0: "n"}, "b": {0: "n"}, "c": {0: "n"}},
                       more_args=[tuple(torch.randn(4, 3) for _ in range(3))])


def test_a_model_failing_at_its_own_example_is_not_blamed_on_size_one(tmp_path):
    """SSD's backbone at too small an image fails at any batch: the error is the model's own,
    without the size-1 note (which is for models that only fail once the batch is 2)."""

    class TooSmall(nn.Module):
        def forward(self, x):
            return torch.nn.functional.conv2d(x, torch.ones(1, 1, 5, 5))

    with pytest.raises(t2ir.ExportError) as err:
        t2ir.export(TooSmall(), (torch.randn(1, 1, 3, 3),), tmp_path / "m", dynamic_axes={"x": {0: "batch"}})
    assert "size 1" not in str(err.value) and "Kernel size" in str(err.value)
