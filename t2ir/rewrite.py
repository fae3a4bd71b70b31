"""The public rewrite API: patterns, rules, rule passes, and the op alias table they use.

    from t2ir.rewrite import MUL, RewritePass, lit, op, rule, var

    x = var("x")

    @rule(op(MUL, x, op("aten.sigmoid", op(MUL, x, lit(1.702), commute=True)), commute=True))
    def quick_gelu(m):
        "x * sigmoid(1.702 * x) -> mylib.quick_gelu(x)"
        return m.op("mylib.quick_gelu", [m.x], m.out)

    t2ir.register_pass(RewritePass("my-fusions", [quick_gelu]), after="fuse-transformer-ops")

docs/passes.md walks through writing a fusion.
"""

from t2ir.ops.aliases import (ADD, ATTENTION, CASTS, CONCATS, DIV, IDENTITY, MUL, NORMS, RESHAPES, SOFTMAX, SUB,
                              TRANSPOSES)
from t2ir.passes.pattern import Pattern, any_, lit, one_of, op, skip, var
from t2ir.passes.pipeline import register_pass, unregister_pass
from t2ir.passes.rewrite import Match, RewritePass, Rule, RuleSet, rule

__all__ = [
    "Pattern", "op", "var", "lit", "any_", "skip", "one_of", "Match", "Rule", "RuleSet", "rule", "RewritePass",
    "register_pass", "unregister_pass", "ADD", "SUB", "MUL", "DIV", "CASTS", "IDENTITY", "RESHAPES", "TRANSPOSES",
    "CONCATS", "SOFTMAX", "ATTENTION", "NORMS",
]
