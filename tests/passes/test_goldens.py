"""Golden IR tests: `tests/passes/<pass>/<case>.before.t2ir` through the pass must print exactly
as `<case>.after.t2ir`. Run with `T2IR_UPDATE_GOLDENS=1` to rewrite the goldens after an
intended change (then review the diff)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import t2ir  # noqa: F401  (registers ops)
from t2ir.ops.builtins import ensure_registered
from t2ir.options import ExportOptions
from t2ir.parser import parse_ir
from t2ir.passes.pipeline import passes_by_name
from t2ir.ops.registry import check_node
from t2ir.verify import verify

HERE = Path(__file__).parent
CASES = sorted(HERE.glob("*/*.before.t2ir"))
UPDATE = os.environ.get("T2IR_UPDATE_GOLDENS") == "1"


def options_of(text: str) -> ExportOptions:
    """A first line `# options: {"f32_attn": true}` sets the pass options."""
    first = text.splitlines()[0] if text else ""
    if first.startswith("# options:"):
        return ExportOptions(**json.loads(first.split(":", 1)[1]))
    return ExportOptions()


@pytest.mark.parametrize("before", CASES, ids=[f"{p.parent.name}/{p.name.split('.')[0]}" for p in CASES])
def test_golden(before: Path):
    ensure_registered()
    text = before.read_text()
    graph = parse_ir(text)
    verify(graph, check_op=check_node)
    result = passes_by_name()[before.parent.name].run(graph, options_of(text))
    verify(graph, check_op=check_node)
    after = before.with_name(before.name.replace(".before.", ".after."))
    got = str(graph)
    if UPDATE:
        after.write_text(got)
    assert after.exists(), f"missing golden {after.name}: run with T2IR_UPDATE_GOLDENS=1"
    assert got == after.read_text()
    assert result.changed == (got != str(parse_ir(text)))


def test_every_pass_has_goldens():
    names = {p.parent.name for p in CASES}
    assert set(passes_by_name()) <= names, f"passes without golden tests: {set(passes_by_name()) - names}"
