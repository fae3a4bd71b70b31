"""Every causal LM in transformers' auto mapping, made tiny, exported with `export-llm` and checked in tract.

    nice -n 10 python bench/sweep_architectures.py [--only llama,mixtral] [--work /tmp/t2ir-sweep] [--fresh]

For each model type: the config class's defaults with small sizes (tests/architectures.py), a random
model saved by save_pretrained in transformers' default (original) checkpoint format, then three exports:
default attention in f32, eager attention in f32 (when the default is not eager already), default
attention in f16 with f32 normalisation and attention. Each runs in tract against transformers' own
cached loop: a prefill from an empty cache, 3 decode steps feeding tract's caches back, a chunk of 4
tokens with past. f32 passes at 1e-4, f16 at 1e-2 (max abs difference of logits and caches).

Model types run in worker processes (a crash or a hang is that type's result, and the next type
gets a fresh worker); results are kept in WORK/results.jsonl so an interrupted sweep resumes.
The table goes to docs/architectures.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

VARIANTS = (("auto", "f32"), ("eager", "f32"), ("auto", "f16"))


def classify(model_type: str) -> tuple[str, str]:
    """(category, reason): "decoder" is swept; anything else is listed with why it is not."""
    import torch
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from architectures import MAX_PARAMETERS, causal_lm_types, tiny_config

    try:
        default = CONFIG_MAPPING[model_type]()
    except Exception as e:
        return "not buildable", f"default config fails: {_line(e)}"
    parts = sorted(getattr(default, "sub_configs", None) or {})
    swept = getattr(default.get_text_config(decoder=True), "model_type", model_type)
    if swept != model_type or any(p.startswith(("vision", "audio", "image", "speech", "video")) for p in parts):
        return "multimodal", f"composite config ({', '.join(parts)})" + (
            f"; its text decoder is swept as {swept}" if swept != model_type and swept in causal_lm_types() else "")
    try:
        config = tiny_config(model_type)
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            size = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    except Exception as e:
        return "not buildable", f"tiny config does not build: {_line(e)}"
    if size > MAX_PARAMETERS:
        return "not buildable", f"the shrunk config still has {size / 1e6:.0f} M parameters (sizes it does not shrink)"
    recurrent = recurrent_layer_kinds(config)  # conv-only kinds export; recurrent ones end as state-space
    return "decoder", (f"transformers' cache layer kinds: {', '.join(recurrent)}" if recurrent else "")


def recurrent_layer_kinds(config) -> list[str]:
    """Cache layer kinds transformers builds for the model that hold a recurrent state."""
    from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING, LinearAttentionLayer, get_layer_types_and_kwargs

    try:
        kinds, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    except Exception:
        return []
    return sorted({k for k in kinds if issubclass(DYNAMIC_LAYER_TYPE_MAPPING.get(k, object), LinearAttentionLayer)})


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def run_one(model_type: str, work: Path) -> dict:
    """Classify, save a checkpoint, export and check every variant (in this process)."""
    import torch

    from architectures import (TOLERANCE, check_in_tract, export, quiet, reference_model, save_checkpoint,
                               tiny_config)
    from t2ir.frontend.cache_layout import RecurrentStateError

    quiet()
    torch.set_num_threads(1)
    row = {"model_type": model_type}
    category, reason = classify(model_type)
    row.update(category=category, reason=reason, variants={})
    if category in ("multimodal", "not buildable"):
        return row
    folder = work / model_type / "checkpoint"
    try:
        save_checkpoint(tiny_config(model_type), folder)
    except Exception as e:
        row.update(category="not buildable", reason=f"save_pretrained fails: {_line(e)}")
        return row
    default_attn = reference_model(folder, "auto", "f32").config._attn_implementation
    row["default_attn"] = default_attn
    chosen = os.environ.get("T2IR_SWEEP_VARIANTS")
    for attn, dtype in VARIANTS:
        if chosen and f"{attn}-{dtype}" not in chosen.split(","):
            continue
        if attn == "eager" and default_attn == "eager":
            continue
        first = row["variants"].get("auto-f32", {})
        if dtype == "f16" and "max_diff" not in first:  # the f32 export failed: f16 fails the same way
            continue
        name = f"{attn}-{dtype}"
        start = time.time()
        result = {"passed": False}
        try:
            summary = export(folder, work / model_type / name, attn=attn, dtype=dtype)
            check = check_in_tract(summary.out_dir / "model" / "model.nnef.tgz", reference_model(folder, attn, dtype),
                                   dtype)
            result.update(logits_diff=check.logits_diff, cache_diff=check.cache_diff, max_diff=check.max_diff,
                          passed=check.max_diff <= TOLERANCE[dtype])
            if not result["passed"]:
                result["error"] = f"max |diff| {check.max_diff:.3g} > {TOLERANCE[dtype]:g}"
        except RecurrentStateError as e:
            row["category"] = "state-space/hybrid"
            result["error"] = _line(e)
        except Exception as e:
            result["error"] = _line(e)
            result["trace"] = traceback.format_exc()[-3000:]
        result["seconds"] = round(time.time() - start, 1)
        row["variants"][name] = result
        if row["category"] == "state-space/hybrid":
            break
    return row


class Worker:
    """A child process that runs model types sent on its stdin (imports are paid once per worker,
    not per model type); a crash or a hang costs that model type only."""

    PER_WORKER = 15  # fresh process after this many model types (bounded memory)

    def __init__(self, work: Path, script: str = __file__):
        cmd = [sys.executable, script, "--serve", "--work", str(work)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=_env())
        self.served = 0

    def run(self, model_type: str, timeout: int) -> dict:
        import selectors

        self.proc.stdin.write(model_type + "\n")
        self.proc.stdin.flush()
        self.served += 1
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            deadline = time.time() + timeout
            while (left := deadline - time.time()) > 0 and sel.select(left):
                line = self.proc.stdout.readline()
                if not line:
                    return _crashed(model_type, f"worker exited with code {self.proc.wait()}")
                if line.startswith("{"):
                    return json.loads(line)
        self.close()
        return _crashed(model_type, f"timeout {timeout}s")

    @property
    def usable(self) -> bool:
        return self.proc.poll() is None and self.served < self.PER_WORKER

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _crashed(model_type: str, why: str) -> dict:
    return {"model_type": model_type, "category": "decoder", "reason": "", "variants": {}, "crash": why}


def serve(work: Path, run=None) -> None:
    """Worker loop: one model type per stdin line, one JSON result per stdout line."""
    for line in sys.stdin:
        print(json.dumps((run or run_one)(line.strip(), work)), flush=True)


def sweep(types: list[str], work: Path, timeout: int, script: str = __file__, summarize=None) -> None:
    """Each model type in a worker process, results appended to WORK/results.jsonl (a type
    already there is skipped, so an interrupted sweep resumes)."""
    results = work / "results.jsonl"
    done = {json.loads(l)["model_type"] for l in results.read_text().splitlines()} if results.exists() else set()
    worker = None
    for i, mt in enumerate(types, 1):
        if mt in done:
            continue
        if worker is None or not worker.usable:
            if worker is not None:
                worker.close()
            worker = Worker(work, script)
        start = time.time()
        row = worker.run(mt, timeout)
        row["seconds"] = round(time.time() - start, 1)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{i}/{len(types)}] {mt}: {(summarize or summary_line)(row)} ({row['seconds']}s)", flush=True)
    if worker is not None:
        worker.close()


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def verdict(row: dict) -> str:
    """pass / fail / skip (not swept) / state-space for a result row of this sweep or of
    sweep_encoders.py and sweep_vision_language.py (whose swept rows are "encoder", "vision-language")."""
    if row.get("crash"):
        return "fail"
    if row["category"] == "state-space/hybrid":
        return "state-space"
    if row["category"] not in ("decoder", "encoder", "vision-language"):
        return "skip" if row["category"] in ("multimodal", "not buildable") else "fail"
    return "pass" if row["variants"] and all(v["passed"] for v in row["variants"].values()) else "fail"


def summary_line(row: dict) -> str:
    if row.get("crash"):
        return f"fail ({row['crash'][:200]})"
    if row["category"] != "decoder" and not row["variants"]:
        return f"{row['category']}: {row['reason'][:200]}"
    parts = []
    for name, v in row["variants"].items():
        parts.append(f"{name} {'ok' if v['passed'] else 'FAIL'} {v.get('max_diff', float('nan')):.2g}"
                     + ("" if v["passed"] else f" [{v.get('error', '')[:160]}]"))
    return f"{verdict(row)}: " + "; ".join(parts)


def write_table(work: Path, out: Path) -> None:
    import transformers

    from t2ir.frontend.recurrent import SCANS

    rows = [json.loads(l) for l in (work / "results.jsonl").read_text().splitlines()]
    rows.sort(key=lambda r: r["model_type"])
    ssm = [r for r in rows if _state_space(r)]
    swept = [r for r in rows if (r["category"] in ("decoder",) or r.get("crash")) and r not in ssm]
    skipped = [r for r in rows if r["category"] in ("multimodal", "not buildable")]
    passed = [r for r in swept if verdict(r) == "pass"]
    other_sizes = os.environ.get("T2IR_TINY_SIZES", "small") != "small"
    lines = [
        "# Architectures, second set of sizes" if other_sizes else "# Architectures",
        "",
        *(["The sweep of [architectures.md](architectures.md) with `--sizes other --variants auto-f32`: the "
           "sizes of `OTHER` in tests/architectures.py, default attention in f32 only.", ""] if other_sizes else []),
        "Generated by `bench/sweep_architectures.py` with transformers "
        f"{transformers.__version__}: every model type in transformers' causal-LM auto mapping, built from its "
        "config class with small sizes and random weights, saved with `save_pretrained` (transformers' default, "
        "original checkpoint format), exported with `t2ir export-llm` and run in tract against transformers' "
        "own cached loop, given the positions its generate passes: a prefill from an empty cache, 3 decode steps feeding tract's caches back, then a chunk "
        "of 4 tokens on top of the past (which transformers runs one token at a time for a model with recurrent "
        "states: its Mamba sequence path restarts from a zero state; a model without a KV cache, such as openai-gpt or xlm, is exported as a "
        "graph of the whole sequence and checked on the whole sequence at each step). `auto` is transformers' default attention (sdpa where the class "
        "supports it, eager otherwise); `eager` is checked too when the default is sdpa. f32 passes at a max "
        "absolute difference of 1e-4 (logits and caches), f16 (with f32 normalisation and attention) at 1e-2.",
        "",
        "Regenerate with `python bench/sweep_architectures.py --fresh` (an hour or more on 2 cores; "
        "`--only llama,mixtral --table /tmp/t.md` for a few). The tiny configs follow each config class's "
        "defaults (`tests/architectures.py`), so a model whose default config has no MoE or no sliding layers is "
        "checked without them. The same sweep with a second set of sizes (`--sizes other --variants auto-f32`: "
        "a grouped-query ratio of 3, an odd vocabulary, more experts picked, a sliding window inside the prompt, "
        "3 layers) is summarised in [architectures-other-sizes.md](architectures-other-sizes.md). Vision-language "
        "models (LLaVA, PaliGemma, ...) export their text decoder: [vision-language.md](vision-language.md).",
        "",
        f"**{len(passed)} of {len(swept)} buildable text decoders pass** "
        f"({100 * len(passed) / max(len(swept), 1):.0f} %); {len(ssm)} state-space / hybrid models are listed "
        f"apart; {len(skipped)} model types are not swept (multimodal composites, configs that do not build).",
        "",
        "Failures by cause:",
        "",
        *(f"- {cause}: {', '.join(types)}" for cause, types in _causes(swept)),
        "",
        "## Text decoders",
        "",
        "| architecture | result | attention | max diff f32 (auto / eager) | max diff f16 | reason |",
        "|---|---|---|---|---|---|",
    ]
    for r in swept:
        lines.append(_table_row(r))
    lines += ["", "## State-space and hybrid models", "",
              "Their layers keep a recurrent state besides keys and values (transformers' cache layer kinds "
              "say which layers). t2ir carries recurrent states as graph inputs and outputs where the model's "
              "recurrence runs through a transformers kernel t2ir replaces by a scan from the carried state "
              f"({', '.join(sorted(SCANS))}: those models pass and are text decoders above, as are the "
              "convolution-state models). The models below compute their recurrence in their own code, keep "
              "their state outside a transformers cache, or fail before their state is reached.", "",
              "| architecture | cache layer kinds | export error |", "|---|---|---|"]
    for r in ssm:
        err = next((v.get("error", "") for v in r["variants"].values() if not v["passed"]), "")
        kinds = r["reason"].split(": ", 1)[-1] if r["reason"] else "—"
        lines.append(f"| {r['model_type']} | {_cell(kinds)} | {_cell(err)} |")
    lines += ["", "## Not swept", "", "| architecture | why |", "|---|---|"]
    for r in skipped:
        lines.append(f"| {r['model_type']} | {_cell(r['reason'])} |")
    out.write_text("\n".join(lines) + "\n")


def checked(check, tolerance: float) -> dict:
    """One export-and-check of a one-variant sweep: `check()` returns the max difference."""
    result = {"passed": False}
    start = time.time()
    try:
        diff = check()
        result.update(max_diff=diff, passed=diff <= tolerance)
        if not result["passed"]:
            result["error"] = f"max |diff| {diff:.3g} > {tolerance:g}"
    except Exception as e:
        result["error"] = _line(e)
        result["trace"] = traceback.format_exc()[-3000:]
    result["seconds"] = round(time.time() - start, 1)
    return result


def single_variant_summary(row: dict) -> str:
    v = row["variants"].get("f32", {})
    why = row.get("crash") or v.get("error") or row.get("reason", "")
    return f"{verdict(row)} {v.get('max_diff', float('nan')):.2g} {why[:200]}"


def single_variant_table(work: Path, out: Path, *, title: str, variant: str, noun: str, description: str,
                         regenerate: str) -> None:
    """The table of a sweep with one export per model type (sweep_encoders.py,
    sweep_vision_language.py): what passed, the max difference, the reason, then the types not swept."""
    import transformers

    rows = sorted((json.loads(l) for l in (work / "results.jsonl").read_text().splitlines()),
                  key=lambda r: r["model_type"])
    swept = [r for r in rows if verdict(r) != "skip"]
    skipped = [r for r in rows if verdict(r) == "skip"]
    passed = [r for r in swept if verdict(r) == "pass"]
    lines = [
        f"# {title}", "",
        f"Generated by `bench/{Path(sys.argv[0]).name}` with transformers {transformers.__version__}: {description}",
        "", f"Regenerate with {regenerate}.", "",
        f"**{len(passed)} of {len(swept)} {noun} pass** ({100 * len(passed) / max(len(swept), 1):.0f} %); "
        f"{len(skipped)} model types do not build or run from their config class's defaults.", "",
        "| architecture | result | max diff | reason |", "|---|---|---|---|",
    ]
    for r in swept:
        v = r["variants"].get(variant, {})
        diff = f"{v['max_diff']:.1e}" if "max_diff" in v else "—"
        lines.append(f"| {r['model_type']} | {verdict(r)} | {diff} | {_cell(r.get('crash') or v.get('error', ''))} |")
    lines += ["", "## Not swept", "", "| architecture | why |", "|---|---|"]
    lines += [f"| {r['model_type']} | {_cell(r['reason'])} |" for r in skipped]
    out.write_text("\n".join(lines) + "\n")


def _state_space(row: dict) -> bool:
    """Listed apart: refused for a recurrent state, or failing for another reason with
    linear-attention cache layers (their states would stop them next); one that passes with such
    layers (convolution states only) counts as a text decoder."""
    if row["category"] == "state-space/hybrid":
        return True
    kinds = row["category"] == "decoder" and row.get("reason", "").startswith("transformers' cache layer kinds")
    return kinds and verdict(row) != "pass"


def _causes(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """Failed model types grouped by what stopped them (the missing ops, the error kind)."""
    import re

    groups: dict[str, list[str]] = {}
    for r in rows:
        if verdict(r) == "pass":
            continue
        error = r.get("crash") or next((v.get("error", "") for v in r["variants"].values() if not v["passed"]), "")
        ops = sorted(set(re.findall(r"- (aten\.[\w.]+): no translation", error)))
        if ops:
            cause = f"no translation for {', '.join(ops)}"
        elif error.startswith("max |diff|"):
            cause = "numbers differ"
        else:
            cause = error.split(":", 1)[0] or "no result"
        groups.setdefault(cause, []).append(r["model_type"])
    return sorted(groups.items(), key=lambda kv: -len(kv[1]))


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:240]


def _diff(v: dict | None) -> str:
    if not v:
        return "—"
    return f"{v['max_diff']:.1e}" if "max_diff" in v else "error"


def _table_row(r: dict) -> str:
    v = r["variants"]
    reason = r.get("crash") or next((x.get("error", "") for x in v.values() if not x["passed"]), "")
    f32 = f"{_diff(v.get('auto-f32'))} / {_diff(v.get('eager-f32')) if 'eager-f32' in v else 'same'}"
    return (f"| {r['model_type']} | {verdict(r)} | {r.get('default_attn', '?')} | {f32} | {_diff(v.get('auto-f16'))} "
            f"| {_cell(reason)} |")


class _ToEnvironment(argparse.Action):
    """An option kept in the environment: the worker processes inherit it, and the code that
    reads it (tiny_config, run_one) needs no argument threaded through."""

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[self.dest] = values
        setattr(namespace, self.dest, values)


def sweep_parser(doc: str, work: str, timeout: int, table: str) -> argparse.ArgumentParser:
    """The options a sweep script takes (--only, --work, --fresh, --timeout, --table, --serve)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated model types")
    ap.add_argument("--work", type=Path, default=Path(work))
    ap.add_argument("--fresh", action="store_true", help="forget earlier results")
    ap.add_argument("--timeout", type=int, default=timeout, help="seconds per model type")
    ap.add_argument("--table", type=Path, help=f"where the table goes (default {table}, not with --only)")
    ap.add_argument("--sizes", choices=("small", "other"), action=_ToEnvironment, dest="T2IR_TINY_SIZES",
                    help="tiny-config sizes (tests/architectures.py SIZE_PROFILES; default small)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return ap


def main() -> None:
    ap = sweep_parser(__doc__, "/tmp/t2ir-sweep", 900, "docs/architectures.md")
    ap.add_argument("--one", help="run one model type in this process and print its result")
    ap.add_argument("--variants", action=_ToEnvironment, dest="T2IR_SWEEP_VARIANTS",
                    help=f"comma-separated, of {', '.join(f'{a}-{d}' for a, d in VARIANTS)} (default all)")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.work)), flush=True)
        return
    if args.serve:
        serve(args.work)
        return
    from architectures import causal_lm_types

    drive(args, sorted(causal_lm_types()), write_table, ROOT / "docs" / "architectures.md")


def single_variant_main(doc: str, script: str, work: str, timeout: int, table: str, types, run, write) -> None:
    """The command line of a one-variant sweep (sweep_encoders.py, sweep_vision_language.py,
    sweep_tasks.py): `types()` lists what to sweep, `run(type, work)` checks one in a worker,
    `write(work, out)` writes the table (default `table`, relative to the repository)."""
    args = sweep_parser(doc, work, timeout, table).parse_args()
    if args.serve:
        serve(args.work, run)
        return
    drive(args, types(), write, ROOT / table, script, single_variant_summary)


def drive(args: argparse.Namespace, types: list[str], write, default_table: Path, script: str = __file__,
          summarize=None) -> None:
    """A sweep's command line: the types (those of --only) into WORK/results.jsonl (forgotten
    first with --fresh), then the table (not for --only runs, unless --table says where)."""
    args.work.mkdir(parents=True, exist_ok=True)
    if args.fresh and (args.work / "results.jsonl").exists():
        (args.work / "results.jsonl").unlink()
    if args.only:
        types = [t for t in types if t in args.only.split(",")]
    sweep(types, args.work, args.timeout, script, summarize)
    if args.table or not args.only:
        table = args.table or default_table
        write(args.work, table)
        print(f"table: {table}")


if __name__ == "__main__":
    main()
