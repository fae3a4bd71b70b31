"""tract run time of a small Llama exported with the LLM fusions on and off (docs/passes.md).

Run by hand: ``python bench/bench_llm_fusions.py [--prefill 128] [--past 128] [--rounds 20]``.
The variants run interleaved, so background load hits them alike; minima (and medians) are printed.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from t2ir.emitters.writer import write_model
from t2ir.frontend.cache_layout import empty_caches
from t2ir.frontend.causal_lm import cache_layout_of, lift_causal_lm
from t2ir.options import ExportOptions
from t2ir.passes.pipeline import run_pipeline
from t2ir.tract_run import load_runnable, run_tract

VARIANTS = {
    "default (all fusions)": {},
    "fuse_transformer_ops=False": dict(fuse_transformer_ops=False),
    "fuse_attention=False": dict(fuse_attention=False),
    "both off": dict(fuse_attention=False, fuse_transformer_ops=False),
}
FUSED_OPS = ("tract_transformers.sdpa", "tract_core.rms_norm", "tract_transformers.apply_rope", "tract_core.silu")


def small_llama(attn: str) -> torch.nn.Module:
    """Hidden 256, 4 layers, 8 heads / 4 kv heads of 32, MLP 704, vocab 2048."""
    config = transformers.LlamaConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4, head_dim=32,
        intermediate_size=704, vocab_size=2048, max_position_embeddings=2048,
        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attn", default="eager", help="eager: 'both off' is plain matmul/softmax attention")
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--past", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()

    model = small_llama(args.attn)
    layout = cache_layout_of(model)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 2000, (1, args.prefill)).astype(np.int64)
    empty = [t.numpy() for t in empty_caches(layout, torch.float32)]
    past = [rng.standard_normal(t.shape).astype(np.float32) for t in empty_caches(layout, torch.float32, args.past)]
    cases = {"prefill": ([ids, *empty], 3), "decode": ([ids[:, :1], *past], 20)}

    runs, info = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, options) in enumerate(VARIANTS.items()):
            graph = lift_causal_lm(model)
            run_pipeline(graph, ExportOptions(**options))
            path = write_model(graph, Path(tmp) / f"{i}.nnef.tgz")
            start = time.perf_counter()
            runs[name] = load_runnable(path)
            ops = collections.Counter(n.op for n in graph.nodes)
            info[name] = (len(graph), time.perf_counter() - start, [ops[o] for o in FUSED_OPS])
    times = {name: {case: [] for case in cases} for name in runs}
    for _ in range(args.rounds):
        for name, runnable in runs.items():
            for case, (inputs, reps) in cases.items():
                for _ in range(reps):
                    start = time.perf_counter()
                    run_tract(runnable, inputs)
                    times[name][case].append(time.perf_counter() - start)

    print(f"| options | nodes | load | prefill S={args.prefill} | decode P={args.past} | sdpa/rms/rope/silu |")
    print("|---|---:|---:|---:|---:|---|")
    for name, (nodes, load, counts) in info.items():
        cells = [f"{min(t) * 1e3:.2f} ms ({statistics.median(t) * 1e3:.2f})" for t in times[name].values()]
        print(f"| {name} | {nodes} | {load * 1e3:.0f} ms | {' | '.join(cells)} | {'/'.join(map(str, counts))} |")


if __name__ == "__main__":
    main()
