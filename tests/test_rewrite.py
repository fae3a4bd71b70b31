"""The pattern layer and rule driver: matching (commutative, same-name captures, defaults,
alternatives), the driver's guarantees (dead nodes, outputs, hit counts, convergence), and a
fusion added through the public API only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import t2ir
from t2ir.errors import RewriteNotConverged
from t2ir.ops.builtins import ensure_registered
from t2ir.parser import parse_ir
from t2ir.rewrite import ADD, MUL, RewritePass, RuleSet, any_, lit, op, rule, var
from t2ir.verify import verify

x = var("x")
SILU = op(MUL, x, op("aten.sigmoid", x), commute=True)


def graph(body: str, inputs: str = "input %a : f32[4]\ninput %b : f32[4]\n") -> t2ir.Graph:
    ensure_registered()
    return parse_ir("graph g\n" + inputs + body)


def root(g: t2ir.Graph, name: str):
    return g.value(name).producer


@pytest.mark.parametrize("order", ["%a, %s", "%s, %a"])
def test_commutative_operands_match_in_either_order(order):
    g = graph(f"%s = aten.sigmoid(%a) : f32[4]\n%y = aten.mul.Tensor({order}) : f32[4]\noutput %y\n")
    caps = next(SILU.match_node(root(g, "y"), {}))
    assert caps["x"] is g.value("a")


def test_a_name_captured_twice_must_be_the_same_value():
    g = graph("%s = aten.sigmoid(%b) : f32[4]\n%y = aten.mul.Tensor(%a, %s) : f32[4]\noutput %y\n")
    assert next(SILU.match_node(root(g, "y"), {}), None) is None


def test_unmentioned_arguments_must_hold_their_defaults():
    add = op(ADD, var("p"), var("q"))
    g = graph("%y = aten.add.Tensor(%a, %b, alpha=2) : f32[4]\n%z = aten.add.Tensor(%a, %b) : f32[4]\noutput %y, %z\n")
    assert next(add.match_node(root(g, "y"), {}), None) is None  # a + 2b is not a + b
    assert next(add.match_node(root(g, "z"), {}), None) is not None
    assert next(op(ADD, var("p"), var("q"), alpha=2).match_node(root(g, "y"), {}), None) is not None


def test_literals_and_predicates():
    g = graph("%y = aten.mul.Tensor(%a, other=0.5) : f32[4]\noutput %y\n")
    assert op(MUL, x, lit(0.5)).first(g.value("y")) is not None
    assert op(MUL, x, lit(0.25)).first(g.value("y")) is None
    assert op(MUL, x, lit(where=lambda c: c > 0)).first(g.value("y")) is not None
    assert op(MUL, x, lit(name="c")).first(g.value("y"))["c"] == 0.5


def test_alternatives_backtrack_when_a_replacement_declines():
    tried = []

    @rule(op(MUL, var("p"), var("q"), commute=True))
    def pick_input(m):
        tried.append(m.p.name)
        return None if m.p.name == "a" else m.op("aten.relu", [m.p], m.out)

    g = graph("%y = aten.mul.Tensor(%a, %b) : f32[4]\noutput %y\n")
    assert RuleSet([pick_input]).apply(g) == {"pick-input": 1}
    assert tried[:2] == ["a", "b"]  # the first order was declined, the commuted one taken
    (node,) = g.nodes
    assert node.op == "aten.relu" and node.inputs[0].name == "b"


def test_driver_counts_hits_keeps_names_and_sweeps_dead_nodes():
    @rule(SILU)
    def silu(m):
        return m.op("t2ir.silu", [m.x], m.out)

    g = graph("%s = aten.sigmoid(%a) : f32[4]\n%y = aten.mul.Tensor(%a, %s) : f32[4]\n"
              "%t = aten.sigmoid(%b) : f32[4]\n%z = aten.mul.Tensor(%t, %b) : f32[4]\n%w = aten.add.Tensor(%y, %z) : f32[4]\n"
              "output %w\n")
    assert RuleSet([silu]).apply(g) == {"silu": 2}
    verify(g)
    assert [n.op for n in g.nodes] == ["t2ir.silu", "t2ir.silu", "aten.add.Tensor"]
    assert [n.outputs[0].name for n in g.nodes] == ["y", "z", "w"]  # replacements take the old names


def test_dead_nodes_are_not_rewritten():
    @rule(op("aten.relu", x))
    def relu_to_sigmoid(m):
        return m.op("aten.sigmoid", [m.x], m.out)

    g = graph("%dead = aten.relu(%a) : f32[4]\n%y = aten.neg(%b) : f32[4]\noutput %y\n")
    assert RuleSet([relu_to_sigmoid]).apply(g) == {}


def test_a_graph_output_keeps_its_name():
    @rule(op("aten.clone", x))
    def drop_clone(m):
        return m.x

    g = graph("%y = aten.clone(%a) : f32[4]\n%z = aten.clone(%b) : f32[4]\n%w = aten.neg(%z) : f32[4]\noutput %y, %w\n")
    assert RuleSet([drop_clone]).apply(g) == {"drop-clone": 1}  # %z goes, %y stays: the output is named y
    assert [v.name for v in g.outputs] == ["y", "w"] and g.value("w").producer.inputs[0].name == "b"


def test_rules_that_undo_each_other_fail_loudly():
    @rule(op("aten.relu", x))
    def relu_to_abs(m):
        return m.op("aten.abs", [m.x], m.out)

    @rule(op("aten.abs", x))
    def abs_to_relu(m):
        return m.op("aten.relu", [m.x], m.out)

    g = graph("%y = aten.relu(%a) : f32[4]\noutput %y\n")
    with pytest.raises(RewriteNotConverged, match="abs-to-relu .*relu-to-abs"):
        RuleSet([relu_to_abs, abs_to_relu]).apply(g, max_rounds=5)


def test_any_accepts_an_argument_the_op_does_not_have():
    cast = op({"aten.type_as", "aten.to.dtype"}, x, dtype=any_("d"))
    g = graph("%y = aten.type_as(%a, %b) : f32[4]\n%z = aten.to.dtype(%b, dtype=f16) : f16[4]\noutput %y, %z\n")
    assert cast.first(g.value("y"))["d"] is None
    assert cast.first(g.value("z"))["d"].value == "f16"


# ---- the IR edit API the driver relies on --------------------------------------------------------

def test_walk_survives_erasing_any_node():
    g = graph("%p = aten.relu(%a) : f32[4]\n%q = aten.neg(%a) : f32[4]\n%r = aten.abs(%b) : f32[4]\noutput %r\n")
    seen = []
    for node in g.nodes:
        seen.append(node.op)
        if node.op == "aten.relu":  # erase the current node and the next one, both dead
            g.erase_node(g.value("q").producer)
            g.erase_node(node)
    assert seen == ["aten.relu", "aten.abs"]


def test_graph_outputs_count_as_uses():
    g = graph("%y = aten.relu(%a) : f32[4]\noutput %y, %y\n")
    y = g.value("y")
    assert y.num_uses == 2 and y.is_output
    with pytest.raises(ValueError, match="still used"):
        g.erase_node(y.producer)
    with pytest.raises(AttributeError):
        g.outputs.append(y)  # read-only: edits go through set_outputs


def test_invalid_names_are_refused_where_they_are_set(tmp_path: Path):
    g = graph("%y = aten.relu(%a) : f32[4]\noutput %y\n")
    with pytest.raises(ValueError, match="invalid value name 'logits-1'"):
        g.rename(g.value("y"), "logits-1")
    with pytest.raises(t2ir.ExportError, match="'logits-1'"):
        t2ir.export(torch.nn.ReLU(), (torch.randn(2, 3),), tmp_path / "m.nnef.tgz", output_names=["logits-1"])
    assert not (tmp_path / "m.nnef.tgz").exists()


def test_tuple_attributes_survive_the_text_round_trip():
    g = graph("%y = user.op(%a, pads=(1, 2), one=(3,), nested=[(0, 0), (1, 1)], none=()) : f32[4]\noutput %y\n")
    attrs = g.value("y").producer.attrs
    assert attrs == {"pads": (1, 2), "one": (3,), "nested": [(0, 0), (1, 1)], "none": ()}
    assert str(parse_ir(str(g))) == str(g)


def test_parse_ir_verifies_what_it_builds(monkeypatch):
    from t2ir import parser
    from t2ir.verify import IRVerifyError

    def broken(g, **_):
        raise IRVerifyError("invalid IR: planted")

    monkeypatch.setattr(parser, "verify", broken)
    with pytest.raises(t2ir.IRParseError, match="planted"):
        parse_ir("graph g\ninput %a : f32[4]\noutput %a\n")


# ---- a fusion added through the public API only -------------------------------------------------

class HardSwishByHand(torch.nn.Module):
    def forward(self, x):
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


def test_user_fusion_through_the_public_api(tmp_path: Path):
    @rule(op("aten.div.Tensor", op(MUL, x, op("aten.clamp", op(ADD, x, lit(3.0)), lit(0.0), lit(6.0)), commute=True),
             lit(6.0)))
    def hardswish(m):
        """x * clamp(x + 3, 0, 6) / 6 -> aten.hardswish(x)"""
        return m.op("aten.hardswish", [m.x], m.out)

    t2ir.register_pass(RewritePass("test-fusions", [hardswish]), after="fuse-transformer-ops")
    try:
        x_in = torch.linspace(-5, 5, 24).reshape(2, 12)
        result = t2ir.export(HardSwishByHand(), (x_in,), tmp_path / "hs.nnef.tgz", dynamic_axes={"x": {0: "batch"}},
                             check_io=True)
    finally:
        t2ir.unregister_pass("test-fusions")
    record = next(r for r in result.passes if r.name == "test-fusions")
    assert record.result.stats == {"hardswish": 1}
    assert [n.op for n in result.graph.nodes] == ["tract_core.hard_swish"]
    assert result.check and all(c.passed for c in result.check)
    assert np.isfinite(result.check[0].max_abs_diff)
