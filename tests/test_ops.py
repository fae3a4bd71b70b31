"""Every supported operator, exported alone and run in tract, compared with PyTorch eager at two
sizes of each dynamic axis. The table of cases is `tests/op_cases.py`.

The reference interpreter (`t2ir.interpret`) runs the same exported graph and must agree with
tract at the same tolerances (tests/test_interpret.py checks it on the lifted graphs too).

Tolerances: f32 atol 1e-4; f16 atol 1e-2 + rtol 1e-2 (both sides round to f16, and tract may
accumulate in f16 where PyTorch's CPU kernels accumulate in f32); f64 atol 1e-6 (a few ops run
in f32 inside, see NO_F64_OPS). Integer and bool outputs must match exactly, and every output
must have PyTorch's dtype.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import t2ir
from t2ir.interpret import Interpreter
from t2ir.tract_run import load_runnable, run_tract
from tests.helpers import assert_round_trip
from tests.op_cases import CASES, SIZES, Case, In

TOLERANCE = {"f32": dict(atol=1e-4, rtol=0.0), "f16": dict(atol=1e-2, rtol=1e-2), "f64": dict(atol=1e-6, rtol=0.0)}
TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "f64": torch.float64}


class Fn(torch.nn.Module):
    """Wraps a plain function (or a sub-module) as the module to export."""

    def __init__(self, case: Case):
        super().__init__()
        self.fn = case.fn
        self.sub = case.mod() if case.mod is not None else None

    def call(self, *xs):
        return self.sub(*xs) if self.sub is not None else self.fn(*xs)


class Fn1(Fn):
    def forward(self, x0):
        return self.call(x0)


class Fn2(Fn):
    def forward(self, x0, x1):
        return self.call(x0, x1)


class Fn3(Fn):
    def forward(self, x0, x1, x2):
        return self.call(x0, x1, x2)


class Fn4(Fn):
    def forward(self, x0, x1, x2, x3):
        return self.call(x0, x1, x2, x3)


WRAPPERS = {1: Fn1, 2: Fn2, 3: Fn3, 4: Fn4}  # torch.export names inputs after forward's parameters


def make_input(spec: In, sizes: dict[str, int], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    shape = tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)  # static symbols: see run_case
    if spec.kind == "index":
        high = sizes[spec.high] if isinstance(spec.high, str) else spec.high
        return torch.randint(0, high, shape, generator=gen)
    if spec.kind == "int":
        return torch.randint(-5, 6, shape, generator=gen)
    if spec.kind == "bool":
        return torch.rand(shape, generator=gen) > 0.5
    x = torch.randn(shape, generator=gen) if spec.kind == "float" else 0.5 + 2 * torch.rand(shape, generator=gen)
    return x.to(dtype)


def dynamic_axes(case: Case) -> dict[str, dict[int, str]]:
    axes = {}
    for i, spec in enumerate(case.inputs):
        dyn = {a: d for a, d in enumerate(spec.shape) if isinstance(d, str) and d not in case.static}
        if dyn:
            axes[f"x{i}"] = dyn
    return axes


def eager(module: torch.nn.Module, args: tuple) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module(*args)
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def check(got: np.ndarray, want: torch.Tensor, dtype: str, case: Case, what: str) -> None:
    want_np = want.numpy()
    assert got.dtype == want_np.dtype, f"{what}: tract gave {got.dtype}, PyTorch {want_np.dtype}"
    assert got.shape == want_np.shape, f"{what}: tract gave shape {got.shape}, PyTorch {want_np.shape}"
    if not np.issubdtype(want_np.dtype, np.floating):
        np.testing.assert_array_equal(got, want_np, err_msg=what)
        return
    tol = dict(TOLERANCE[dtype])
    if case.atol is not None:
        tol["atol"] = case.atol
    np.testing.assert_allclose(got.astype(np.float64), want_np.astype(np.float64), err_msg=what, **tol)


def run_case(case: Case, dtype: str, tmp_path: Path) -> t2ir.ExportResult:
    """Export at the first sizes, then compare tract with eager at every size set."""
    torch.manual_seed(zlib.crc32(case.id.encode()))
    module = WRAPPERS[len(case.inputs)](case).eval().to(TORCH_DTYPE[dtype])
    axes = dynamic_axes(case)
    gen = torch.Generator().manual_seed(zlib.crc32(case.id.encode()))
    size_sets = SIZES if axes else SIZES[:1]
    size_sets = [{**sizes, **{k: SIZES[0][k] for k in case.static}} for sizes in size_sets]
    inputs = [tuple(make_input(s, sizes, TORCH_DTYPE[dtype], gen) for s in case.inputs) for sizes in size_sets]
    names = [f"x{i}" for i in range(len(case.inputs))]
    result = t2ir.export(module, inputs[0], tmp_path / f"{case.id}.nnef.tgz", input_names=names,
                         dynamic_axes=axes)
    assert_round_trip(result.graph)
    runnable = load_runnable(result.path)
    for args, sizes in zip(inputs, size_sets):
        want = eager(module, args)
        got = run_tract(runnable, [a.numpy() for a in args])
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            check(g, w, dtype, case, f"{case.id}[{dtype}] output {i} at sizes {sizes}")
        # the reference interpreter reads the exported NNEF-level graph as tract runs it
        ours = Interpreter(result.graph).outputs(list(args))
        for i, (g, o) in enumerate(zip(got, ours)):
            check(g, o, dtype, case, f"{case.id}[{dtype}] output {i}: tract vs the reference interpreter")
    return result


PARAMS = [pytest.param(case, dt, id=f"{case.id}-{dt}") for case in CASES for dt in case.dtypes]


@pytest.mark.parametrize("case,dtype", PARAMS)
def test_op(case: Case, dtype: str, tmp_path: Path) -> None:
    run_case(case, dtype, tmp_path)


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_ops_doc_is_up_to_date() -> None:
    """docs/ops.md is what `python -m t2ir.tools.ops_doc` writes (run in a fresh interpreter, so
    that ops registered by other tests do not show up)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    fresh = subprocess.run([sys.executable, "-m", "t2ir.tools.ops_doc"], cwd=root, capture_output=True, text=True,
                           check=True).stdout
    assert (root / "docs" / "ops.md").read_text() == fresh, \
        "docs/ops.md is stale: run `python -m t2ir.tools.ops_doc > docs/ops.md`"


def test_table_covers_the_main_translations() -> None:
    """Every op family the issue lists has at least one case (ids are the table's keys)."""
    ids = {c.id for c in CASES}
    for required in ["add_broadcast", "pow_scalar", "where", "masked_fill", "logical", "matmul_batched", "bmm",
                     "linear", "addmm", "einsum_bmm", "conv1d", "conv2d_stride_groups", "conv_transpose1d",
                     "conv_transpose2d", "max_pool2d", "avg_pool1d", "adaptive_avg_pool2d", "batch_norm2d",
                     "layer_norm", "group_norm", "rms_norm", "rms_norm_hf", "gelu", "gelu_tanh", "softplus", "elu",
                     "hardswish", "log_softmax", "max_dim", "argmax", "var", "std", "cumsum", "prod", "flip", "roll",
                     "tril", "triu_k", "pad_reflect", "gather", "embedding", "index_tensor", "arange_dynamic",
                     "full_dynamic", "zeros_like", "to_half", "sdpa_bool_mask", "sdpa_float_mask", "sdpa_causal",
                     "sdpa_scale", "reshape_numel", "reshape_size_arith"]:
        assert required in ids, required
