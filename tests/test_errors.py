"""Errors users meet: each says what is wrong, where (op, module path, file:line) and what to
do, lists every problem at once, and is a t2ir error, never a traceback from deep inside."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import t2ir

THIS = Path(__file__).name  # source locations are shown from the top package down: tests/ is none


def line_of(marker: str) -> int:
    """The line of this file that carries `# <marker>` (so the tests survive edits)."""
    for i, text in enumerate(Path(__file__).read_text().splitlines(), 1):
        if text.rstrip().endswith(f"# {marker}"):
            return i
    raise AssertionError(f"marker {marker!r} not found")


def export_error(module: torch.nn.Module, args: tuple, tmp_path: Path, **kw) -> str:
    """Export, expecting a t2ir error; the model file must not be written."""
    path = tmp_path / "model.nnef.tgz"
    with pytest.raises(t2ir.ExportError) as info:
        t2ir.export(module, args, path, **kw)
    assert not path.exists()
    return str(info.value)


@torch.library.custom_op("t2ir_errors::swish2", mutates_args=())
def swish2(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(2 * x)


@swish2.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("t2ir_errors::clip_norm", mutates_args=())
def clip_norm(x: torch.Tensor, limit: float) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=limit)


@clip_norm.register_fake
def _(x: torch.Tensor, limit: float) -> torch.Tensor:
    return torch.empty_like(x)


class Act(torch.nn.Module):
    def forward(self, x):
        return swish2(x)  # swish2-call


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.proj(clip_norm(x, 1.0))  # clip_norm-call


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = torch.nn.Sequential(torch.nn.Linear(8, 8), Act())
        self.head = Head()

    def forward(self, x):
        return torch.linalg.inv(self.head(self.block(x)).reshape(-1, 2, 2))  # inv-call


def test_unknown_ops_are_listed_at_once(tmp_path):
    with pytest.raises(t2ir.UnsupportedOpsError) as info:
        t2ir.export(Net(), (torch.randn(3, 8),), tmp_path / "m.nnef.tgz", input_names=["x"],
                    dynamic_axes={"x": {0: "batch"}})
    msg = str(info.value)
    first = msg.splitlines()[0]
    assert "3 operator(s) have no NNEF translation" in first
    assert "docs/custom_ops.md" in first and "@t2ir.register_op" in first
    assert f"t2ir_errors.swish2: no translation registered (inputs f32[batch, 8]) at block.1 ({THIS}:" \
           f"{line_of('swish2-call')})" in msg
    assert f"t2ir_errors.clip_norm: no translation registered (inputs f32[batch, 8]) at head ({THIS}:" \
           f"{line_of('clip_norm-call')})" in msg
    assert "aten.linalg_inv" in msg and f"{THIS}:{line_of('inv-call')}" in msg
    assert "Traceback" not in msg
    assert {p.op for p in info.value.problems} == {"t2ir_errors.swish2", "t2ir_errors.clip_norm", "aten.linalg_inv"}
    assert not (tmp_path / "m.nnef.tgz").exists()


class BoolIndex(torch.nn.Module):
    def forward(self, x):
        return x[x > 0]  # bool-index


class NonZero(torch.nn.Module):
    def forward(self, x):
        return torch.nonzero(x > 0) * 2  # nonzero


class MaskedSelect(torch.nn.Module):
    def forward(self, x):
        return torch.masked_select(x, x > 0).sum()  # masked-select


class ItemSlice(torch.nn.Module):
    def forward(self, x):
        n = int((x > 0).sum())  # item
        return x[:n]


class DataBranch(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # branch
            return x
        return -x


@pytest.mark.parametrize("module,marker", [
    (BoolIndex(), "bool-index"), (NonZero(), "nonzero"), (MaskedSelect(), "masked-select"),
    (ItemSlice(), "item"), (DataBranch(), "branch"),
], ids=["bool_index", "nonzero", "masked_select", "item", "branch"])
def test_data_dependent_shapes(module, marker, tmp_path):
    msg = export_error(module, (torch.randn(3, 4),), tmp_path)
    assert "data-dependent" in msg
    assert f"{THIS}:{line_of(marker)}" in msg
    assert "torch.where" in msg  # what to do
    assert len([l for l in msg.splitlines() if l.startswith("  - ")]) == 1  # the cause, not its echoes
    assert "Traceback" not in msg and "File \"" not in msg


class Complex(torch.nn.Module):
    """Complex products are carried as real pairs; a complex exp is not."""

    def forward(self, x):
        c = torch.view_as_complex(x)  # complex
        return torch.view_as_real(torch.exp(c * c))


def test_complex_dtype(tmp_path):
    msg = export_error(Complex(), (torch.randn(3, 2),), tmp_path)
    assert "'complex64' is not supported" in msg
    assert "aten.view_as_complex" in msg and f"{THIS}:{line_of('complex')}" in msg
    assert "view_as_real" in msg  # what to do
    assert "it meets aten.exp.default on complex values" in msg  # why the real-pair form stopped


def test_complex_output_is_named(tmp_path):
    class Spectrum(torch.nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x)

    msg = export_error(Spectrum(), (torch.randn(2, 8),), tmp_path)
    assert "complex64" in msg and "it meets a complex graph output" in msg and "view_as_real" in msg


def test_complex_input(tmp_path):
    class Identity(torch.nn.Module):
        def forward(self, z):
            return torch.view_as_real(z)

    msg = export_error(Identity(), (torch.randn(3, dtype=torch.complex64),), tmp_path)
    assert "input 'z'" in msg and "complex64" in msg


def test_float64_is_supported(tmp_path):
    """tract computes f64; the few ops it lacks in f64 (sigmoid, erf, ...) run in f32 inside."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.SiLU(), torch.nn.GELU()).double()
    result = t2ir.export(model, (torch.randn(3, 4, dtype=torch.float64),), tmp_path / "f64.nnef.tgz",
                         check_io=True, atol=1e-6)
    assert result.graph.outputs[0].dtype == t2ir.DType.f64


class FixedView(torch.nn.Module):
    def forward(self, x):
        return x.view(6, 4)  # fixed-view


class LoopsOverRows(torch.nn.Module):
    def forward(self, x):
        return torch.stack([x[i] * i for i in range(len(x))])  # loop-rows


@pytest.mark.parametrize("module,marker", [(FixedView(), "fixed-view"), (LoopsOverRows(), "loop-rows")])
def test_dynamic_axis_made_static(module, marker, tmp_path):
    """The error names the line that pinned the axis (torch's own error does not), also in a
    program that silenced logging."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        msg = export_error(module, (torch.randn(6, 4),), tmp_path, input_names=["x"],
                           dynamic_axes={"x": {0: "batch"}})
    finally:
        logging.disable(before)
    assert "dynamic axis 0 of input 'x' was specialised to 6" in msg and "make the axis static" in msg
    assert f"{THIS}:{line_of(marker)}" in msg


class BranchesOnRows(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] == 6:  # rows-branch
            return x * 2
        return x


@pytest.mark.parametrize("make,marker", [(lambda: torch.jit.trace(FixedView(), torch.randn(6, 4)), "fixed-view"),
                                         (lambda: torch.jit.script(FixedView()), "fixed-view"),
                                         (lambda: torch.jit.script(BranchesOnRows()), "rows-branch")])
def test_dynamic_axis_made_static_in_torchscript(make, marker, tmp_path):
    """The TorchScript frontend names the user's input and the line of the node that pinned it
    (TorchScript's source range of the node being replayed)."""
    msg = export_error(make(), (torch.randn(6, 4),), tmp_path, input_names=["rows"], dynamic_axes={"rows": {0: "B"}})
    assert "dynamic axis 0 of input 'rows' was specialised to 6" in msg
    assert f"{THIS}:{line_of(marker)}" in msg


class IntMatmul(torch.nn.Module):
    def forward(self, a, b):
        return a @ b  # int-matmul


class DivisorOverride(torch.nn.Module):
    def forward(self, x):
        return F.avg_pool2d(x, 2, divisor_override=3)  # divisor


def test_translation_errors_are_located_and_collected(tmp_path):
    """Cases a translation refuses: each with its op, line and hint, all in one error."""
    class Both(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mm, self.pool = IntMatmul(), DivisorOverride()

        def forward(self, a, b, x):
            return self.mm(a, b), self.pool(x)

    args = (torch.randint(0, 5, (2, 3)), torch.randint(0, 5, (3, 2)), torch.randn(1, 1, 4, 4))
    msg = export_error(Both(), args, tmp_path)
    assert "aten.matmul: matrix products on i64 are not supported by tract" in msg
    assert f"at mm ({THIS}:{line_of('int-matmul')})" in msg and "cast the operands to float" in msg
    assert "aten.avg_pool2d: avg_pool with divisor_override is not supported" in msg
    assert f"at pool ({THIS}:{line_of('divisor')})" in msg


def test_errors_are_t2ir_errors():
    assert issubclass(t2ir.UnsupportedOpsError, t2ir.ExportError)
    assert issubclass(t2ir.ExportError, t2ir.T2IRError)


class AntialiasedResize(torch.nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)  # antialias


def test_antialiased_resize_of_a_dynamic_size_is_refused(tmp_path):
    """Its weights depend on the sizes: exported between static sizes only, and said so."""
    msg = export_error(AntialiasedResize(), (torch.randn(1, 2, 8, 8),), tmp_path,
                       input_names=["x"], dynamic_axes={"x": {2: "H", 3: "W"}})
    assert "antialiased resizing (interpolate with antialias=True) has no tract op" in msg
    assert f"at {THIS}:{line_of('antialias')}" in msg and "export with a static image size" in msg


class PaddedCeilPool(torch.nn.Module):
    def forward(self, x):
        return F.avg_pool2d(x, 2, stride=2, padding=1, ceil_mode=True)  # ceil-pool


def test_ceil_mode_pool_that_depends_on_the_size_is_refused(tmp_path):
    """Whether torch keeps the last window of this pool depends on the size (H = 4 keeps it,
    H = 5 drops it), so it is refused on a symbolic size, and says why."""
    msg = export_error(PaddedCeilPool(), (torch.randn(1, 2, 8, 8),), tmp_path,
                       input_names=["x"], dynamic_axes={"x": {2: "H", 3: "W"}})
    assert "ceil_mode pooling (kernel 2, stride 2, padding 1) over a symbolic size" in msg
    assert f"at {THIS}:{line_of('ceil-pool')}" in msg and "make the spatial axes static" in msg


class FixedTable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(1, 2, 4, 4))

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 2) + self.table  # fixed-table


def test_a_size_pinned_by_a_broadcast_is_named(tmp_path):
    """torch traces `x + table` with a symbolic and a static size on one axis without a guard;
    the export names the size the model pins and where, instead of a graph tract cannot load."""
    msg = export_error(FixedTable(), (torch.randn(1, 2, 8, 8),), tmp_path,
                       input_names=["x"], dynamic_axes={"x": {0: "B", 2: "H", 3: "W"}})
    assert "the model pins the size of dynamic axes" in msg
    assert "add: a size-4 axis meets one of size floor(H/2): the model runs only where floor(H/2) = 4" in msg
    assert f"at {THIS}:{line_of('fixed-table')}" in msg and "make that axis static" in msg
    t2ir.export(FixedTable(), (torch.randn(1, 2, 8, 8),), tmp_path / "batch", input_names=["x"],
                dynamic_axes={"x": {0: "B"}})  # the batch alone stays dynamic
