"""The IR core: edit API invariants, printer/parser round trip, parse errors, verifier."""

import pytest
import sympy

from t2ir.ir import Graph, InMemory
from t2ir.ops.builtins import ensure_registered
from t2ir.ops.registry import check_node
from t2ir.parser import IRParseError, parse_ir
from t2ir.types import DType, TensorType, parse_dim, simplify_dim, symbol
from t2ir.verify import IRVerifyError, verify

F = lambda *shape: TensorType(DType.f32, shape)  # noqa: E731


def small_graph() -> Graph:
    g = Graph("g")
    g.declare_symbol("S")
    x = g.add_input("x", F(symbol("S"), 4))
    w = g.add_const("w", F(4, 4), InMemory(None), label="layer.w")
    y = g.op("nnef.matmul", [x, w], F(symbol("S"), 4), name="y", transposeB=True)
    z = g.op("nnef.add", [y, y], F(symbol("S"), 4), name="z")
    g.set_outputs([z])
    return g


def test_use_lists_follow_edits():
    g = small_graph()
    x, y, z = g.value("x"), g.value("y"), g.value("z")
    assert [u.index for u in y.uses] == [0, 1]
    with g.inserting_before(z.producer):
        r = g.op("nnef.relu", [x], x.type, name="r")
    y.replace_all_uses_with(r)
    assert not y.uses and len(r.uses) == 2
    g.erase_node(y.producer)
    verify(g)
    assert [n.op for n in g.nodes] == ["nnef.relu", "nnef.add"]


def test_erasing_a_used_node_is_refused():
    g = small_graph()
    with pytest.raises(ValueError, match="still used"):
        g.erase_node(g.value("y").producer)


def test_iteration_survives_erasing_the_current_node():
    g = small_graph()
    seen = []
    for node in g.nodes:
        seen.append(node.op)
        if node.op == "nnef.add":
            node.outputs[0].replace_all_uses_with(g.value("y"))
            g.set_outputs([g.value("y")])
            g.erase_node(node)
    assert seen == ["nnef.matmul", "nnef.add"]
    verify(g)


def test_round_trip_is_exact():
    g = small_graph()
    text = str(g)
    assert "%y = nnef.matmul(%x, %w, transposeB=true) : f32[S, 4]" in text
    assert str(parse_ir(text)) == text


def test_round_trip_of_attribute_kinds():
    text = (
        "graph g\nsymbol P\nsymbol S\ninput %x : f16[1, 2, P + S, 8]\n"
        '%a, %b = user.op(%x, n=3, f=-0.5, s="q\\"uote", l=[1, [2, 3]], d=f32, e=2*P + S, '
        "none_=none, t=true, i=-inf) : f16[1, 2, P + S, 8], i64[]  # layers.0.attn (model.py:12)\n"
        "output %a, %b\n"
    )
    g = parse_ir(text)
    node = next(iter(g.nodes))
    assert node.attrs["d"] is DType.f32
    assert node.attrs["e"] == 2 * symbol("P") + symbol("S")
    assert node.attrs["s"] == 'q"uote'
    assert node.loc.module == "layers.0.attn" and node.loc.line == 12
    assert str(g) == text


@pytest.mark.parametrize("text, where, what", [
    ("graph g\ninput %x : f32[2]\n%y = nnef.relu(%z) : f32[2]\noutput %y\n", "3:16", "used before"),
    ("graph g\ninput %x : q7[2]\noutput %x\n", "2:12", "unknown element type"),
    ("graph g\ninput %x : f32[2]\n%y = nnef.relu(%x) f32[2]\noutput %y\n", "3:20", "expected ':'"),
    ("graph g\ninput %x : f32[2]\n", "3:1", "missing 'output'"),
    ("", "1:1", "empty"),
    ("graph g\ninput %x : f32[2]\n%x = nnef.relu(%x) : f32[2]\noutput %x\n", "3:", "defined twice"),
])
def test_parse_errors_point_at_line_and_column(text, where, what):
    with pytest.raises(IRParseError) as e:
        parse_ir(text)
    msg = str(e.value)
    assert msg.startswith(where), msg
    assert what in msg


def test_verifier_reports_broken_invariants():
    g = small_graph()
    y = g.value("y")
    y.uses.clear()  # corrupt a use-list behind the API's back
    with pytest.raises(IRVerifyError, match="missing from %y's use-list"):
        verify(g)


def test_verifier_checks_nnef_schemas():
    g = small_graph()
    g.op("nnef.relu", [g.value("x")], g.value("x").type, bogus=1)
    ensure_registered()
    verify(g)  # the core knows no ops ...
    with pytest.raises(IRVerifyError, match="unknown attributes"):
        verify(g, check_op=check_node)  # ... the registry's checker does


def test_dims():
    assert parse_dim("S + P") == symbol("S") + symbol("P")
    assert parse_dim("4") == 4
    assert isinstance(parse_dim("2*S"), sympy.Expr)


def test_floors_of_whole_quotients_are_dropped():
    """SEW-D's attention reshapes a tensor of 4 * B * (n + 1) elements to (-1, n + 1, ...) and
    back: torch gives the size as a floor of a sum of fractions over symbols, which is B, and tract
    cannot be given a division by a symbol. Floors that do not divide exactly stay."""
    B, T = symbol("B"), symbol("T")
    n = sympy.floor(sympy.floor(T / 80) / 2 - sympy.Rational(3, 2))
    assert simplify_dim(4 * B / sympy.floor(4 * B * n / (4 * n + 4) + 4 * B / (4 * n + 4))) == 4
    assert simplify_dim(sympy.floor((2 * T + 2) / 2)) == T + 1
    assert simplify_dim(sympy.floor(T / 2) * 2) == 2 * sympy.floor(T / 2)
    assert simplify_dim(sympy.ceiling(B * n / 3)) == sympy.ceiling(B * n / 3)


def test_critical_path_follows_dependencies():
    from t2ir.analysis import critical_path, to_networkx

    g = small_graph()
    assert critical_path(g) == ["nnef.matmul", "nnef.add"]
    assert to_networkx(g).number_of_edges() == 1  # add reads matmul's output (twice: one edge)


def test_multi_output_names_that_fresh_names_would_take():
    """Found by tests/test_property_ir.py: the outputs of `ns.x` are first given fresh names
    from the op's name (x, x_1), which must not block the names the text gives them."""
    text = "graph g\n%x_1, %x = ns.x() : f32[], f32[]\noutput %x, %x_1\n"
    assert str(parse_ir(text)) == text


def test_a_line_ending_inside_a_list_attribute():
    """Found by tests/test_property_ir.py: this once recursed until Python gave up."""
    with pytest.raises(IRParseError, match="^3:"):
        parse_ir("graph g\ninput %x : f32[2]\n%y = a.b(%x, k=[\noutput %y\n")


def test_dimensions_with_commas_and_nested_calls_read_back():
    """Found by tests/test_property_ir.py: `Max(P, S)` in a type was cut at its comma."""
    text = ("graph g\nsymbol P\nsymbol S\ninput %x : f32[Max(P, S), floor(Min(P, S)/2)]\n"
            "%y = a.b(%x, size=[Max(1, floor(S/2)), P + S]) : f32[Max(P, S), floor(Min(P, S)/2)]\noutput %y\n")
    g = parse_ir(text)
    assert str(g) == text and g.value("y").producer.attrs["size"][1] == parse_dim("P + S")
