"""`t2ir export-llm` and `t2ir generate` end to end on a tiny model made on the spot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from t2ir.cli import _register, app
from t2ir.demo import make_tiny_llm_folder

_register()
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_llm_folder(tmp_path_factory.mktemp("hf") / "tiny-llama")


def run_cli(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_export_f32_with_everything(model_dir, tmp_path):
    out = tmp_path / "out"
    dumps = tmp_path / "dumps"
    result = run_cli("export-llm", "-d", str(model_dir), "-e", str(out), "--with-tokenizer-and-config",
                     "--check-io", "very", "--dump-ir", str(dumps))
    for rel in ["model/model.nnef.tgz", "model/config.json", "tokenizer/tokenizer.json", "manifest.json",
                *(f"tests/{c}_io.npz" for c in ("export", "prompt", "prompt_with_past", "text_generation"))]:
        assert (out / rel).exists(), rel
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["passed"] is True and manifest["check"]["level"] == "very"
    assert manifest["versions"]["torch"].startswith("2.")
    assert "model.safetensors" in manifest["inputs"]
    assert [p["name"] for p in manifest["passes"]][-1] == "cleanup"
    assert sorted(p.name for p in dumps.iterdir())[0] == "00-lift.t2ir"
    assert len(list(dumps.iterdir())) == len(manifest["passes"]) + 1
    assert "check-io (very)" in result.output
    case = np.load(out / "tests" / "text_generation_io.npz")
    assert case["input_ids"].shape == (1, 1) and case["outputs"].shape[:2] == (1, 1)
    assert case["in_cache_key_0"].shape[2] + 1 == case["out_cache_key_0"].shape[2]


@pytest.mark.parametrize("flags", [
    ["--dtype", "f16", "--f32-norm", "--f32-attn", "--check-io", "approximate"],
    ["--dtype", "bf16", "--check-io", "very"],  # f16 compute without f32 norm/attn: ~3e-3
    ["--num-logits-to-keep", "1", "--check-io", "very"],
    ["--dtype", "f16", "--compression", "q4_0", "--check-io", "approximate"],
    ["--attn-implementation", "eager", "--check-io", "very"],
])
def test_export_variants_pass_their_check(model_dir, tmp_path, flags):
    out = tmp_path / "out"
    result = run_cli("export-llm", "-d", str(model_dir), "-e", str(out), "--quiet", *flags)
    assert result.output == ""  # --quiet: no progress, no summary
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["check"]["passed"] is True
    if "--num-logits-to-keep" in flags:
        assert np.load(out / "tests" / "prompt_io.npz")["outputs"].shape[1] == 1


def test_generate_matches_transformers_greedy(model_dir, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    run_cli("export-llm", "-d", str(model_dir), "-e", str(out), "--with-tokenizer-and-config", "--quiet")
    result = run_cli("generate", str(out), "--prompt", "the quick brown fox", "-n", "12", "--ids")
    ours = [int(t) for t in result.stdout.splitlines()[-1].split()]  # the text, then the ids
    ids = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode("the quick brown fox").ids
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    assert ours == ref


def test_dry_run_writes_nothing(model_dir, tmp_path):
    out = tmp_path / "out"
    result = run_cli("export-llm", "-d", str(model_dir), "-e", str(out), "--dry-run")
    assert not out.exists()
    assert "predicted model size" in result.output and "nnef.softmax" in result.output


def test_existing_output_is_refused_then_replaced_with_force(model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = run_cli("export-llm", "-d", str(model_dir), "-e", str(out), "--quiet", ok=False)
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "keep.txt").read_text() == "precious"
    run_cli("export-llm", "-d", str(model_dir), "-e", str(out), "--quiet", "--force")
    assert not (out / "keep.txt").exists() and (out / "model" / "model.nnef.tgz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.parametrize("breakage, message", [
    ("no-config", "config.json is missing"),
    ("bad-config", "not valid JSON"),
    ("bad-safetensors", "not a readable safetensors"),
    ("unknown-arch", "does not know the architecture"),
    ("no-weights", "no *.safetensors weights"),
])
def test_broken_model_folders_give_one_line_errors(model_dir, tmp_path, breakage, message):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    if breakage == "no-config":
        (broken / "config.json").unlink()
    elif breakage == "bad-config":
        (broken / "config.json").write_text("{ not json")
    elif breakage == "bad-safetensors":
        (broken / "model.safetensors").write_bytes(b"garbage" * 10)
    elif breakage == "unknown-arch":
        cfg = json.loads((broken / "config.json").read_text())
        cfg["model_type"] = "no-such-arch"
        (broken / "config.json").write_text(json.dumps(cfg))
    elif breakage == "no-weights":
        (broken / "model.safetensors").unlink()
    out = tmp_path / "out"
    result = run_cli("export-llm", "-d", str(broken), "-e", str(out), "--quiet", ok=False)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_unknown_dtype_is_rejected(model_dir, tmp_path):
    result = run_cli("export-llm", "-d", str(model_dir), "-e", str(tmp_path / "o"), "--dtype", "f64", ok=False)
    assert result.exit_code == 2 and "f64" in result.output


def test_peft_adapter_is_merged(model_dir, tmp_path):
    from safetensors.torch import save_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "base_model_name_or_path": str(model_dir)}))
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 64, generator=g), torch.randn(64, 2, generator=g)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b}, adapter / "adapter_model.safetensors")
    out = tmp_path / "out"
    result = run_cli("export-llm", "-d", str(adapter), "-e", str(out), "--quiet", ok=False)
    assert result.exit_code == 2 and "--merge-peft" in result.output
    run_cli("export-llm", "-d", str(adapter), "-e", str(out), "--quiet", "--merge-peft", "--check-io", "very")
    # The merged weight differs from the base one: the exported graph must carry W + 2 * B @ A.
    from safetensors import safe_open
    import tarfile

    with safe_open(model_dir / "model.safetensors", "pt") as f:
        base = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    with tarfile.open(out / "model" / "model.nnef.tgz") as tar:
        raw = tar.extractfile("model.layers.0.self_attn.q_proj.weight.dat").read()
    merged = np.frombuffer(raw[128:], dtype=np.float32).reshape(64, 64)
    np.testing.assert_allclose(merged, (base + 2.0 * b @ a).numpy(), atol=1e-5)


@pytest.mark.parametrize("method", ["q4_0", "q4_0_with_embeddings"])
def test_compressed_export_checks_against_dequantized_reference(tmp_path, method):
    tied = make_tiny_llm_folder(tmp_path / "tied-qwen2", arch="qwen2", tie_word_embeddings=True)
    out = tmp_path / "out"
    result = run_cli("export-llm", "-d", str(tied), "-e", str(out), "--compression", method,
                     "--check-io", "very")
    assert "Quantization report" in result.output
    report = json.loads((out / "model" / "model.nnef.tgz.quant_report.json").read_text())
    packed = {t["name"] for t in report["tensors"] if t["status"] == "packed"}
    assert "model.layers.0.mlp.up_proj.weight" in packed
    assert ("model.embed_tokens.weight" in packed) == (method == "q4_0_with_embeddings")
    assert json.loads((out / "manifest.json").read_text())["check"]["passed"] is True


def test_keep_float_keeps_chosen_layers(model_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("export-llm", "-d", str(model_dir), "-e", str(out), "--quiet", "--compression", "q4_0",
            "--keep-float", "lm_head.*", "--keep-float", "*.down_proj.weight", "--check-io", "very")
    report = json.loads((out / "model" / "model.nnef.tgz.quant_report.json").read_text())
    status = {t["name"]: t["status"] for t in report["tensors"]}
    assert status["lm_head.weight"] == "kept" and status["model.layers.1.mlp.down_proj.weight"] == "kept"
    assert status["model.layers.1.mlp.up_proj.weight"] == "packed"
