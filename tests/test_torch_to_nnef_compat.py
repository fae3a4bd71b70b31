"""A drop-in for torch_to_nnef users: its flag spellings, its export layout (modes.json, last-position
logits, tract_assert lines, npz conventions), tract's tolerance semantics, and a `generate` that
streams, samples, applies chat templates and stops at end-of-sequence."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from t2ir.checkio import LEVELS, compare, tolerance
from t2ir.cli import _register, app
from t2ir.demo import make_tiny_llm_folder
from t2ir.llm.generate import Sampling

_register()
runner = CliRunner()


def run_cli(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_llm_folder(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="module")
def t2n_export(model_dir, tmp_path_factory) -> Path:
    """An export made with torch_to_nnef's flag spellings only."""
    out = tmp_path_factory.mktemp("t2n") / "out"
    run_cli("export-llm", "--local-dir", str(model_dir), "--export-dirpath", str(out), "-dt", "f16", "-f32-attn",
            "-f32-norm", "-f32-lin-acc", "-tt", "very", "--dump-with-tokenizer-and-conf", "-c", "min_max_q4_0",
            "--num-logits-to-keep", "1", "-sgts", "6", "--reify-sdpa-operator", "--quiet")
    return out


def graph_text(out: Path) -> str:
    with tarfile.open(out / "model" / "model.nnef.tgz") as tar:
        return tar.extractfile("graph.nnef").read().decode()


def test_t2n_flags_give_the_same_export(t2n_export):
    manifest = json.loads((t2n_export / "manifest.json").read_text())
    opts = manifest["options"]
    assert (opts["dtype"], opts["f32_attn"], opts["f32_norm"], opts["f32_linear_acc"]) == ("f16", True, True, True)
    assert opts["compression"] == "q4_0" and opts["check_io"] == "very" and manifest["check"]["passed"] is True
    assert (t2n_export / "tokenizer" / "tokenizer.json").exists() and (t2n_export / "model" / "config.json").exists()
    report = json.loads((t2n_export / "model" / "model.nnef.tgz.quant_report.json").read_text())
    assert any(t["status"] == "packed" for t in report["tensors"])
    text = graph_text(t2n_export)
    assert 'acc = "f32"' in text  # f32 accumulation of the f16 linear layers (tract_core_einsum)
    assert opts["attention"] == "sdpa" and "tract_transformers_sdpa(" in text  # --reify-sdpa-operator


def test_layout_modes_logits_and_assertions(t2n_export, model_dir):
    assert (t2n_export / "modes.json").read_text() == \
        '{"pytorch_supported_modes": ["prompt", "prompt_with_past", "text_generation"]}'
    for case in ("prompt", "prompt_with_past", "text_generation", "export"):
        for kind in ("inputs", "outputs", "io"):
            assert (t2n_export / "tests" / f"{case}_{kind}.npz").exists()
    outputs = np.load(t2n_export / "tests" / "prompt_outputs.npz")
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    assert outputs["outputs"].shape == (1, 1, vocab)  # last-position logits by default
    assert outputs["outputs"].dtype == np.float32  # floats stored as f32 even for an f16 graph
    text = graph_text(t2n_export)
    max_pos = json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]
    for line in ("P >= 0", "S >= 1", f"S + P <= {max_pos}", "tg: S == 1", "pp: P == 0"):
        assert f"extension tract_assert {line};" in text


def test_all_logits_with_zero_and_a_flat_layout(model_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("export-llm", "-d", str(model_dir), "-e", str(out), "--num-logits-to-keep", "0", "-sgts", "5",
            "--export-dir-struct", "flat", "-dwtac", "--quiet")
    assert (out / "model.nnef.tgz").exists() and (out / "tokenizer.json").exists()
    assert np.load(out / "tests" / "prompt_outputs.npz")["outputs"].shape[1] == 5
    assert json.loads((out / "manifest.json").read_text())["check"]["passed"] is True  # checked by default
    with tarfile.open(out / "model.nnef.tgz") as tar:  # attention as matmuls unless --reify-sdpa-operator
        assert "tract_transformers_sdpa(" not in tar.extractfile("graph.nnef").read().decode()


def test_npz_cases_run_with_numpy_and_tract_only(t2n_export):
    """A second, independent reader: tract's own Python package and numpy, following
    torch_to_nnef's conventions (inputs fed by the model's input names and types, outputs by
    position, tract's `very` tolerance written out here)."""
    import tract

    model = tract.nnef().with_tract_transformers().load(str(t2n_export / "model" / "model.nnef.tgz"))
    names = [model.input_name(i) for i in range(model.input_count())]
    types = [str(model.input_fact(i)).rsplit(",", 1)[1] for i in range(model.input_count())]
    runnable = model.into_runnable()
    for case in json.loads((t2n_export / "modes.json").read_text())["pytorch_supported_modes"] + ["export"]:
        given = np.load(t2n_export / "tests" / f"{case}_inputs.npz")
        wanted = np.load(t2n_export / "tests" / f"{case}_outputs.npz")
        feed = [given[n].astype({"f16": np.float16, "f32": np.float32, "i64": np.int64}[t]) for n, t in zip(names, types)]
        got = [o.to_numpy().astype(np.float32) for o in runnable.run(feed)]
        want = [wanted["outputs"]] + [wanted[n.replace("in_", "out_")] for n in names[1:]]
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert np.all(np.abs(g - w) <= 5e-2 + 1e-2 * np.abs(w)), case


def test_model_slug_is_read_from_the_local_hugging_face_cache(model_dir, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny" / "snapshots" / "0123abcd"
    snapshot.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(model_dir, snapshot)
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    run_cli("export-llm", "-s", "acme/tiny", "-e", str(tmp_path / "out"), "--quiet", "--no-verify")
    assert (tmp_path / "out" / "model" / "model.nnef.tgz").exists()
    result = run_cli("export-llm", "-s", "acme/missing", "-e", str(tmp_path / "o2"), "--quiet", ok=False)
    assert result.exit_code == 2 and "not in the local Hugging Face cache" in result.output
    assert "Traceback" not in result.output


def test_tolerance_levels_are_tracts():
    assert LEVELS == ("exact", "close", "approximate", "very", "super", "ultra")
    w = np.zeros(10000, np.float32)
    off = w.copy()
    off[0] = 5e-4  # within approximate (1e-4 + 5e-4 * 0 fails: atol only) -> fails approximate
    assert not compare("y", off, w, "approximate").passed and compare("y", off, w, "very").passed
    outliers = w.copy()
    outliers[:3] = 1.0  # 3 of 10000 values far off: super allows 1e-4 (1 value), ultra 5e-4 (5 values)
    assert not compare("y", outliers, w, "super").passed and compare("y", outliers, w, "ultra").passed
    assert tolerance("approximate", np.float16).atol == 1e-3 and tolerance("approximate").atol == 1e-4


def test_sampling_is_reproducible_and_restricted():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    greedy = Sampling()
    assert greedy.pick(logits, np.random.default_rng(0)) == 0
    top1 = Sampling(temperature=1.0, top_k=1, seed=3)
    assert all(top1.pick(logits, np.random.default_rng(i)) == 0 for i in range(20))
    top_p = Sampling(temperature=1.0, top_p=0.8)
    picks = {top_p.pick(logits, np.random.default_rng(i)) for i in range(200)}
    assert picks == {0, 1}  # 0.5 + 0.3 reaches 0.8: tokens 2 and 3 are never drawn
    draws = [Sampling(temperature=1.0).pick(logits, np.random.default_rng(i)) for i in range(2000)]
    assert abs(np.mean(np.array(draws) == 0) - 0.5) < 0.05  # follows the softmax


@pytest.fixture(scope="module")
def chat_export(tmp_path_factory) -> tuple[Path, Path]:
    folder = make_tiny_llm_folder(tmp_path_factory.mktemp("hf") / "chat", train_steps=80)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    out = tmp_path_factory.mktemp("out") / "out"
    run_cli("export-llm", "-d", str(folder), "-e", str(out), "-dwtac", "--quiet")
    return folder, out


def test_generate_streams_then_reports_speed(chat_export):
    _, out = chat_export
    result = run_cli("generate", str(out), "-p", "the quick brown", "-n", "40", "--ids")
    text, ids = result.stdout.splitlines()[0], result.stdout.splitlines()[-1]
    assert text.startswith(" fox jumps")  # the demo training makes it continue the sentence
    assert "prefill:" in result.output and "tokens/s" in result.output
    ids = [int(t) for t in ids.split()]
    assert ids[-1] == 1 and len(ids) < 40  # stopped at end-of-sequence (id 1)


def test_generate_sampling_is_seeded(chat_export):
    _, out = chat_export
    runs = [run_cli("generate", str(out), "-p", "once", "-n", "12", "--temperature", "1.5", "--seed", str(s),
                    "--ids", "-q").stdout.splitlines()[-1] for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    greedy = run_cli("generate", str(out), "-p", "once", "-n", "12", "--top-k", "1", "--temperature", "2",
                     "--ids", "-q").stdout.splitlines()[-1]
    assert greedy == run_cli("generate", str(out), "-p", "once", "-n", "12", "--ids", "-q").stdout.splitlines()[-1]


def test_chat_uses_the_tokenizer_template_like_transformers(chat_export):
    from transformers import AutoTokenizer

    from t2ir.llm.generate import chat_prompt

    folder, out = chat_export
    want = AutoTokenizer.from_pretrained(folder).apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True, tokenize=False)
    assert chat_prompt(out / "tokenizer", "hello") == want
    run_cli("generate", str(out), "-p", "hello", "-n", "4", "--chat", "-q")
    no_template = run_cli("generate", str(out), "-p", "hi", "--chat", "--tokenizer", str(out / "model"), ok=False)
    assert no_template.exit_code == 2


def test_generate_without_transformers_or_torch(chat_export):
    import subprocess
    import sys

    _, out = chat_export
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            f"sys.argv = ['t2ir', 'generate', {str(out)!r}, '-p', 'the quick', '-n', '5', '-q']\n"
            "from t2ir.cli import main\nmain()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_f32_linear_accumulation_matches_pytorch_in_f32(tmp_path):
    """-f32-lin-acc on an f16 graph: linear layers sum in f32, so against the f32 reference on the
    same f16 weights they are at least as close as plain f16 matmuls."""
    import t2ir

    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.Linear(64, 8)).half().eval()
    x = torch.randn(3, 256).half()
    want = lin.float()(x.float()).detach().numpy()
    lin.half()
    diffs = {}
    for acc in (False, True):
        result = t2ir.export(lin, (x,), tmp_path / f"m{acc}.nnef.tgz", options=t2ir.ExportOptions(f32_linear_acc=acc))
        from t2ir.tract_run import load_runnable, run_tract

        got = run_tract(load_runnable(result.path), [x.numpy()])[0].astype(np.float32)
        diffs[acc] = float(np.abs(got - want).max())
        assert any(n.op == "tract_core.einsum" for n in result.graph.nodes) == acc
    assert diffs[True] <= diffs[False] + 1e-3 and diffs[True] < 2e-2


def test_q4_0_with_quantile_scales_matches_its_definition():
    """min_max_q4_0_with_embeddings_99: per block d = quantile(|w|, 0.99) / -8, values rounded
    to the nearest of (q - 8) * d with q clamped to 0..15 (an independent numpy reading)."""
    from t2ir.compression.q4_0 import dequantize_q4_0, quantize_q4_0

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 64)).astype(np.float32)
    w[0, 3] = 40.0  # an outlier: clipped instead of stretching its block's grid
    got = dequantize_q4_0(quantize_q4_0(w, percentile=0.99), w.shape)
    blocks = w.reshape(-1, 32)
    d = (np.quantile(np.abs(blocks), 0.99, axis=1, method="linear") / -8).astype(np.float16).astype(np.float32)
    q = np.clip(np.trunc(blocks / d[:, None] + 8.5), 0, 15)
    want = ((q - 8) * d[:, None]).reshape(w.shape)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0, 3] == pytest.approx(-8 * d[0]) and got[0, 3] < 40  # clipped to the grid's end


def test_q4_0_99_export_checks_against_its_dequantized_weights(model_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("export-llm", "-d", str(model_dir), "-e", str(out), "-c", "min_max_q4_0_with_embeddings_99",
            "-tt", "approximate", "--quiet")
    report = json.loads((out / "model" / "model.nnef.tgz.quant_report.json").read_text())
    assert {t["encoding"] for t in report["tensors"] if t["status"] == "packed"} == {"q4_0_p99"}
    assert json.loads((out / "manifest.json").read_text())["check"]["passed"] is True
