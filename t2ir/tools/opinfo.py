"""Conformance against torch's OpInfo database (the sample inputs torch's own tests and
torch.onnx use): every float32 sample of every op is exported alone, run in tract and compared
with PyTorch eager.

    python -m t2ir.tools.opinfo --out bench/results/opinfo.json [--ops add,nn.functional.conv2d] [--jobs 2]

Each sample ends as one of:
- passed: tract's outputs match PyTorch's (tract's "approximate" level; integers and bools
  exactly; the same shapes and dtypes);
- failed: wrong numbers or shapes, tract could not load or run the export, or t2ir broke with
  something other than its own error (a bug to fix);
- refused: t2ir declined with an error of its own (`T2IRError`: no translation, a data-
  dependent shape, an unsupported dtype), whose first line is kept as the reason;
- skipped: nothing to compare (the op is random, eager PyTorch fails, or it returns no tensor).

tract may abort the whole process on a graph it cannot run, so the samples run in a worker
process that reports each sample before starting it; when the worker dies, the sample it was
on is recorded as failed and a new worker continues after it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

STATUSES = ("passed", "failed", "refused", "skipped")
SAMPLE_SECONDS = 90  # one sample's export + run; past it the sample fails as a timeout


@dataclass
class Outcome:
    status: str
    reason: str = ""
    aten: list[str] = field(default_factory=list)  # the aten ops the sample traced to


@dataclass
class OpResult:
    """Counts per status for one OpInfo entry, the first reason of each kind, and the aten ops
    its samples used."""

    passed: int = 0
    failed: int = 0
    refused: int = 0
    skipped: int = 0
    reasons: dict[str, str] = field(default_factory=dict)
    aten: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        if outcome.reason and outcome.status in ("failed", "refused"):
            self.reasons.setdefault(outcome.status, outcome.reason)
        self.aten = sorted(set(self.aten) | set(outcome.aten))

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.refused + self.skipped


def op_key(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def float32_ops(names: Optional[set[str]] = None) -> list:
    """The OpInfo entries that run on float32 on the CPU (optionally only those named)."""
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    ops = [op for op in op_db if torch.float32 in op.supported_dtypes("cpu")]
    return [op for op in ops if names is None or op_key(op) in names or op.name in names]


def samples(op, limit: int) -> list:
    import torch

    out = []
    for s in op.sample_inputs("cpu", torch.float32, requires_grad=False):
        out.append(s)
        if len(out) >= limit:
            break
    return out


class SampleModule:
    """Builds the module that calls `op` on one sample: its tensors become the module's inputs,
    everything else (shapes, flags, scalars) stays a constant of the call."""

    def __init__(self, op, sample):
        import torch

        tree = (sample.input, tuple(sample.args), dict(sample.kwargs))
        leaves, self.spec = torch.utils._pytree.tree_flatten(tree)
        self.is_tensor = [isinstance(x, torch.Tensor) for x in leaves]
        self.consts = [None if t else x for t, x in zip(self.is_tensor, leaves)]
        self.tensors = tuple(x for t, x in zip(self.is_tensor, leaves) if t)
        self.fn = op.op
        self.module = self._module()

    def _module(self):
        import torch

        owner = self

        class CallOp(torch.nn.Module):
            def forward(self, *tensors):
                it = iter(tensors)
                leaves = [next(it) if t else c for t, c in zip(owner.is_tensor, owner.consts)]
                inp, args, kwargs = torch.utils._pytree.tree_unflatten(leaves, owner.spec)
                return owner.fn(inp, *args, **kwargs)

        return CallOp().eval()


def incomparable(op) -> Optional[str]:
    """torch's own reason when its OpInfo tests skip comparing this op's outputs ("Expected:
    new_empty is not comparable": uninitialised memory), read from the entry's skip decorators."""
    for info in [*op.skips, *op.decorators]:
        for decorator in getattr(info, "decorators", [info]):
            for cell in getattr(decorator, "__closure__", None) or ():
                try:
                    reason = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if isinstance(reason, str) and f"{op.name} is not comparable" in reason:
                    return reason
    return None


def _tensors(out) -> list:
    import torch

    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _same(a: list, b: list) -> bool:
    import torch

    return len(a) == len(b) and all(
        x.shape == y.shape and (torch.equal(x, y) or (x.is_floating_point() and torch.allclose(x, y, equal_nan=True)))
        for x, y in zip(a, b))


def _first_line(e: BaseException) -> str:
    """The error's headline and its first listed problem; of tract's chained messages
    ("... / 5: Deserializing op `conv' / 6: reason"), the last links."""
    text = str(e).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line[2:] for line in lines[1:] if line.startswith("- ")), "")
    head = lines[0] if lines else type(e).__name__
    text = head + (" " + detail if detail else "")
    if " / " in text:
        links = text.split(" / ")
        text = links[0][:60] + " ... " + " / ".join(links[-2:])
    return text[:300]


def run_sample(op, sample, workdir: Path) -> Outcome:
    """Export one sample, run it in tract, compare with eager."""
    import numpy as np
    import torch

    from t2ir.api import export
    from t2ir.errors import T2IRError, UnsupportedOpsError
    from t2ir.checkio import compare
    from t2ir.tract_run import load_runnable, run_tract

    if (why := incomparable(op)) is not None:
        return Outcome("skipped", f"torch's OpInfo: {why}")
    try:
        call = SampleModule(op, sample)
        with torch.no_grad():
            want = _tensors(call.module(*call.tensors))
            again = _tensors(call.module(*call.tensors))
        if not want:
            return Outcome("skipped", "returns no tensor")
        if not _same(want, again):
            return Outcome("skipped", "random (two eager runs differ)")
    except Exception as e:
        return Outcome("skipped", f"eager PyTorch fails: {_first_line(e)}")
    try:
        result = export(call.module, call.tensors, workdir / "m.nnef.tgz", overwrite=True)
    except UnsupportedOpsError as e:
        return Outcome("refused", "no translation: " + ", ".join(sorted({p.op for p in e.problems})))
    except T2IRError as e:
        return Outcome("refused", _first_line(e))
    except Exception as e:
        return Outcome("failed", f"t2ir raised {type(e).__name__}: {_first_line(e)}")
    aten = list(result.source_ops)
    try:
        got = run_tract(load_runnable(result.path), [t.numpy() for t in call.tensors])
    except Exception as e:
        return Outcome("failed", f"tract: {_first_line(e)}", aten)
    if len(got) != len(want):
        return Outcome("failed", f"{len(got)} outputs instead of {len(want)}", aten)
    for i, (g, w) in enumerate(zip(got, want)):
        # bf16 is exported as f16 (tract has no bf16): the reference in f16 too
        w = w.detach().float().numpy().astype(np.float16) if w.dtype == torch.bfloat16 else w.detach().numpy()
        if g.shape != w.shape or g.dtype != w.dtype:
            return Outcome("failed", f"output {i}: tract gave {g.dtype}{list(g.shape)}, torch {w.dtype}{list(w.shape)}",
                           aten)
        if not np.issubdtype(w.dtype, np.floating):
            if not np.array_equal(g, w):
                return Outcome("failed", f"output {i}: {int((g != w).sum())} of {w.size} values differ", aten)
            continue
        check = compare(f"output {i}", g, w, "approximate")
        if not check.passed:
            special = not all(np.isfinite(t.numpy()).all() for t in call.tensors if t.dtype.is_floating_point)
            return Outcome("failed", f"output {i}: max |diff| {check.max_abs_diff:.3g}, {check.failed} of "
                                     f"{check.total} values outside tract's approximate level"
                                     + (" (the inputs hold NaN or inf)" if special else ""), aten)
    return Outcome("passed", "", aten)


# ---- the worker protocol ------------------------------------------------------------------------

def _work(keys: list[str], limit: int, start: tuple[str, int] | None, log: Path) -> None:
    """Run the samples of `keys` (from `start` on), appending one JSON line per event to `log`."""
    import torch

    torch.set_num_threads(1)
    ops = {op_key(op): op for op in float32_ops(set(keys))}
    workdir = Path(tempfile.mkdtemp(prefix="t2ir-opinfo-"))
    started = start is None
    with open(log, "a") as f:
        for key in keys:
            op = ops.get(key)
            if op is None:
                continue
            try:
                todo = samples(op, limit)
            except Exception as e:
                f.write(json.dumps({"op": key, "index": -1, "outcome": asdict(Outcome(
                    "skipped", f"sample inputs unavailable: {_first_line(e)}"))}) + "\n")
                f.flush()
                continue
            for i, sample in enumerate(todo):
                if not started:
                    if (key, i) != start:
                        continue
                    started = True
                    continue  # the sample that crashed the previous worker
                f.write(json.dumps({"op": key, "index": i, "start": True}) + "\n")
                f.flush()
                outcome = _with_timeout(lambda: run_sample(op, sample, workdir))
                f.write(json.dumps({"op": key, "index": i, "outcome": asdict(outcome)}) + "\n")
                f.flush()


def _with_timeout(fn) -> Outcome:
    from t2ir.tools.time_limit import Expired, time_limit

    try:
        with time_limit(SAMPLE_SECONDS):
            return fn()
    except Expired as e:
        return Outcome("failed", str(e))


def _events(log: Path) -> Iterator[dict]:
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def run_chunk(keys: list[str], limit: int, log: Path, progress=print) -> None:
    """Run the samples of `keys` in worker processes, restarting after a crash."""
    start: tuple[str, int] | None = None
    while True:
        args = [sys.executable, "-m", "t2ir.tools.opinfo", "--worker", "--limit", str(limit), "--log", str(log),
                "--ops", ",".join(keys)]
        if start is not None:
            args += ["--start", f"{start[0]}:{start[1]}"]
        proc = subprocess.run(args, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        events = list(_events(log))
        last = events[-1] if events else None
        if proc.returncode == 0 or last is None or "start" not in last:
            return
        crashed = (last["op"], last["index"])
        progress(f"worker died (exit {proc.returncode}) on {crashed[0]} sample {crashed[1]}; continuing")
        with open(log, "a") as f:
            f.write(json.dumps({"op": crashed[0], "index": crashed[1], "outcome": asdict(Outcome(
                "failed", f"crashed the process (exit {proc.returncode})"))}) + "\n")
        start = crashed


def run_all(keys: list[str], limit: int, logs: Path, jobs: int = 1, progress=print) -> dict[str, OpResult]:
    """Every sample of `keys`, in `jobs` parallel chains of workers (one event log each in
    the folder `logs`); returns per-op results."""
    from concurrent.futures import ThreadPoolExecutor

    logs.mkdir(parents=True, exist_ok=True)
    chunks = [keys[i::jobs] for i in range(jobs)]
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda i: run_chunk(chunks[i], limit, logs / f"events-{i}.jsonl", progress), range(jobs)))
    results: dict[str, OpResult] = {k: OpResult() for k in keys}
    for i in range(jobs):
        for e in _events(logs / f"events-{i}.jsonl"):
            if "outcome" in e:
                results.setdefault(e["op"], OpResult()).add(Outcome(**e["outcome"]))
    return results


def summary(results: dict[str, OpResult]) -> dict:
    """Op counts: fully passing, partly passing, refused only, failing (a claimed op with a
    failed sample)."""
    claimed = {k: r for k, r in results.items() if r.passed}
    return {
        "opinfo_ops": len(results),
        "supported": sum(1 for r in results.values() if r.passed and not r.failed),
        "all_samples_pass": sum(1 for r in results.values() if r.passed and not (r.failed or r.refused)),
        "with_failures": sum(1 for r in claimed.values() if r.failed),
        "refused_only": sum(1 for r in results.values() if r.refused and not (r.passed or r.failed)),
        "failed_only": sum(1 for r in results.values() if r.failed and not r.passed),
        "samples": {s: sum(getattr(r, s) for r in results.values()) for s in STATUSES},
    }


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/opinfo.json"))
    p.add_argument("--ops", default="", help="comma-separated OpInfo names (default: all float32 ops)")
    p.add_argument("--limit", type=int, default=8, help="samples per op (the first ones)")
    p.add_argument("--log", type=Path, help="folder of the event logs (JSON lines); a worker's own log file")
    p.add_argument("--jobs", type=int, default=1, help="workers running side by side")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    names = [n for n in a.ops.split(",") if n]
    if a.worker:
        start = None
        if a.start:
            key, index = a.start.rsplit(":", 1)
            start = (key, int(index))
        _work(names, a.limit, start, a.log)
        return
    import torch
    import tract

    keys = [op_key(op) for op in float32_ops(set(names) if names else None)]
    logs = a.log or Path(tempfile.mkdtemp(prefix="t2ir-opinfo-"))
    began = time.time()
    results = run_all(keys, a.limit, logs, a.jobs)
    report = {"torch": torch.__version__, "tract": getattr(tract, "__version__", "0.23.9"), "samples_per_op": a.limit,
              "seconds": round(time.time() - began), "summary": summary(results),
              "ops": {k: asdict(r) for k, r in sorted(results.items())}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
