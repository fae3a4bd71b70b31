"""Writes docs/ops.md from the op registry: `python -m t2ir.tools.ops_doc > docs/ops.md`."""

from __future__ import annotations

import inspect
import sys
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
    lines = [HEADER.format(no_f64=no_f64)] + source_section(source) + nnef_section(nnef)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
