"""Writes docs/ops.md from the op registry: `python -m t2ir.tools.ops_doc > docs/ops.md`."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from collections import defaultdict
from typing import Callable

HEADER = """# Operators

Generated from the op registry by `python -m t2ir.tools.ops_doc > docs/ops.md`; do not edit by
hand (`tests/test_ops.py` checks that this file is up to date).

The translations are checked in the real tract engine by the case table `tests/op_cases.py`
(run by `tests/test_ops.py`): each case exports a small module, runs it in tract and compares it
with PyTorch eager at two sizes of every dynamic axis, in f32 and, where the table says so, f16
and f64. The table is the reference for which patterns, dtypes and dynamic axes are tested. An
op missing here fails the export with one error listing every such op with its module path and
source line; add a translation with `@t2ir.register_op` (see [custom_ops.md](custom_ops.md)).

Dtypes: tract computes f32, f16, f64 and integer/bool types. bf16 is converted (see
[api.md](api.md)). Complex types are not supported. In f64, these NNEF-level ops have no tract
kernel and are computed in f32 between casts: {no_f64}.

Integer matrix products (matmul/linear/einsum on integer tensors) are refused with an error:
tract has none.
"""


def _first_line(fn: Callable) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").replace("|", "\\|").strip()


def source_section(ops: list) -> list[str]:
    """Source-level ops grouped by translator module, one row per translator function."""
    groups: dict[str, dict[Callable, list[str]]] = defaultdict(lambda: defaultdict(list))
    for op in ops:
        groups[op.translate.__module__][op.translate].append(op.name)
    lines = [f"## Source-level translations ({len(ops)} ops)", "",
             "Each op is rewritten into NNEF-level ops by the translator named here.", ""]
    for module in sorted(groups):
        lines += [f"### `{module}`", "", "| ops | translator | notes |", "|---|---|---|"]
        rows = sorted(groups[module].items(), key=lambda item: sorted(item[1])[0])
        for fn, names in rows:
            ops_text = ", ".join(f"`{n}`" for n in sorted(names))
            lines.append(f"| {ops_text} | `{fn.__name__}` | {_first_line(fn)} |")
        lines.append("")
    return lines


def nnef_section(ops: list) -> list[str]:
    from t2ir.ops.registry import nnef_call_name

    lines = [f"## NNEF-level ops ({len(ops)} ops)", "",
             "What the emitter writes. Tensor parameters are positional (`*` a list of tensors, `?` an",
             "optional trailing tensor); attributes are written `name = value`.", "",
             "| IR op | NNEF call | tensor parameters | attributes |", "|---|---|---|---|"]
    for op in sorted(ops, key=lambda o: o.name):
        sig = op.signature
        params = ", ".join(f"`{p}`" for p in sig.params)
        attrs = ", ".join(f"`{a}`" for a in sorted(sig.attrs))
        lines.append(f"| `{op.name}` | `{nnef_call_name(op.name)}` | {params} | {attrs} |")
    return lines + [""]


OPINFO_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "opinfo.json"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def opinfo_section(path: Path = OPINFO_RESULTS) -> list[str]:
    """The OpInfo conformance table (bench/results/opinfo.json, written by t2ir.tools.opinfo)."""
    if not path.exists():
        return []
    import json

    data = json.loads(path.read_text())
    summary, ops = data["summary"], data["ops"]
    samples = summary["samples"]
    lines = [
        "## Conformance with torch's OpInfo database", "",
        "`python -m t2ir.tools.opinfo` exports every float32 sample input of every op in torch's OpInfo",
        f"database (the first {data['samples_per_op']} samples of each; torch {data['torch']}, tract {data['tract']}),",
        "alone, runs it in tract and compares it with PyTorch eager (tract's `approximate` level; integers",
        "and bools exactly). A sample *passes*, *fails* (wrong numbers or shapes, or tract could not run",
        "the export), is *refused* with one of t2ir's errors (the reason below: no translation, a",
        "data-dependent shape, an unsupported dtype, randomness, an empty tensor), or is *skipped* when",
        "there is nothing to compare (eager PyTorch fails, or the op is random).", "",
        f"Of {summary['opinfo_ops']} OpInfo entries, **{summary['supported']} are supported** (some samples pass "
        f"and none fails; {summary['all_samples_pass']} pass every sample), {summary['with_failures']} pass some samples "
        f"and fail others, {summary['refused_only']} are refused, {summary['failed_only']} only fail. Samples: "
        f"{samples['passed']} passed, {samples['failed']} failed, {samples['refused']} refused, "
        f"{samples['skipped']} skipped.", "",
        "| OpInfo op | aten ops exported | passed | failed | refused | skipped | reason (first failure or refusal) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, r in sorted(ops.items()):
        reason = r["reasons"].get("failed") or r["reasons"].get("refused") or ""
        aten = ", ".join(f"`{a}`" for a in r["aten"][:6]) + (", ..." if len(r["aten"]) > 6 else "")
        lines.append(f"| `{name}` | {aten} | {r['passed']} | {r['failed']} | {r['refused']} | {r['skipped']} | "
                     f"{_cell(_portable(reason))} |")
    return lines + [""]


def _portable(reason: str) -> str:
    """Reasons without the machine's paths (temporary folders, the source checkout)."""
    import re

    reason = re.sub(r" at \S*t2ir/tools/opinfo\.py:\d+", "", reason)
    return re.sub(r"/tmp/[\w./-]+", "<tmp>", reason)


def render() -> str:
    """The whole document, from the built-in entries of the registry only."""
    from t2ir.ops.builtins import ensure_registered
    from t2ir.ops.context import NO_F64_OPS
    from t2ir.ops.registry import REGISTRY

    ensure_registered()
    builtin = [op for op in REGISTRY.ops.values() if op.origin == "builtin"]
    source = [op for op in builtin if op.translate is not None]
    nnef = [op for op in builtin if op.signature is not None]
    no_f64 = ", ".join(f"`{op}`" for op in sorted(NO_F64_OPS))
    lines = [HEADER.format(no_f64=no_f64)] + source_section(source) + nnef_section(nnef) + opinfo_section()
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
