"""A tiny model made on the spot (no downloads), exported with `t2ir export-llm` and run in tract.

    python -m t2ir.demo [WORKDIR]

Builds a 2-layer Llama and a byte-level BPE tokenizer trained offline on a few sentences, trains
the model on them for a few seconds (so it continues a sentence instead of printing noise), saves
both with save_pretrained, exports them with --check-io, then generates in tract.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "tract runs neural networks on small devices and big servers",
    "a tiny model was exported to nnef and it ran in tract",
    "once upon a time there was a compiler that rewrote graphs",
] * 8


def train_tokenizer(vocab_size: int = 128):
    """A byte-level BPE tokenizer trained on a few sentences, wrapped for save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def train_on_corpus(model, tokenizer, steps: int = 80) -> float:
    """Next-token training on CORPUS for a fixed number of full-batch steps (deterministic for a
    seed; about 80 steps bring the loss below 0.05, a few seconds on a laptop); returns the last loss."""
    import torch

    sentences = sorted(set(CORPUS))
    rows = [tokenizer(s)["input_ids"] + [tokenizer.eos_token_id] for s in sentences]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.eos_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        labels[i, :len(r)] = torch.tensor(r)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    loss = float("nan")
    for _ in range(steps):
        out = model(input_ids=ids, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        loss = float(out.loss.detach())
    model.eval()
    return loss


def make_tiny_llm_folder(folder: Path, arch: str = "llama", seed: int = 0, train_steps: int = 0,
                         **overrides) -> Path:
    """save_pretrained a tiny causal LM (+ tokenizer) into `folder`; random weights, or trained on
    the demo corpus for `train_steps` steps."""
    import torch
    import transformers

    tokenizer = train_tokenizer()
    vocab = max(len(tokenizer), 128)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    common.update(overrides)
    config_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                  "mistral": transformers.MistralConfig}[arch]
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config_cls(**common))
    if train_steps > 0:
        train_on_corpus(model, tokenizer, train_steps)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv: list[str]) -> int:
    from t2ir.cli import app, _register

    work = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="t2ir-demo-"))
    print("training a tiny Llama on the demo sentences for a few seconds ...")
    model_dir = make_tiny_llm_folder(work / "tiny-llama", train_steps=80)
    print(f"tiny Llama saved in {model_dir}")
    _register()
    out = work / "export"
    app(["export-llm", "-d", str(model_dir), "-e", str(out), "--with-tokenizer-and-config",
         "--check-io", "very", "--force"], standalone_mode=False)
    print('generating in tract after "the quick brown":')
    app(["generate", str(out), "--prompt", "the quick brown", "-n", "32"], standalone_mode=False)
    print(f"done: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
