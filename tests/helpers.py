"""Shared test helpers: export a module, run it in tract, compare with PyTorch eager."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import t2ir
from t2ir.parser import parse_ir
from t2ir.tract_run import load_runnable, run_tract
from t2ir.ops.registry import check_node
from t2ir.verify import verify


def eager_outputs(module, args) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*args)
    leaves = torch.utils._pytree.tree_leaves(out)
    return [t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
            for t in leaves if isinstance(t, torch.Tensor)]


def assert_round_trip(graph: t2ir.Graph) -> None:
    """parse(print(g)) prints identically, and both graphs verify."""
    text = str(graph)
    again = parse_ir(text)
    verify(again, check_op=check_node)
    assert str(again) == text


def export_and_compare(module: torch.nn.Module, args: tuple, tmp_path: Path, *,
                       more_args: Sequence[tuple] = (), atol: float = 1e-4, frontend: str = "export",
                       name: str = "model", **export_kwargs) -> t2ir.ExportResult:
    """Export, check the IR round trip, then compare tract with eager on `args` and each of
    `more_args` (other values of the dynamic axes)."""
    module = module.eval()
    result = t2ir.export(module, args, tmp_path / f"{name}.nnef.tgz", frontend=frontend, **export_kwargs)
    verify(result.graph)
    assert_round_trip(result.graph)
    runnable = load_runnable(result.path)
    for case in (args, *more_args):
        want = eager_outputs(module, case)
        got = run_tract(runnable, [a.numpy() for a in case if isinstance(a, torch.Tensor)])
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape, (g.shape, w.shape)
            if w.dtype == np.bool_ or np.issubdtype(w.dtype, np.integer):
                np.testing.assert_array_equal(g, w)
            else:
                np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), atol=atol, rtol=0)
    return result
