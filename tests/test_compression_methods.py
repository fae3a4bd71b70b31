"""Compression methods are pluggable: a user-defined per-channel int8 method rewrites the graph (i8
weight + f32 scale + cast/mul dequantisation), is reported like Q4_0, and runs in tract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np
import pytest
import torch

import t2ir
from t2ir.emitters.encodings import RelativeError
from t2ir.compression.methods import (
    LINEAR,
    METHODS,
    CompressionMethod,
    Skip,
    Weight,
    first_reader,
    get_method,
    register_method,
)
from t2ir.emitters.encodings import register_encoding
from t2ir.compression.report import KEPT, QuantReport, report_path
from t2ir.emitters.dat import read_dat, write_dat
from t2ir.errors import ExportError
from t2ir.ir import Derived, Graph, Value
from t2ir.options import ExportOptions
from t2ir.parser import parse_ir
from t2ir.passes.pack_weights import QUANT_REPORT, CompressWeights
from t2ir.tract_run import load_runnable, run_tract
from t2ir.types import DType, TensorType


# --- the user's method: what docs/quantization.md shows ------------------------------------------


def row_scale(w: torch.Tensor) -> torch.Tensor:
    """One f32 scale per output channel (row), so that the row's largest |w| maps to 127."""
    return (w.detach().float().abs().amax(dim=1, keepdim=True) / 127).clamp_min(1e-12)


def quantize_rows(w: torch.Tensor) -> torch.Tensor:
    return torch.round(w.detach().float() / row_scale(w)).clamp(-127, 127).to(torch.int8)


def write_i8_rows(f: BinaryIO, tensor: torch.Tensor, v: Value) -> dict:
    """The i8 constant's source is the float weight: quantize while streaming, and measure."""
    q = quantize_rows(tensor)
    err = RelativeError()
    err.add(tensor.detach().float().numpy(), (q.float() * row_scale(tensor)).numpy())
    write_dat(f, q.numpy())
    return {"rel_error": err.value}


register_encoding("test_i8_rows", write_i8_rows, bits_per_weight=8, override=True)


@register_method(override=True)
class Int8PerChannel(CompressionMethod):
    """w [N, K] -> i8 [N, K] and f32 scale [N, 1]; `cast` + `mul` rebuild the float weight."""

    name = "test_int8_per_channel"
    positions = frozenset({LINEAR})

    def refuse(self, weight: Weight) -> Optional[Skip]:
        skip = super().refuse(weight)
        if skip is None and (weight.static_shape is None or len(weight.static_shape) != 2):
            skip = Skip("not a static [N, K] matrix")
        return skip

    def apply(self, graph: Graph, weight: Weight) -> list[Value]:
        w, (n, k) = weight.value, weight.static_shape
        source, label = w.const.source, w.const.label
        q = graph.add_const(f"{w.name}.q", TensorType(DType.i8, (n, k)), source,
                            label=f"{label}.q", encoding="test_i8_rows")
        scale = graph.add_const(f"{w.name}.scale", TensorType(DType.f32, (n, 1)),
                                Derived(row_scale, (source,), "int8 row scale"), label=f"{label}.scale")
        with graph.inserting_before(first_reader(graph, w)):
            as_float = graph.op("tract_core.cast", [q], TensorType(DType.f32, (n, k)), name=f"{w.name}.deq", to="f32")
            deq = graph.op("nnef.mul", [as_float, scale], TensorType(DType.f32, (n, k)), name=f"{w.name}.deq")
            if w.dtype != DType.f32:
                deq = graph.op("tract_core.cast", [deq], w.type, name=f"{w.name}.deq", to=w.dtype.value)
        w.replace_all_uses_with(deq)
        graph.remove_const(w)
        return [q, scale]

    def dequantized(self, tensor: torch.Tensor) -> torch.Tensor:
        return quantize_rows(tensor).float() * row_scale(tensor)


# --- tests -------------------------------------------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 64)
        self.fc1 = torch.nn.Linear(64, 96)
        self.fc2 = torch.nn.Linear(96, 40)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.emb(ids))))


def test_user_int8_method_runs_in_tract(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    net = Net().eval()
    ids = torch.randint(0, 50, (2, 7))
    path = tmp_path / "net"
    result = t2ir.export(net, (ids,), path, input_names=["ids"], dynamic_axes={"ids": {1: "S"}},
                         options=ExportOptions(compression="test_int8_per_channel"),
                         check_io=True, atol=1e-5)  # against the method's `dequantized` weights

    text = str(result.graph)
    assert 'const %fc1.weight.q : i8[96, 64] = "fc1.weight.q" test_i8_rows' in text
    assert 'const %fc1.weight.scale : f32[96, 1] = "fc1.weight.scale"' in text
    assert "tract_core.cast(%fc1.weight.q, to=\"f32\")" in text and "fc1.weight" not in {
        v.name for v in result.graph.consts}
    assert read_dat(path / "fc1.weight.q.dat").dtype == np.int8

    ref = Net().eval()
    ref.load_state_dict(net.state_dict())
    with torch.no_grad():
        for lin in (ref.fc1, ref.fc2):
            lin.weight.copy_(quantize_rows(lin.weight).float() * row_scale(lin.weight))
    runnable = load_runnable(path)
    for inp in (ids, torch.randint(0, 50, (2, 3))):
        (got,) = run_tract(runnable, [inp.numpy()])
        with torch.no_grad():
            want = ref(inp).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)

    report = json.loads(report_path(path).read_text())
    rows = {t["name"]: t for t in report["tensors"]}
    assert rows["emb.weight"]["status"] == "kept"  # int8 method takes linear positions only
    for name, (n, k) in {"fc1.weight": (96, 64), "fc2.weight": (40, 96)}.items():
        row = rows[name]
        assert row["status"] == "packed" and row["encoding"] == "test_int8_per_channel"
        assert row["bytes_before"] == n * k * 4 and row["bytes_after"] == n * k + n * 4
        assert 0 < row["rel_error"] < 0.02
    assert "test_int8_per_channel" in capsys.readouterr().out


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(ExportError, match=r"unknown compression method 'q3'[\s\S]*q4_0, q4_0_with_embeddings"):
        get_method("q3")


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_method(type("Again", (CompressionMethod,), {"name": "q4_0"}))
    assert METHODS["q4_0"].__name__ == "Q4_0"


def test_report_lists_constants_packed_outside_a_method() -> None:
    graph = parse_ir('graph main\ninput %x : f32[2, 64]\nconst %w : f32[8, 64] = "w" q4_0\n'
                     '%y = nnef.matmul(%x, %w, transposeB=true) : f32[2, 8]\noutput %y\n')
    report = QuantReport("none")
    report.record_written(graph.value("w"), 144, {"rel_error": 0.1})
    (entry,) = report.tensors
    assert entry.status == "packed" and entry.encoding == "q4_0" and entry.rel_error == 0.1
    assert "outside a compression method" in entry.reason


def test_pass_reasons_for_every_skipped_weight() -> None:
    text = (Path(__file__).parent / "passes" / "compress-weights" / "linear.before.t2ir").read_text()
    graph = parse_ir(text)
    with pytest.warns(UserWarning):
        result = CompressWeights().run(graph, ExportOptions(compression="q4_0"))
    report = result.artifacts[QUANT_REPORT]
    kept = {t.name: t.reason for t in report.tensors if t.status == KEPT}
    assert kept == {
        "fc3.weight": "K = 48 is not a multiple of 32",
        "mixed.weight": "also read by nnef.add, which is not a weight position",
    }
    # "kn" is read only as x @ kn ([K, N]): stored transposed and packed like a linear weight
    assert {t.name for t in report.packed} == {"fc1.weight", "fc2.weight", "proj.weight", "kn"}
