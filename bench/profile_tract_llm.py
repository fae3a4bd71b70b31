"""Where tract spends a prefill / decode step of an exported LLM, per operator type.

    python bench/profile_tract_llm.py MODEL.nnef.tgz|FOLDER [...] [--prefill 64] [--past 64]

Uses tract's own profiler (runnable.profile_json). Also counts the nodes tract split over the last
position ("split-over" in their names): with --num-logits-to-keep 1, tract can run the last layer's
per-position tail (MLP, norms, residual adds) on one position only when it can push the slice up to them.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np


def profile(path: str, s: int, past: int) -> None:
    import tract

    model = tract.nnef().with_tract_transformers().load(path)
    facts = [str(model.input_fact(i)) for i in range(model.input_count())]
    runnable = model.into_runnable()
    rng = np.random.default_rng(0)
    feed = []
    for fact in facts:
        *dims, dt = fact.split(",")
        shape = [s if d == "S" else past if d == "P" else int(d) for d in dims]
        dtype = {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32}[dt]
        feed.append(rng.integers(2, 100, size=shape).astype(dtype) if dt.startswith("i")
                    else rng.standard_normal(shape, dtype=np.float32).astype(dtype))
    prof = json.loads(runnable.profile_json(feed))
    per_op, count = collections.Counter(), collections.Counter()
    for node in prof["nodes"]:
        per_op[node["op_name"]] += node.get("secs_per_iter") or 0.0
        count[node["op_name"]] += 1
    split = sum("split-over" in n["node_name"] for n in prof["nodes"])
    print(f"{path}  S={s} P={past}: {prof['profiling_info']['secs_per_iter'] * 1e3:.1f} ms/iter, "
          f"{split} nodes split over the last position")
    for op, secs in per_op.most_common(6):
        print(f"  {secs * 1e3:9.2f} ms  {count[op]:4d}x {op}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--prefill", type=int, default=64)
    ap.add_argument("--past", type=int, default=64)
    args = ap.parse_args(argv)
    for m in args.models:
        profile(m, args.prefill, 0)
        profile(m, 1, args.past)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
