"""Every masked-LM encoder in transformers' auto mapping, made tiny, exported with `t2ir.export` and
checked in tract.

    nice -n 10 python bench/sweep_encoders.py [--only bert,roberta] [--work /tmp/t2ir-encoders] [--fresh]

The everyday use of these models is not generation but a forward pass over a padded batch, so each
model type is exported as `(input_ids, attention_mask) -> logits` with the batch and the sequence
length dynamic (tract symbols B and S), from its config class's defaults with small sizes
(tests/architectures.py, in encoder mode) and random weights. tract runs it at two sizes, (2, 7) and
(3, 5), the second batch with padding at the end of one row, against transformers in eager mode:
passing is a max absolute difference of the logits at the positions that are not padding of at most
1e-4. Types run in worker processes, as in bench/sweep_architectures.py (whose machinery this
shares); results go to WORK/results.jsonl and the table to docs/encoders.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_architectures import MAX_PARAMETERS, ROOT, _cell, _line, serve, sweep  # noqa: E402

TOLERANCE = 1e-4
SIZES = ((2, 7), (3, 5))  # (batch, sequence): the first is the traced example


def encoder_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def _inputs(config, batch: int, seq: int, pad: bool):
    """Random ids below the vocabulary and special ids; with `pad`, the last row is padded."""
    import torch

    g = torch.Generator().manual_seed(batch * 100 + seq)
    ids = torch.randint(3, min(getattr(config, "vocab_size", 100) or 100, 100), (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad:
        mask[-1, seq - 2:] = 0
    return ids, mask


class MaskedLM:
    """`(input_ids, attention_mask) -> logits` over a transformers masked LM."""

    @staticmethod
    def wrap(model, takes_mask: bool):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                kwargs = {"attention_mask": attention_mask} if takes_mask else {}
                return self.model(input_ids=input_ids, **kwargs).logits

        return Wrapped().eval()


def run_one(model_type: str, work: Path) -> dict:
    """Build, export and check one model type (in this process)."""
    import inspect

    import numpy as np
    import torch
    from transformers import AutoModelForMaskedLM

    import t2ir
    from architectures import quiet, randomize_zero_init, tiny_config
    from t2ir.tract_run import load_runnable

    quiet()
    torch.set_num_threads(1)
    row = {"model_type": model_type, "category": "encoder", "reason": "", "variants": {}}
    try:
        config = tiny_config(model_type, decoder=False)
        with torch.device("meta"):  # counted before anything is allocated
            size = sum(p.numel() for p in AutoModelForMaskedLM.from_config(config).parameters())
        if size > MAX_PARAMETERS:
            return {**row, "category": "not buildable",
                    "reason": f"the shrunk config still has {size / 1e6:.0f} M parameters (sizes it does not shrink)"}
        torch.manual_seed(0)
        model = AutoModelForMaskedLM.from_config(config, attn_implementation="eager").eval()
        randomize_zero_init(model, 0)
    except Exception as e:
        return {**row, "category": "not buildable", "reason": f"tiny config does not build: {_line(e)}"}
    takes_mask = "attention_mask" in inspect.signature(model.forward).parameters
    wrapped = MaskedLM.wrap(model, takes_mask)
    result = {"passed": False}
    start = time.time()
    example = _inputs(config, *SIZES[0], pad=False)
    try:
        with torch.no_grad():
            wrapped(*example)
    except Exception as e:  # some need inputs or config values this sweep does not give
        return {**row, "category": "not buildable", "reason": f"does not run in eager PyTorch: {_line(e)}"}
    try:
        out = Path(tempfile.mkdtemp(dir=work)) / "model"
        t2ir.export(wrapped, example, out, input_names=["input_ids", "attention_mask"],
                    dynamic_axes={"input_ids": {0: "B", 1: "S"}, "attention_mask": {0: "B", 1: "S"}})
        runnable = load_runnable(out)
        diffs = []
        for (batch, seq), pad in zip(SIZES, (False, True)):
            ids, mask = _inputs(config, batch, seq, pad)
            with torch.no_grad():
                want = wrapped(ids, mask).numpy()
            got = runnable.run([ids.numpy(), mask.numpy()])[0].to_numpy()
            kept = mask.numpy().astype(bool)  # logits at padding positions are not defined alike
            diffs.append(float(np.abs(got - want)[kept].max()))
        result.update(max_diff=max(diffs), passed=max(diffs) <= TOLERANCE)
        if not result["passed"]:
            result["error"] = f"max |diff| {max(diffs):.3g} > {TOLERANCE:g}"
    except Exception as e:
        result["error"] = _line(e)
        result["trace"] = traceback.format_exc()[-3000:]
    result["seconds"] = round(time.time() - start, 1)
    row["variants"]["f32"] = result
    row["attention_mask"] = takes_mask
    return row


def verdict(row: dict) -> str:
    if row.get("crash"):
        return "fail"
    if row["category"] == "not buildable":
        return "skip"
    return "pass" if row["variants"].get("f32", {}).get("passed") else "fail"


def summary_line(row: dict) -> str:
    v = row["variants"].get("f32", {})
    why = row.get("crash") or v.get("error") or row.get("reason", "")
    return f"{verdict(row)} {v.get('max_diff', float('nan')):.2g} {why[:200]}"


def write_table(work: Path, out: Path) -> None:
    import transformers

    rows = sorted((json.loads(l) for l in (work / "results.jsonl").read_text().splitlines()),
                  key=lambda r: r["model_type"])
    swept = [r for r in rows if verdict(r) != "skip"]
    skipped = [r for r in rows if verdict(r) == "skip"]
    passed = [r for r in swept if verdict(r) == "pass"]
    lines = [
        "# Encoders",
        "",
        f"Generated by `bench/sweep_encoders.py` with transformers {transformers.__version__}: every model type "
        "in transformers' masked-LM auto mapping, built from its config class with small sizes and random "
        "weights (eager attention), exported with `t2ir.export` as `(input_ids, attention_mask) -> logits` "
        "with the batch and sequence dynamic, and run in tract at (2, 7) and (3, 5) with padding in one row, "
        f"against transformers; a pass is a max absolute difference of at most {TOLERANCE:g} at the "
        "positions that are not padding.",
        "",
        "Regenerate with `python bench/sweep_encoders.py --fresh` (about 10 minutes on 2 cores).",
        "",
        f"**{len(passed)} of {len(swept)} buildable encoders pass** "
        f"({100 * len(passed) / max(len(swept), 1):.0f} %); {len(skipped)} model types do not build or run "
        "from their config class's defaults.",
        "",
        "| architecture | result | max diff | reason |",
        "|---|---|---|---|",
    ]
    for r in swept:
        v = r["variants"].get("f32", {})
        diff = f"{v['max_diff']:.1e}" if "max_diff" in v else "—"
        lines.append(f"| {r['model_type']} | {verdict(r)} | {diff} | {_cell(r.get('crash') or v.get('error', ''))} |")
    lines += ["", "## Not swept", "", "| architecture | why |", "|---|---|"]
    lines += [f"| {r['model_type']} | {_cell(r['reason'])} |" for r in skipped]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated model types")
    ap.add_argument("--work", type=Path, default=Path("/tmp/t2ir-encoders"))
    ap.add_argument("--fresh", action="store_true", help="forget earlier results")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per model type")
    ap.add_argument("--table", type=Path, help="where the table goes (default docs/encoders.md, not with --only)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.work, run_one)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if args.fresh and (args.work / "results.jsonl").exists():
        (args.work / "results.jsonl").unlink()
    types = encoder_types()
    if args.only:
        types = [t for t in types if t in args.only.split(",")]
    sweep(types, args.work, args.timeout, __file__, summary_line)
    if args.table or not args.only:
        table = args.table or ROOT / "docs" / "encoders.md"
        write_table(args.work, table)
        print(f"table: {table}")


if __name__ == "__main__":
    main()
