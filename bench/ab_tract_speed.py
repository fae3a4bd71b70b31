"""t2ir's and torch_to_nnef's exports of the same Llama, run side by side in one tract process.

    . .venv/bin/activate
    python bench/ab_tract_speed.py [--work /tmp/t2ir-ab] [--configs f32,f16,q4_0] [--reps 7]
                                   [--t2n-venv /tmp/t2n-venv] [--out bench/results/ab_tract_speed.md]
                                   [--hidden 1024 --intermediate 2816 --layers 8 --heads 16 --kv-heads 4 --vocab 32000]

Like for like: the same random-weight model folder (bench/make_models.py), both exporters keeping
the last position's logits only (torch_to_nnef's default, t2ir's too), the same tract (the `tract`
Python package of this venv) and the same inputs. In one process, for every scenario (prefill of
1, 8, 64, 512 tokens from an empty cache; one decode step at P = 64, 512, 2048), the two models
run alternately, the order flipping each repetition, so background load hits both alike; each
figure is the median of --reps timed runs after a warm-up. The memory-bandwidth bound of a decode
step (the weight bytes it must read / the copy bandwidth measured in this run) is reported beside
the f32 decode times.

torch_to_nnef runs in its own venv (--t2n-venv) with a stand-in tract binary (it insists on one):
    python3 -m venv /tmp/t2n-venv
    /tmp/t2n-venv/bin/pip install torch==2.13.0 torch-to-nnef torch-to-nnef-llm transformers==5.23.0 tract==0.23.9
(torch_to_nnef 0.24.12 fails with transformers 5.24, see docs/benchmarks.md.)

Each call is timed by `t2ir.llm.bench.Bench`, the library behind `t2ir bench` (it loads any
export in torch_to_nnef's layout, theirs included), and the report names the machine and versions
as `t2ir bench` does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_models import make_models  # noqa: E402
from t2ir.llm.bench import Bench, machine  # noqa: E402  (what `t2ir bench` times with)

PREFILLS = (1, 8, 64, 512)
DECODES = (64, 512, 2048)
# name -> (t2ir flags, torch_to_nnef flags): the same export settings spelled by each tool
CONFIGS = {
    "f32": (["--dtype", "f32"], ["-dt", "f32"]),
    "f16": (["--dtype", "f16", "--f32-norm", "--f32-attn"], ["-dt", "f16", "-f32-norm", "-f32-attn"]),
    "q4_0": (["--dtype", "f32", "--compression", "q4_0"], ["-dt", "f32", "-c", "min_max_q4_0"]),
}
FAKE_TRACT = "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo \"tract 0.23.8\"; exit 0; fi\nexit 1\n"


def export(tool: str, model: Path, out: Path, flags: list[str], t2n_venv: Path) -> float:
    """Export with one tool (skipped when already there); returns the wall time in seconds."""
    if (out / "model" / "model.nnef.tgz").exists():
        return float("nan")
    if tool == "t2ir":
        cmd = [str(Path(sys.executable).parent / "t2ir"), "export-llm", "-d", str(model), "-e", str(out), "-nv", "-q", *flags]
        env = dict(os.environ)
    else:
        fake = out.parent / "faketract.sh"
        fake.write_text(FAKE_TRACT)
        fake.chmod(0o755)
        cmd = [str(t2n_venv / "bin" / "t2n_export_llm_to_tract"), "-d", str(model), "-e", str(out), "-nv",
               "--tract-specific-path", str(fake), *flags]
        env = dict(os.environ, PATH=f"{t2n_venv / 'bin'}:{os.environ['PATH']}")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def weight_bytes(path: Path) -> int:
    """Bytes of the .dat payloads (what a decode step reads from memory at least once)."""
    with tarfile.open(path) as tar:
        return sum(m.size - 128 for m in tar.getmembers() if m.name.endswith(".dat"))


def copy_bandwidth(nbytes: int = 1 << 29, reps: int = 5) -> float:
    """Bytes/s of a large memory copy (read + write counted once each), the best of `reps`."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    best = min(_timed(lambda: np.copyto(b, a)) for _ in range(reps))
    return 2 * nbytes / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(models: dict[str, Bench], reps: int) -> dict[str, dict[str, float]]:
    """Median seconds per scenario per tool, runs alternated."""
    scenarios = [(f"prefill {s}", s, 0) for s in PREFILLS] + [(f"decode P={p}", 1, p) for p in DECODES]
    times: dict[str, dict[str, list[float]]] = {name: {t: [] for t in models} for name, _, _ in scenarios}
    for name, s, p in scenarios:
        for m in models.values():
            m.step(s, p)  # warm-up
        order = list(models)
        for rep in range(reps):
            for tool in (order if rep % 2 == 0 else order[::-1]):
                times[name][tool].append(models[tool].step(s, p))
    return {name: {t: statistics.median(v) for t, v in per.items()} for name, per in times.items()}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/t2ir-ab"))
    ap.add_argument("--configs", default="f32,f16,q4_0")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--t2n-venv", type=Path, default=Path("/tmp/t2n-venv"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--hidden", type=int, default=1024, dest="hidden_size")
    ap.add_argument("--intermediate", type=int, default=2816, dest="intermediate_size")
    ap.add_argument("--layers", type=int, default=8, dest="num_hidden_layers")
    ap.add_argument("--heads", type=int, default=16, dest="num_attention_heads")
    ap.add_argument("--kv-heads", type=int, default=4, dest="num_key_value_heads")
    ap.add_argument("--vocab", type=int, default=32000, dest="vocab_size")
    args = vars(ap.parse_args(argv))
    work, reps, t2n_venv, out = args.pop("work"), args.pop("reps"), args.pop("t2n_venv"), args.pop("out")
    configs = args.pop("configs").split(",")
    shape = dict(args, max_position_embeddings=4096)
    folder = make_models(work / "models", **shape)["f32"]
    lines = [f"# tract speed: t2ir vs torch_to_nnef ({datetime.date.today()})", "",
             f"Model: random Llama {json.dumps(shape)}; {reps} timed runs per figure (median), alternated.",
             f"Machine and versions: {json.dumps(machine())}; load average {os.getloadavg()[0]:.1f} at start.", ""]
    bandwidth = copy_bandwidth()
    lines.append(f"Memory copy bandwidth measured in this run: {bandwidth / 1e9:.1f} GB/s.")
    for config in configs:
        t2ir_flags, t2n_flags = CONFIGS[config]
        paths = {tool: work / f"{tool}-{config}" for tool in ("t2ir", "t2n")}
        walls = {tool: export(tool, folder, paths[tool], flags, t2n_venv)
                 for tool, flags in (("t2ir", t2ir_flags), ("t2n", t2n_flags))}
        models = {tool: Bench(p) for tool, p in paths.items()}
        medians = compare(models, reps)
        lines += ["", f"## {config} (t2ir {' '.join(t2ir_flags)}; torch_to_nnef {' '.join(t2n_flags)})", "",
                  f"Export wall time: t2ir {walls['t2ir']:.1f} s, torch_to_nnef {walls['t2n']:.1f} s "
                  "(nan: reused an earlier export).", "",
                  "| scenario | t2ir ms | torch_to_nnef ms | t2ir / t2n |", "|---|---:|---:|---:|"]
        for name, per in medians.items():
            lines.append(f"| {name} | {per['t2ir'] * 1e3:.2f} | {per['t2n'] * 1e3:.2f} | {per['t2ir'] / per['t2n']:.2f} |")
        wb = weight_bytes(paths["t2ir"] / "model" / "model.nnef.tgz")
        bound = wb / bandwidth
        decode = medians[f"decode P={DECODES[0]}"]["t2ir"]
        lines.append(f"\nWeights {wb / 1e6:.0f} MB: bandwidth bound of a decode step {bound * 1e3:.2f} ms; "
                     f"t2ir decode at P={DECODES[0]} is {decode / bound:.2f}x the bound.")
        print("\n".join(lines[-(len(medians) + 6):]), flush=True)
    text = "\n".join(lines) + "\n"
    if out:
        out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
