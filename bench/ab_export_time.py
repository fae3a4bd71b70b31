"""Export wall time of `t2ir export-llm` and torch_to_nnef's CLI on the same model, runs alternated.

    python bench/ab_export_time.py MODEL_DIR [--configs f32,q4_0] [--reps 5] [--t2n-venv /tmp/t2nvenv]

Each run is a fresh CLI process (start-up and imports included), both with `-nv` and the same
settings as bench/ab_tract_speed.py (`CONFIGS`); the tool that goes first alternates, the page
cache is warmed by reading the checkpoint before the first run, and the medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ab_tract_speed import CONFIGS, export  # noqa: E402
from t2ir.llm.bench import machine  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--configs", default="f32")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--t2n-venv", type=Path, default=Path("/tmp/t2nvenv"))
    args = ap.parse_args(argv)
    for f in args.model.glob("*.safetensors"):
        f.read_bytes()  # warm the page cache for both tools alike
    print(machine())
    print("| config | t2ir median s | torch_to_nnef median s | t2ir runs | torch_to_nnef runs | faster |")
    print("|---|---:|---:|---|---|---:|")
    for name in args.configs.split(","):
        flags = dict(zip(("t2ir", "t2n"), CONFIGS[name]))
        times: dict[str, list[float]] = {"t2ir": [], "t2n": []}
        for rep in range(args.reps):
            for tool in (("t2ir", "t2n") if rep % 2 == 0 else ("t2n", "t2ir")):
                with tempfile.TemporaryDirectory(prefix="t2ir-ab-export-") as work:
                    times[tool].append(export(tool, args.model, Path(work) / "out", flags[tool], args.t2n_venv))
        mine, theirs = (statistics.median(times[t]) for t in ("t2ir", "t2n"))
        runs = {t: ", ".join(f"{s:.1f}" for s in times[t]) for t in times}
        print(f"| {name} | {mine:.1f} | {theirs:.1f} | {runs['t2ir']} | {runs['t2n']} | {theirs / mine:.1f}x |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
