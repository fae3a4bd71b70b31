"""`t2ir export-llm` vs torch_to_nnef's `t2n_export_llm_to_tract`, side by side on the same Llama folders.

    . .venv/bin/activate
    python bench/bench_export_llm.py [--work /tmp/t2ir-bench-llm] [--configs f32,f16,q4_0,bf16src_f16]
                                     [--t2n-venv /tmp/t2nvenv] [--tools t2ir,t2n] [--out bench/results/llm_export.md]

For each configuration, each tool runs as a subprocess under `/usr/bin/time -v` on the same model folder
(made by bench/make_models.py if missing; its safetensors are read once before each export so both tools
start from a warm page cache). Measured per export:
  * wall time of the whole CLI process (Python start-up and imports included), both tools with `-nv` (no
    test run in tract inside the export: torch_to_nnef cannot run one here, see below);
  * peak RSS: ru_maxrss from `time -v` (the largest process), and a 50 ms /proc sampling of the process
    tree giving peak RSS and peak anonymous RSS (RssAnon: memory the exporter owns, as opposed to pages of
    mmapped files, which the kernel can drop);
  * output size (model.nnef.tgz and the whole export folder);
  * t2ir only: seconds per phase from OUT/manifest.json.
Then, per configuration, one fresh process loads every tool's model.nnef.tgz with the `tract` Python package
and times prefill of 64 tokens from P=0 and decode of 1 token at P=64, alternating the models run by run so
background load hits them alike (median and min of --reps runs after one warm-up); a separate process per
model gives tract's peak RSS. The last-position logits of the prefill are compared across tools (same
weights, same input ids and cache values) as a sanity check.

torch_to_nnef needs a tract CLI binary, which it downloads from GitHub (no network here). With `-nv` it only
asks the binary's version, so a stand-in script that prints `tract <version of the tract package>` is passed
with --tract-specific-path. Set up its venv with (see bench/results/llm_export.md for why 5.23.0):
    python3 -m venv /tmp/t2nvenv
    /tmp/t2nvenv/bin/pip install -c constraints.txt torch==2.13.0
    /tmp/t2nvenv/bin/pip install -c constraints.txt torch-to-nnef torch-to-nnef-llm transformers==5.24.0
    /tmp/t2nvenv/bin/pip install torch==2.13.0 transformers==5.23.0
    /tmp/t2nvenv/bin/pip install --no-deps --target /tmp/t2n-transformers-5.24.0 transformers==5.24.0  # probe
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

MB = 1e6
PREFILL = 64

# name -> (source folder key, t2ir flags, t2n flags)
CONFIGS: dict[str, tuple[str, list[str], list[str]]] = {
    "f32": ("f32", [], []),
    "f16": ("f32", ["--dtype", "f16"], ["-dt", "f16"]),
    "q4_0": ("f32", ["--compression", "q4_0"], ["-c", "min_max_q4_0"]),
    "bf16src_f16": ("bf16", ["--dtype", "f16"], ["-dt", "f16"]),
}
# what each CLI imports before it touches weights: its RSS is the floor under every export's peak
IMPORTS = {"t2ir": "t2ir.cli.llm_cmds, t2ir.llm.exporter, t2ir.frontend.causal_lm, transformers.models.llama.modeling_llama",
           "t2n": "torch_to_nnef_llm.exporter, torch_to_nnef_llm.cli, transformers.models.llama.modeling_llama"}
CONFIG_DOC = {
    "f32": "f32 checkpoint, plain f32 export",
    "f16": "f32 checkpoint, weights and activations in f16",
    "q4_0": "f32 checkpoint, Q4_0 linear weights (t2ir `--compression q4_0`, t2n `-c min_max_q4_0`), f32 activations",
    "bf16src_f16": "bf16 checkpoint exported to f16",
}


# --------------------------------------------------------------------------------------------- measuring


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _rss_kb(pid: int) -> tuple[int, int, int]:
    vals = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in vals:
                    vals[key] = int(line.split()[1])
    except OSError:
        pass
    return vals["VmRSS"], vals["RssAnon"], vals["RssFile"]


class TreeSampler(threading.Thread):
    """Peak of the summed RSS / RssAnon of a process tree, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_anon = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            rss = anon = 0
            for p in _tree(self.pid):
                r, a, _ = _rss_kb(p)
                rss, anon = rss + r, anon + a
            self.peak_rss, self.peak_anon = max(self.peak_rss, rss * 1024), max(self.peak_anon, anon * 1024)
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


@dataclass
class Run:
    cmd: list[str]
    rc: int
    wall: float
    maxrss: int  # bytes, from time -v
    tree_rss: int
    tree_anon: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def tail(self, n: int = 12) -> str:
        lines = [l for l in self.log.read_text(errors="replace").splitlines() if l.strip()]
        return "\n".join(lines[-n:])


def measure(cmd: list[str], log: Path, cwd: Path, env_extra: dict[str, str] | None = None) -> Run:
    timefile = log.with_suffix(".time")
    env = dict(os.environ, **(env_extra or {}))
    full = ["/usr/bin/time", "-v", "-o", str(timefile), *cmd]
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - start
        sampler.stop()
    maxrss = 0
    for line in timefile.read_text().splitlines():
        if "Maximum resident set size" in line:
            maxrss = int(line.split(":")[1]) * 1024
        if "Exit status" in line:
            rc = int(line.split(":")[1])
    return Run(cmd, rc, wall, maxrss, sampler.peak_rss, sampler.peak_anon, log, env_extra or {})


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0


def warm_cache(folder: Path) -> None:
    for f in folder.glob("*.safetensors"):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


# --------------------------------------------------------------------------------------------- tract


def _np_dtype(name: str):
    import numpy as np

    return {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32, "f64": np.float64}[name]


def tract_mem(path: str, vocab: int) -> None:
    """Runs in its own process (peak RSS from time -v): load, one prefill, one decode."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = tract_run([("m", path, str(Path(tmp) / "logits.npy"))], 0, vocab)
    if "error" in res["m"]:
        raise SystemExit(res["m"]["error"])


def tract_run(models: list[tuple[str, str, str]], reps: int, vocab: int) -> dict:
    """Runs in its own process: for each (label, model path, logits .npy), load it, then time prefill of 64
    tokens from P=0 and decode of 1 token at P=64, alternating between the models run by run so that
    background load hits them alike. Returns {label: results}."""
    import numpy as np
    import tract

    loaded, res = {}, {}
    for label, path, logits_out in models:
        t0 = time.perf_counter()
        try:
            model = tract.nnef().with_tract_transformers().load(path)
            facts = [str(model.input_fact(i)) for i in range(model.input_count())]
            names = [model.input_name(i) for i in range(model.input_count())]
            runnable = model.into_runnable()
        except Exception as e:  # noqa: BLE001 - a failure is reported, not raised
            res[label] = {"error": str(e).split("Stack backtrace:")[0].strip()}
            continue
        res[label] = {"load_s": time.perf_counter() - t0, "inputs": dict(zip(names, facts))}
        loaded[label] = (runnable, names, facts, logits_out)

    def feed(names, facts, s: int, p: int):
        rng = np.random.default_rng(0)  # same ids and cache values for every model (cast to its dtypes)
        out = []
        for name, fact in zip(names, facts):
            *dims, dt = fact.split(",")
            shape = [s if d == "S" else p if d == "P" else int(d) for d in dims]
            if name == "input_ids":
                out.append(rng.integers(2, vocab, size=shape).astype(_np_dtype(dt)))
            else:
                out.append(rng.standard_normal(shape, dtype=np.float32).astype(_np_dtype(dt)))
        return out

    feeds = {}
    for label, (runnable, names, facts, logits_out) in loaded.items():
        try:
            feeds[label] = {"prefill": feed(names, facts, PREFILL, 0), "decode": feed(names, facts, 1, PREFILL)}
            outs = [o.to_numpy() for o in runnable.run(feeds[label]["prefill"])]  # warm-up, kept for the check
            np.save(logits_out, outs[0].astype(np.float32).reshape(-1, outs[0].shape[-1])[-1])
            runnable.run(feeds[label]["decode"])  # warm-up
            res[label]["logits_shape"] = list(outs[0].shape)
        except Exception as e:  # noqa: BLE001 - a failure is reported, not raised
            res[label] = {"error": str(e).split("Stack backtrace:")[0].strip()}
            feeds.pop(label, None)
    for kind, n in (("prefill", reps), ("decode", reps * 2)):
        times: dict[str, list[float]] = {label: [] for label in feeds}
        for _ in range(n):
            for label in feeds:
                t = time.perf_counter()
                loaded[label][0].run(feeds[label][kind])
                times[label].append(time.perf_counter() - t)
        for label, ts in times.items():
            if not ts:
                continue
            res[label][f"{kind}_s"] = statistics.median(ts)
            res[label][f"{kind}_min_s"] = min(ts)
            res[label][f"{kind}_all"] = ts
    return res


# --------------------------------------------------------------------------------------------- tools


def versions(python: str, pkgs: list[str], env_extra: dict[str, str] | None = None) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\nout={}\nfor p in sys.argv[1:]:\n"
            "    try: out[p]=m.version(p)\n    except Exception: out[p]='not installed'\n"
            "import transformers; out['transformers (imported)']=transformers.__version__\nprint(json.dumps(out))")
    try:
        res = subprocess.run([python, "-c", code, *pkgs], capture_output=True, text=True, timeout=120,
                             check=False, env=dict(os.environ, **(env_extra or {})))
        return json.loads(res.stdout)
    except Exception as e:  # pragma: no cover - report, don't crash  # noqa: BLE001 - a failure is reported, not raised
        return {"error": str(e)}


def tract_shim(work: Path) -> Path:
    import importlib.metadata as md

    shim = work / "tract-cli-stand-in" / "tract"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text("#!/bin/sh\n# stand-in for the tract CLI: torch_to_nnef only asks its version when -nv "
                    "skips the tract checks\n"
                    f'if [ "$1" = "--version" ]; then echo "tract {md.version("tract")}"; exit 0; fi\n'
                    'echo "tract CLI stand-in: only --version is supported" >&2; exit 2\n')
    shim.chmod(0o755)
    return shim


def t2ir_cmd(src: Path, out: Path, flags: list[str]) -> list[str]:
    exe = Path(sys.executable).parent / "t2ir"
    # -nv like torch_to_nnef's run below (it cannot verify without the tract CLI): the exports are
    # compared in tract afterwards, by this script, for both tools alike
    return [str(exe), "export-llm", "-d", str(src), "-e", str(out), "--num-logits-to-keep", "1", "--quiet",
            "--force", "-nv", *flags]


def t2n_cmd(venv: Path, shim: Path, src: Path, out: Path, flags: list[str]) -> list[str]:
    return [str(venv / "bin" / "t2n_export_llm_to_tract"), "-d", str(src), "-e", str(out), "-nv",
            "--tract-specific-path", str(shim), "--num-logits-to-keep", "1", *flags]


# --------------------------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    cpu = "unknown"
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                fl = line.split(":", 1)[1].split()
                flags = " ".join(x for x in ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16")
                                 if x in fl)
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram": f"{mem / 2**30:.1f} GiB", "simd": flags,
            "kernel": platform.release(), "python": platform.python_version()}


def git_state() -> str:
    """The commit t2ir ran from, and which of its source files differed from it (others edit the tree)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True, timeout=30, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "t2ir"], capture_output=True,
                               text=True, timeout=30, check=False).stdout.split("\n")
        dirty = [l[3:] for l in dirty if l.strip()]
    except Exception as e:  # pragma: no cover  # noqa: BLE001 - a failure is reported, not raised
        return f"unknown ({e})"
    return f"commit `{head}`" + (f", with uncommitted changes in {', '.join(dirty)}" if dirty else ", clean")


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "—" if x is None else format(x, spec)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/t2ir-bench-llm"))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--tools", default="t2ir,t2n")
    ap.add_argument("--t2n-venv", type=Path, default=Path("/tmp/t2nvenv"))
    ap.add_argument("--t2n-probe-pythonpath", type=Path, default=Path("/tmp/t2n-transformers-5.24.0"),
                    help="if it exists: also run t2n once on a tiny model with this PYTHONPATH (transformers "
                         "5.24.0, the version t2ir is pinned to) and report the outcome")
    ap.add_argument("--reps", type=int, default=8, help="tract prefill runs (decode runs: twice as many)")
    ap.add_argument("--layers", type=int, help="override the benchmark model's layer count (smoke tests)")
    ap.add_argument("--skip-tract", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "llm_export.md")
    ap.add_argument("--vocab", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--tract-mem", help=argparse.SUPPRESS)
    ap.add_argument("--tract-run", nargs="+", metavar="LABEL=MODEL=LOGITS_NPY", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.tract_mem:
        tract_mem(args.tract_mem, args.vocab)
        return 0
    if args.tract_run:
        models = [tuple(spec.split("=", 2)) for spec in args.tract_run]
        print(json.dumps(tract_run(models, args.reps, args.vocab)))
        return 0

    from make_models import largest_tensor_bytes, make_models, tensor_bytes

    started = time.time()
    args.loadavg_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    args.git_start = git_state()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model_root = work / "models"
    print(f"models in {model_root} ...", flush=True)
    folders = make_models(model_root, num_hidden_layers=args.layers)
    config = json.loads((folders["f32"] / "config.json").read_text())
    vocab = config["vocab_size"]
    tools = args.tools.split(",")
    configs = args.configs.split(",")
    t2n_ok = "t2n" in tools and (args.t2n_venv / "bin" / "t2n_export_llm_to_tract").exists()
    notes: list[str] = []
    if "t2n" in tools and not t2n_ok:
        notes.append(f"torch_to_nnef is not installed in {args.t2n_venv}: its rows are missing.")
    shim = tract_shim(work) if t2n_ok else None

    baseline = {}  # tool -> Run of a process that only imports the exporter
    for tool in tools:
        if tool == "t2n" and not t2n_ok:
            continue
        python = sys.executable if tool == "t2ir" else str(args.t2n_venv / "bin" / "python")
        mods = IMPORTS[tool]
        baseline[tool] = measure([python, "-c", f"import {mods}"], work / f"import-{tool}.log", cwd=work)
        print(f"import-only {tool}: maxrss {baseline[tool].maxrss / MB:.0f} MB", flush=True)

    rows = []  # dicts
    exports = work / "exports"
    exports.mkdir(exist_ok=True)
    for i, cfg in enumerate(configs):
        src_key, t2ir_flags, t2n_flags = CONFIGS[cfg]
        src = folders[src_key]
        for tool in (tools if i % 2 == 0 else tools[::-1]):  # alternate who goes first
            if tool == "t2n" and not t2n_ok:
                continue
            out = exports / f"{tool}-{cfg}"
            if out.exists():
                shutil.rmtree(out)
            cmd = t2ir_cmd(src, out, t2ir_flags) if tool == "t2ir" else t2n_cmd(args.t2n_venv, shim, src, out, t2n_flags)
            warm_cache(src)
            print(f"[{cfg}] {tool}: {shlex.join(cmd)}", flush=True)
            run = measure(cmd, exports / f"{tool}-{cfg}.log", cwd=work)
            row = {"config": cfg, "tool": tool, "run": run, "src": src, "out": out,
                   "weights": tensor_bytes(src), "tgz": None, "total": None, "phases": None, "tract": None}
            tgz = out / "model" / "model.nnef.tgz"
            if run.rc == 0 and tgz.exists():
                row["tgz"], row["total"] = tgz.stat().st_size, dir_bytes(out)
                if tool == "t2ir" and (out / "manifest.json").exists():
                    row["phases"] = json.loads((out / "manifest.json").read_text())["time"]["phases"]
            else:
                print(f"  FAILED rc={run.rc}\n{run.tail()}", flush=True)
            print(f"  wall {run.wall:.1f}s, maxrss {run.maxrss / MB:.0f} MB, tree anon {run.tree_anon / MB:.0f} MB",
                  flush=True)
            rows.append(row)

    tract_cmds: list[list[str]] = []
    args.tract_cmds = tract_cmds
    if not args.skip_tract:
        for cfg in configs:
            todo = [r for r in rows if r["config"] == cfg and r["tgz"] is not None]
            if not todo:
                continue
            cmd = [sys.executable, str(Path(__file__).resolve()), "--reps", str(args.reps), "--vocab", str(vocab),
                   "--tract-run"]
            for r in todo:
                cmd += [f"{r['tool']}={r['out'] / 'model' / 'model.nnef.tgz'}={exports / (r['tool'] + '-' + cfg + '.logits.npy')}"]
            print(f"[{cfg}] tract: {', '.join(r['tool'] for r in todo)} ...", flush=True)
            run = measure(cmd, exports / f"{cfg}.tract.log", cwd=work)
            tract_cmds.append(cmd)
            results = {}
            if run.rc == 0:
                results = json.loads(run.log.read_text().strip().splitlines()[-1])
            for r in todo:
                t = results.get(r["tool"])
                if t and "error" not in t:
                    r["tract"] = t
                    print(f"  {r['tool']}: load {t['load_s']:.2f}s prefill {t['prefill_s'] * 1e3:.0f} ms "
                          f"decode {t['decode_s'] * 1e3:.1f} ms", flush=True)
                else:
                    r["tract_error"] = t["error"] if t else run.tail()
                    print(f"  {r['tool']}: tract FAILED\n{r['tract_error']}", flush=True)
            for r in todo:
                if r.get("tract"):
                    mem = measure([sys.executable, str(Path(__file__).resolve()), "--vocab", str(vocab), "--tract-mem",
                                   str(r["out"] / "model" / "model.nnef.tgz")],
                                  exports / f"{r['tool']}-{cfg}.tract-mem.log", cwd=work)
                    r["tract"]["maxrss"] = mem.maxrss if mem.rc == 0 else None

    # cross-tool logits check
    import numpy as np

    agree = {}
    for cfg in configs:
        a, b = exports / f"t2ir-{cfg}.logits.npy", exports / f"t2n-{cfg}.logits.npy"
        have = {r["tool"] for r in rows if r["config"] == cfg and r.get("tract")}
        if {"t2ir", "t2n"} <= have and a.exists() and b.exists():
            la, lb = np.load(a).astype(np.float64), np.load(b).astype(np.float64)
            agree[cfg] = (float(np.abs(la - lb).max()), float(np.abs(lb).max()), int(la.argmax()) == int(lb.argmax()))

    probe = None
    if t2n_ok and args.t2n_probe_pythonpath.exists():
        probe = run_probe(args, work, shim)

    args.loadavg_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    args.git_end = git_state()
    md = render(args, rows, baseline, agree, probe, folders, notes, started, tools, configs, shim,
                largest_tensor_bytes(folders["f32"]), largest_tensor_bytes(folders["bf16"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    print(md)
    print(f"written to {args.out} (total {time.time() - started:.0f}s)")
    return 0


def run_probe(args, work: Path, shim: Path) -> dict:
    """t2n on a tiny model with transformers 5.24.0 (t2ir's pin) put first on PYTHONPATH."""
    from t2ir.demo import make_tiny_llm_folder

    tiny = work / "models" / "tiny-llama"
    if not (tiny / "config.json").exists():
        make_tiny_llm_folder(tiny)
    out = work / "exports" / "t2n-probe-transformers-5.24.0"
    if out.exists():
        shutil.rmtree(out)
    cmd = t2n_cmd(args.t2n_venv, shim, tiny, out, [])
    env = {"PYTHONPATH": str(args.t2n_probe_pythonpath)}
    print(f"[probe] PYTHONPATH={args.t2n_probe_pythonpath} {shlex.join(cmd)}", flush=True)
    run = measure(cmd, work / "exports" / "t2n-probe-transformers-5.24.0.log", cwd=work, env_extra=env)
    vers = versions(str(args.t2n_venv / "bin" / "python"), ["transformers"], env)
    return {"run": run, "transformers": vers.get("transformers (imported)"), "env": env}


def render(args, rows, baseline, agree, probe, folders, notes, started, tools, configs, shim, big32, big16) -> str:
    m = machine()
    ours = versions(sys.executable, ["t2ir", "torch", "transformers", "tract", "safetensors", "numpy"])
    theirs = (versions(str(args.t2n_venv / "bin" / "python"),
                       ["torch-to-nnef", "torch-to-nnef-llm", "torch", "transformers", "numpy", "safetensors"])
              if shim else {})
    cfg = json.loads((folders["f32"] / "config.json").read_text())
    from make_models import tensor_bytes

    w32, w16 = tensor_bytes(folders["f32"]), tensor_bytes(folders["bf16"])
    L = []
    L.append("# LLM export: t2ir vs torch_to_nnef\n")
    L.append(f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
             f"whole run {time.time() - started:.0f} s. Produced by `bench/bench_export_llm.py`.\n")
    L.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, SIMD: {m['simd'] or '?'}, "
             f"Linux {m['kernel']}, Python {m['python']}. Load average (1/5/15 min) at start {args.loadavg_start}, "
             f"at end {args.loadavg_end} (the machine is shared: other processes were running, so times are noisy).\n")
    L.append("Versions:\n")
    L.append("- t2ir venv: " + ", ".join(f"{k} {v}" for k, v in ours.items() if "imported" not in k))
    L.append(f"- t2ir source at start: {args.git_start}"
             + ("" if args.git_end == args.git_start else f"; at end: {args.git_end}"))
    if theirs:
        L.append("- torch_to_nnef venv: " + ", ".join(f"{k} {v}" for k, v in theirs.items() if "imported" not in k))
    L.append("")
    L.append(f"Model: random-weight Llama (bench/make_models.py): hidden {cfg['hidden_size']}, intermediate "
             f"{cfg['intermediate_size']}, {cfg['num_hidden_layers']} layers, {cfg['num_attention_heads']} heads, "
             f"{cfg['num_key_value_heads']} kv heads, vocab {cfg['vocab_size']}, untied lm_head. Weights "
             f"{w32 / MB:.1f} MB in f32 (largest tensor {big32[0]} {big32[1] / MB:.1f} MB; the whole is "
             f"{w32 / big32[1]:.1f}x that), {w16 / MB:.1f} MB in the bf16 copy.\n")
    L.append("Configurations: " + "; ".join(f"**{c}**: {CONFIG_DOC[c]}" for c in configs) + ".\n")

    L.append("## Export\n")
    L.append("| config | tool | wall s | peak RSS MB (time -v) | peak RSS / weights | (peak − import) / weights "
             "| peak anon RSS MB (sampled) | model.nnef.tgz MB | export dir MB | result |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        run = r["run"]
        ok = r["tgz"] is not None
        base = baseline[r["tool"]].maxrss
        L.append(f"| {r['config']} | {r['tool']} | {run.wall:.1f} | {run.maxrss / MB:.0f} | "
                 f"{run.maxrss / r['weights']:.2f}x | {(run.maxrss - base) / r['weights']:.2f}x | "
                 f"{run.tree_anon / MB:.0f} | "
                 f"{fmt(r['tgz'] / MB if ok else None)} | {fmt(r['total'] / MB if ok else None)} | "
                 f"{'ok' if ok else f'FAILED (rc {run.rc})'} |")
    L.append("")
    L.append("Peak RSS / weights divides by the checkpoint's tensor bytes (safetensors data) of the source folder. "
             "RSS counts pages of mmapped files too (the safetensors being read, the archive being written), "
             "which the kernel can drop; the sampled anonymous RSS is the memory the process really owns. "
             "Import = peak RSS of a process that only imports the exporter's modules ("
             + ", ".join(f"{t} {b.maxrss / MB:.0f} MB" for t, b in baseline.items()) + ").\n")

    phase_rows = [r for r in rows if r["tool"] == "t2ir" and r["phases"]]
    if phase_rows:
        keys = []
        for r in phase_rows:
            keys += [k for k in r["phases"] if k not in keys]
        L.append("### t2ir time per phase (s, from OUT/manifest.json)\n")
        L.append("| config | " + " | ".join(keys) + " | sum | process wall |")
        L.append("|---|" + "---:|" * (len(keys) + 2))
        for r in phase_rows:
            ph = r["phases"]
            L.append(f"| {r['config']} | " + " | ".join(fmt(ph.get(k), ".2f") for k in keys)
                     + f" | {sum(ph.values()):.2f} | {r['run'].wall:.1f} |")
        L.append("")
        L.append("The gap between the sum and the process wall time is Python start-up and imports "
                 "(torch, transformers).\n")

    if not args.skip_tract:
        L.append("## tract run time (tract Python package)\n")
        L.append(f"Per configuration one process loads both tools' model.nnef.tgz, then alternates them run by run. "
                 f"Prefill: {PREFILL} random token ids from P=0 (empty cache); decode: 1 token with P={PREFILL} "
                 f"(random cache); same ids and cache values for both tools. Median (and min) of {args.reps} prefill "
                 f"/ {args.reps * 2} decode runs after one warm-up. Load = nnef load + into_runnable (includes "
                 "gunzipping the archive); tract peak RSS = peak RSS (time -v) of a separate process that loads the model alone and runs one prefill and one decode.\n")
        L.append("| config | tool | load s | prefill 64 ms median (min) | decode 1@64 ms median (min) | tract peak RSS MB | input dtypes |")
        L.append("|---|---|---:|---:|---:|---:|---|")
        for r in rows:
            t = r.get("tract")
            if t:
                dts = sorted({v.rsplit(",", 1)[1] for v in t["inputs"].values()})
                L.append(f"| {r['config']} | {r['tool']} | {t['load_s']:.2f} | {t['prefill_s'] * 1e3:.0f} "
                         f"({t['prefill_min_s'] * 1e3:.0f}) | {t['decode_s'] * 1e3:.1f} ({t['decode_min_s'] * 1e3:.1f}) | "
                         f"{fmt(t['maxrss'] / MB if t.get('maxrss') else None, '.0f')} | {'/'.join(dts)} |")
            elif r["tgz"] is not None:
                L.append(f"| {r['config']} | {r['tool']} | FAILED | | | | |")
        L.append("")
        if agree:
            L.append("Cross-check, last-position prefill logits, t2ir vs t2n (same weights and ids):\n")
            L.append("| config | max abs diff | max abs logit | same argmax |")
            L.append("|---|---:|---:|---|")
            for c, (d, mx, same) in agree.items():
                L.append(f"| {c} | {d:.3g} | {mx:.3g} | {same} |")
            L.append("")

    fails = [r for r in rows if r["tgz"] is None] + [r for r in rows if r.get("tract_error")]
    if fails or probe or notes:
        L.append("## Failures and workarounds\n")
        for n in notes:
            L.append(f"- {n}")
        for r in rows:
            if r["tgz"] is None:
                L.append(f"- {r['tool']} {r['config']} export failed (rc {r['run'].rc}); `{shlex.join(r['run'].cmd)}`:\n")
                L.append("```\n" + r["run"].tail(15) + "\n```")
            if r.get("tract_error"):
                L.append(f"- tract could not run {r['tool']} {r['config']}:\n")
                L.append("```\n" + r["tract_error"] + "\n```")
        if probe:
            run = probe["run"]
            verdict = "succeeded" if run.rc == 0 else f"fails (rc {run.rc})"
            L.append(f"- torch_to_nnef with transformers {probe['transformers']} (the version t2ir pins) {verdict} "
                     f"on a tiny Llama: `PYTHONPATH={probe['env']['PYTHONPATH']} {shlex.join(run.cmd)}`"
                     + (":\n" if run.rc else ".\n"))
            if run.rc:
                L.append("```\n" + run.tail(4) + "\n```")
                L.append("  transformers 5.24.0 passes `kwargs=` to `DynamicLayer.update`, which torch_to_nnef_llm "
                         "0.24.12 replaces with `_force_dyn_layer_update_ge4_56(self, key_states, value_states, "
                         "cache_kwargs=None)`. Workaround used for the numbers above: transformers 5.23.0 in the "
                         "torch_to_nnef venv only.\n")
        L.append("- torch_to_nnef downloads a tract CLI binary from GitHub at start (`TractNNEF.latest()` -> "
                 "`TractBinaryDownloader`), even with `-nv`; offline this ends in `urllib.error.URLError: <urlopen "
                 "error [Errno -2] Name or service not known>`. Workaround: `--tract-specific-path` to a stand-in "
                 "script that answers `--version` with the tract package's version (with `-nv` nothing else is "
                 "asked of it). So t2n ran without its tract check, like t2ir without `--check-io`; both still "
                 "write their reference test cases (npz).\n")

    L.append("## Commands\n")
    L.append("```")
    L.append(f"{shlex.join([sys.executable, *sys.argv])}")
    for b in baseline.values():
        L.append(f"/usr/bin/time -v {shlex.join(b.cmd)}")
    for r in rows:
        L.append(f"/usr/bin/time -v {shlex.join(r['run'].cmd)}")
    for c in args.tract_cmds:
        L.append(shlex.join(c))
    L.append("```")
    if shim:
        L.append(f"\n`{shim}`:\n\n```sh\n{shim.read_text()}```")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
