"""Is the export linear in the number of decoder layers? Times tracing and each pass on Llama graphs of
2, 4, 8, 16 and 32 layers (small hidden size: the graph's shape, not the weights, is what costs).

    python bench/pipeline_scaling.py [--layers 2 4 8 16 32] [--reps 3] [--out bench/results/pipeline_scaling.md]

Each figure is the best of --reps runs (a fresh copy of the lifted graph each time). Tracing
(torch.export + lifting) is timed both with every decoder layer traced and with alike layers
traced once and stamped (the default); "total" is the passes only.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path


def lifted_graph(layers: int, every_layer: bool):
    """The lifted graph of a small Llama with `layers` decoder layers, and the seconds tracing took."""
    import transformers

    from t2ir.frontend.causal_lm import build_meta_model, lift_causal_lm
    from t2ir.ir import InMemory

    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                                      max_position_embeddings=512)
    logging.disable(logging.INFO)
    model = build_meta_model(config)
    start = time.perf_counter()
    graph = lift_causal_lm(model, num_logits_to_keep=1, weight_source=lambda name, t: InMemory(t),
                           every_layer=every_layer)
    return graph, time.perf_counter() - start


def time_trace(layers: int, reps: int) -> dict[str, float]:
    """Best trace + lift seconds with every layer traced, and with alike layers stamped."""
    return {"trace every layer": min(lifted_graph(layers, True)[1] for _ in range(reps)),
            "trace stamped": min(lifted_graph(layers, False)[1] for _ in range(reps))}


def time_passes(text: str, reps: int) -> dict[str, float]:
    from t2ir.ops.builtins import ensure_registered
    from t2ir.options import ExportOptions
    from t2ir.parser import parse_ir
    from t2ir.passes.pipeline import run_pipeline

    ensure_registered()
    best: dict[str, float] = {}
    for _ in range(reps):
        graph = parse_ir(text)
        start = time.perf_counter()
        run = run_pipeline(graph, ExportOptions(), check=False)
        total = time.perf_counter() - start
        per = {"total": total}
        for r in run.records:
            per[r.name] = per.get(r.name, 0.0) + r.seconds
        for k, v in per.items():
            best[k] = min(best.get(k, v), v)
    return best


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = {}
    for n in args.layers:
        text = str(lifted_graph(n, every_layer=False)[0])
        rows[n] = {**time_trace(n, args.reps), **time_passes(text, args.reps)}
        print(n, {k: round(v * 1e3, 1) for k, v in rows[n].items()}, flush=True)
    names = list(rows[args.layers[0]])
    lines = ["| layers | " + " | ".join(names) + " | passes ms / layer |",
             "|---:|" + "---:|" * len(names) + "---:|"]
    for n, per in rows.items():
        lines.append(f"| {n} | " + " | ".join(f"{per[k] * 1e3:.0f}" for k in names)
                     + f" | {per['total'] * 1e3 / n:.1f} |")
    text = "Pass times in ms (best of %d):\n\n" % args.reps + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
