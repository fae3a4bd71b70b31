"""Q4_0 export end to end: which weights get packed, the .dat files, the report, and tract's numbers
against PyTorch run with the same dequantized weights (MLP in f32 and f16, tiny Llama / tied Qwen2)."""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import t2ir
from t2ir.compression.q4_0 import dequantize_q4_0, quantize_q4_0
from t2ir.compression.report import report_path
from t2ir.emitters.dat import HEADER_SIZE, parse_dat_header, read_dat_header
from t2ir.options import ExportOptions
from t2ir.passes.pack_weights import CompressionWarning
from t2ir.tract_run import load_runnable, run_tract

sys.path.insert(0, os.path.dirname(__file__))
from llm_models import tiny_model  # noqa: E402


def q4_0_roundtrip(w: torch.Tensor) -> torch.Tensor:
    """dequant(quant(w)) in w's dtype: what tract computes with."""
    return torch.from_numpy(dequantize_q4_0(quantize_q4_0(w), tuple(w.shape))).to(w.dtype)


def dequantized_copy(module: torch.nn.Module, packed: set[str]) -> torch.nn.Module:
    """A copy whose packed weights are replaced by their Q4_0 round trip (tied weights stay tied)."""
    twin = copy.deepcopy(module)
    params = dict(twin.named_parameters(remove_duplicate=False))
    missing = packed - set(params)
    assert not missing, f"packed labels that are not parameters: {missing}"
    with torch.no_grad():
        for name in sorted(packed):
            params[name].copy_(q4_0_roundtrip(params[name]))
    return twin


def packed_labels(result: t2ir.ExportResult) -> set[str]:
    return {v.const.label for v in result.graph.consts if v.const.encoding == "q4_0"}


def tract_outputs(path: Path, *inputs: torch.Tensor) -> list[np.ndarray]:
    return run_tract(load_runnable(path), [t.numpy() for t in inputs])


def eager(module: torch.nn.Module, *inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(*inputs).float().numpy()


def assert_q4_0_dat(header_bytes: bytes, file_size: int, shape: tuple[int, ...]) -> None:
    header = parse_dat_header(header_bytes)
    assert header.is_q4_0 and header.shape == shape
    assert (file_size - HEADER_SIZE) * 8 / math.prod(shape) == 4.5


# --- MLP ----------------------------------------------------------------------------------------


class MLP(torch.nn.Module):
    """fc1..fc3 have K % 32 == 0; fc4 has K = 48 and must stay float with a warning."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.fc2 = torch.nn.Linear(128, 96)
        self.fc3 = torch.nn.Linear(96, 48)
        self.fc4 = torch.nn.Linear(48, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc4(torch.tanh(self.fc3(x)))


PACKED_MLP = {"fc1.weight", "fc2.weight", "fc3.weight"}


def export_mlp(module, x, path, **options) -> t2ir.ExportResult:
    with pytest.warns(CompressionWarning, match=r"fc4\.weight \(K = 48 is not a multiple of 32\)"):
        return t2ir.export(module, (x,), path, input_names=["x"], dynamic_axes={"x": {0: "batch"}},
                           options=ExportOptions(**options))


def test_mlp_q4_0_matches_dequantized_pytorch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mlp = MLP().eval()
    x = torch.randn(3, 5, 64)
    result = export_mlp(mlp, x, tmp_path / "mlp", compression="q4_0")
    assert packed_labels(result) == PACKED_MLP

    ref = dequantized_copy(mlp, PACKED_MLP)
    for inp in (x, torch.randn(7, 5, 64)):
        (got,) = tract_outputs(result.path, inp)
        np.testing.assert_allclose(got, eager(ref, inp), atol=1e-4, rtol=0)
        assert np.abs(got - eager(mlp, inp)).max() > 1e-3  # the weights really are 4-bit

    for name in PACKED_MLP:
        w = dict(mlp.named_parameters())[name]
        path = tmp_path / "mlp" / f"{name}.dat"
        assert_q4_0_dat(path.read_bytes()[:HEADER_SIZE], path.stat().st_size, tuple(w.shape))
    assert not read_dat_header(tmp_path / "mlp" / "fc4.weight.dat").is_q4_0

    # the report: saved beside the export, errors measured by the emitter, skipped weight named
    report = json.loads(report_path(tmp_path / "mlp").read_text())
    assert report["method"] == "q4_0"
    rows = {t["name"]: t for t in report["tensors"]}
    assert set(rows) == PACKED_MLP | {"fc4.weight"}
    for name in PACKED_MLP:
        w = dict(mlp.named_parameters())[name].detach()
        expected = float(torch.linalg.norm(q4_0_roundtrip(w) - w) / torch.linalg.norm(w))
        assert rows[name]["status"] == "packed" and rows[name]["encoding"] == "q4_0"
        assert rows[name]["rel_error"] == pytest.approx(expected, rel=1e-5)
        assert 0.05 < expected < 0.2  # typical Q4_0 error on Gaussian weights
        assert rows[name]["bytes_after"] * 8 / (rows[name]["bytes_before"] / 4) == 4.5
    fc4 = rows["fc4.weight"]
    assert fc4["status"] == "kept" and "multiple of 32" in fc4["reason"] and fc4["rel_error"] is None
    assert fc4["bytes_after"] == fc4["bytes_before"] == 16 * 48 * 4
    biases = sum(p.numel() * 4 for n, p in mlp.named_parameters() if n.endswith("bias"))
    assert report["totals"]["other_bytes"] == biases
    printed = capsys.readouterr().out
    assert "Quantization report (q4_0)" in printed and "fc4.weight" in printed and "3 packed, 1 kept" in printed


def test_mlp_keep_float(tmp_path: Path) -> None:
    mlp = MLP().eval()
    x = torch.randn(2, 64)
    result = export_mlp(mlp, x, tmp_path / "mlp.nnef.tgz", compression="q4_0", keep_float=("fc1.*",))
    assert packed_labels(result) == {"fc2.weight", "fc3.weight"}
    kept = {t.name: t.reason for t in result.quant_report.kept}
    assert kept["fc1.weight"] == "kept float by keep_float pattern 'fc1.*'"
    assert report_path(tmp_path / "mlp.nnef.tgz").exists()  # beside the archive
    (got,) = tract_outputs(result.path, x)
    np.testing.assert_allclose(got, eager(dequantized_copy(mlp, {"fc2.weight", "fc3.weight"}), x), atol=1e-4)


def test_mlp_f16_activations(tmp_path: Path) -> None:
    mlp = MLP().eval().half()
    x = torch.randn(3, 5, 64).half()
    result = export_mlp(mlp, x, tmp_path / "mlp16", compression="q4_0")
    assert packed_labels(result) == PACKED_MLP
    (got,) = tract_outputs(result.path, x)
    assert got.dtype == np.float16
    ref = dequantized_copy(mlp, PACKED_MLP).float()
    want = eager(ref, x.float())
    scale = np.abs(want).max()
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-3 * scale, rtol=0)
    assert np.abs(got - eager(copy.deepcopy(mlp).float(), x.float())).max() > 1e-2 * scale  # 4-bit, not f16


def test_check_io_compares_with_the_dequantized_weights(tmp_path: Path) -> None:
    mlp, x = MLP().eval(), torch.randn(4, 64)
    with pytest.warns(CompressionWarning):
        result = t2ir.export(mlp, (x,), tmp_path / "m", check_io=True, atol=1e-4,
                             options=ExportOptions(compression="q4_0"))
    assert max(c.max_abs_diff for c in result.check) < 1e-4


def test_reexport_without_compression_removes_stale_report(tmp_path: Path) -> None:
    mlp, x = MLP().eval(), torch.randn(2, 64)
    export_mlp(mlp, x, tmp_path / "m", compression="q4_0")
    assert report_path(tmp_path / "m").exists()
    t2ir.export(mlp, (x,), tmp_path / "m", overwrite=True)
    assert not report_path(tmp_path / "m").exists()


# --- tiny causal LMs ----------------------------------------------------------------------------


class LogitsWithMask(torch.nn.Module):
    """Logits without cache; positions and the additive causal mask are inputs, so the graph needs
    no arange/cumsum translation (see `Logits` for the plain form)."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.m = lm

    def forward(self, input_ids, position_ids, mask):
        return self.m(input_ids, position_ids=position_ids, attention_mask=mask, use_cache=False).logits


class Logits(torch.nn.Module):
    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.m = lm

    def forward(self, input_ids):
        return self.m(input_ids, use_cache=False).logits


def llm_inputs(s: int) -> tuple[torch.Tensor, ...]:
    ids = torch.randint(0, 128, (1, s))
    mask = torch.triu(torch.full((s, s), float("-inf")), 1)[None, None]
    return ids, torch.arange(s)[None], mask


LLM_AXES = {"input_ids": {1: "S"}, "position_ids": {1: "S"}, "mask": {2: "S", 3: "S"}}
LINEARS = {f"m.model.layers.{i}.{p}.weight" for i in range(2) for p in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}


def export_llm(arch: str, method: str, path: Path) -> tuple[torch.nn.Module, t2ir.ExportResult]:
    model = LogitsWithMask(tiny_model(arch))
    result = t2ir.export(model, llm_inputs(4), path, input_names=list(LLM_AXES), dynamic_axes=LLM_AXES,
                         options=ExportOptions(compression=method))
    return model, result


def check_llm(model: torch.nn.Module, result: t2ir.ExportResult) -> None:
    ref = dequantized_copy(model, packed_labels(result))
    runnable = load_runnable(result.path)
    for s in (5, 2):
        inputs = llm_inputs(s)
        (got,) = run_tract(runnable, [t.numpy() for t in inputs])
        np.testing.assert_allclose(got, eager(ref, *inputs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["q4_0", "q4_0_with_embeddings"])
def test_tiny_llama(tmp_path: Path, method: str) -> None:
    path = tmp_path / "model.nnef.tgz"
    model, result = export_llm("llama", method, path)
    embed = "m.model.embed_tokens.weight"
    expected = LINEARS | {"m.lm_head.weight"} | ({embed} if method == "q4_0_with_embeddings" else set())
    assert packed_labels(result) == expected
    if method == "q4_0":
        (kept,) = result.quant_report.kept
        assert kept.name == embed and kept.reason.startswith("embedding table")
    check_llm(model, result)

    report = json.loads(report_path(path).read_text())
    assert {t["name"] for t in report["tensors"] if t["status"] == "packed"} == expected
    with tarfile.open(path) as tar:
        for name in expected:
            member = tar.getmember(f"{name}.dat")
            shape = tuple(dict(model.named_parameters())[name].shape)
            assert_q4_0_dat(tar.extractfile(member).read(HEADER_SIZE), member.size, shape)


def tied_constant(result: t2ir.ExportResult) -> t2ir.Value:
    """The one constant behind embed_tokens and lm_head (the frontend names it after either)."""
    (tied,) = [v for v in result.graph.consts
               if v.const.label in ("m.lm_head.weight", "m.model.embed_tokens.weight")]
    assert {u.node.op for u in tied.uses} == {"tract_core.gather", "nnef.unsqueeze"}
    return tied


def test_tied_embedding_stays_float_with_q4_0(tmp_path: Path) -> None:
    with pytest.warns(CompressionWarning, match=r"m\.(lm_head|model\.embed_tokens)\.weight \(tied"):
        model, result = export_llm("qwen2", "q4_0", tmp_path / "q")
    assert tied_constant(result).const.encoding == "plain"
    assert packed_labels(result) == LINEARS
    check_llm(model, result)


def test_tied_embedding_packed_once_with_embeddings(tmp_path: Path) -> None:
    model, result = export_llm("qwen2", "q4_0_with_embeddings", tmp_path / "q")
    tied = tied_constant(result)
    assert packed_labels(result) == LINEARS | {tied.const.label}
    check_llm(model, result)


def test_tiny_llama_plain_wrapper(tmp_path: Path) -> None:
    """model(input_ids, use_cache=False).logits as is, through the generic export path."""
    model = Logits(tiny_model("llama"))
    result = t2ir.export(model, (torch.randint(0, 128, (1, 4)),), tmp_path / "m",
                         input_names=["input_ids"], dynamic_axes={"input_ids": {1: "S"}},
                         options=ExportOptions(compression="q4_0"))
    ref = dequantized_copy(model, packed_labels(result))
    ids = torch.randint(0, 128, (1, 6))
    (got,) = tract_outputs(result.path, ids)
    np.testing.assert_allclose(got, eager(ref, ids), atol=1e-4, rtol=0)


def test_gpt2_conv1d_weights_are_packed_transposed(tmp_path: Path) -> None:
    """GPT-2's Conv1D weights are [K, N] (x @ w): packed as [N, K] blocks along K, and tract
    matches PyTorch run with gguf's Q4_0 round trip of the transposed weights."""
    import gguf

    model = Logits(tiny_model("gpt2"))
    result = t2ir.export(model, (torch.randint(0, 128, (1, 4)),), tmp_path / "m",
                         input_names=["input_ids"], dynamic_axes={"input_ids": {1: "S"}},
                         options=ExportOptions(compression="q4_0"))
    conv1d = {n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}
    assert {f"{n}.weight" for n in conv1d} <= packed_labels(result)
    assert result.passes[-1].result.stats["transposed"] == len(conv1d)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name in packed_labels(result):
            p = dict(ref.named_parameters(remove_duplicate=False))[name]
            kn = f"{name.rsplit('.', 1)[0]}" in conv1d
            w = (p.t() if kn else p).detach().float().numpy()
            q = gguf.quants.dequantize(gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_0),
                                       gguf.GGMLQuantizationType.Q4_0)
            p.copy_(torch.from_numpy(q.T.copy() if kn else q))
    ids = torch.randint(0, 128, (1, 6))
    (got,) = tract_outputs(result.path, ids)
    np.testing.assert_allclose(got, eager(ref, ids), atol=1e-4, rtol=0)
