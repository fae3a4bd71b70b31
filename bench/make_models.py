"""Random-weight Llama folders for the export benchmark (bench/bench_export_llm.py); no downloads.

    python bench/make_models.py [--out DIR] [--force] [--hidden 1024 --intermediate 2816 --layers 8 ...]

Writes DIR/llama-f32 and DIR/llama-bf16 (same weights, saved in bfloat16), each with config.json,
model.safetensors and a small byte-level BPE tokenizer (torch_to_nnef's exporter needs tokenizer.json).
The default shape (~106 M parameters, ~425 MB in f32) is about 13x its largest tensor (the 8192x1024
embedding, 33.5 MB), so an exporter that holds every weight at once shows it in its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_OUT = Path("/tmp/t2ir-bench-llm/models")
DEFAULT_SHAPE = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8, "num_attention_heads": 16,
                     "num_key_value_heads": 4, "vocab_size": 8192, "max_position_embeddings": 512}


def tensor_bytes(folder: Path) -> int:
    """Bytes of tensor data in a folder's safetensors files (headers excluded)."""
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        total += sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")
    return total


def largest_tensor_bytes(folder: Path) -> tuple[str, int]:
    best = ("", 0)
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                size = v["data_offsets"][1] - v["data_offsets"][0]
                if size > best[1]:
                    best = (k, size)
    return best


def make_models(out: Path, force: bool = False, seed: int = 0, **shape) -> dict[str, Path]:
    """Build (or reuse) the f32 and bf16 folders; returns {"f32": path, "bf16": path}."""
    import torch
    import transformers

    from t2ir.demo import train_tokenizer

    cfg = dict(DEFAULT_SHAPE)
    cfg.update({k: v for k, v in shape.items() if v is not None})
    folders = {"f32": out / "llama-f32", "bf16": out / "llama-bf16"}
    stamp = json.dumps(cfg, sort_keys=True)
    if not force and all((p / "bench_shape.json").exists() and (p / "bench_shape.json").read_text() == stamp
                         for p in folders.values()):
        return folders
    tokenizer = train_tokenizer()
    config = transformers.LlamaConfig(bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, **cfg)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # default init makes near-zero logits; keep it, but make norms non-trivial
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.8, 1.2)
    for key, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        folder = folders[key]
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.safetensors"):
            old.unlink()
        model.to(dtype).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "bench_shape.json").write_text(stamp)
    return folders


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--force", action="store_true", help="rebuild even if the folders match the shape")
    ap.add_argument("--hidden", type=int, dest="hidden_size")
    ap.add_argument("--intermediate", type=int, dest="intermediate_size")
    ap.add_argument("--layers", type=int, dest="num_hidden_layers")
    ap.add_argument("--heads", type=int, dest="num_attention_heads")
    ap.add_argument("--kv-heads", type=int, dest="num_key_value_heads")
    ap.add_argument("--vocab", type=int, dest="vocab_size")
    args = vars(ap.parse_args(argv))
    out, force = args.pop("out"), args.pop("force")
    folders = make_models(out, force=force, **args)
    for key, folder in folders.items():
        name, big = largest_tensor_bytes(folder)
        total = tensor_bytes(folder)
        print(f"{key}: {folder} weights {total / 1e6:.1f} MB, largest tensor {name} {big / 1e6:.1f} MB "
              f"({total / big:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
