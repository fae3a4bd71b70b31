"""cleanup: removes dead nodes and constants, and ops that do nothing (identities such as clone and
dropout in inference, casts and reshapes that keep the type, identity transposes, arithmetic with
a neutral operand such as rotary's `* 1.0` attention scaling)."""

from __future__ import annotations

from typing import Optional

from t2ir.ir import Graph, Value
from t2ir.ops.aliases import ADD, CASTS, DIV, DROPOUT, IDENTITY, MUL, NNEF_CAST, NNEF_RESHAPES, RESHAPES, SUB
from t2ir.options import ExportOptions
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.pattern import Pattern, any_, lit, op, var
from t2ir.passes.rewrite import Match, Rule, RuleSet, dead_code_elimination


def forward_input(m: Match) -> Optional[Value]:
    """The node hands its input through unchanged: its users read the input instead."""
    return m.x if m.x.type == m.out else None


def _is_identity_permutation(axes) -> bool:
    return list(axes) == list(range(len(axes)))


def with_neutral(aten_ops: frozenset[str], nnef_op: str, value: float, commutes: bool) -> Pattern:
    """x OP value at either level (NNEF-level ops hold a literal operand as attribute y, or x)."""
    p = op(aten_ops, var("x"), lit(value)) | op(nnef_op, var("x"), y=lit(value))
    return p | op(nnef_op, var("x"), x=lit(value)) if commutes else p


NEUTRAL = (with_neutral(MUL, "nnef.mul", 1.0, True) | with_neutral(DIV, "nnef.div", 1.0, False)
           | with_neutral(ADD, "nnef.add", 0.0, True) | with_neutral(SUB, "nnef.sub", 0.0, False))

RULES = RuleSet([
    Rule("drop-identity", op(IDENTITY | {"nnef.copy"}, var("x")), forward_input,
         "%y = clone(%x) -> uses of %y read %x"),
    Rule("drop-inference-dropout", op(DROPOUT, var("x"), p=any_(), train=any_(),
                                      where=lambda a: not a.get("train") or a.get("p") == 0), forward_input,
         "%y = dropout(%x, train=False) -> %x"),
    Rule("drop-noop-reshape", op(RESHAPES | NNEF_RESHAPES | {"aten.expand"}, var("x")), forward_input,
         "%y = reshape(%x) with type(%y) == type(%x) -> %x"),
    Rule("drop-noop-cast", op(CASTS | {NNEF_CAST}, var("x"), dtype=any_()), forward_input,
         "%y = cast(%x, to=f32) with %x already f32 -> %x"),
    Rule("drop-identity-transpose", op("nnef.transpose", var("x"), axes=_is_identity_permutation), forward_input,
         "transpose(%x, axes=[0, 1, ..]) -> %x"),
    Rule("drop-neutral-operand", NEUTRAL, forward_input, "%x * 1, %x / 1, %x + 0, %x - 0 -> %x"),
])


class Cleanup(Pass):
    name = "cleanup"

    def run(self, graph: Graph, options: ExportOptions) -> PassResult:
        stats = RULES.apply(graph, options)
        removed = dead_code_elimination(graph)
        if removed:
            stats["dead"] = removed
        return PassResult(bool(stats), stats)
