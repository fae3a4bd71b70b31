"""Property tests of the IR text: random graphs print and parse back to the same graph, and any
damage to the text gives an IRParseError with a line and column, never another exception.

The graphs are built with the IR API from random parts: names, symbolic dimensions (sums,
products, floor division, Max/Min), every attribute kind (strings with quotes, backslashes, `#`
and newlines; NaN, inf, -0.0; dtypes; nested tuples and lists), multi-output nodes and
source locations.
"""

from __future__ import annotations

import math

import sympy
from hypothesis import given
from hypothesis import strategies as st

from t2ir.ir import Graph, InMemory, Loc
from t2ir.parser import IRParseError, parse_ir
from t2ir.types import DType, TensorType, simplify_dim, symbol
from tests.fuzzing import examples

NAME = st.from_regex(r"[A-Za-z0-9_.]{1,8}", fullmatch=True)
SYMBOL_NAMES = ["S", "P", "batch", "n_1"]
OP = st.from_regex(r"[a-z_][a-z0-9_]{0,6}(\.[A-Za-z0-9_]{1,6}){1,2}", fullmatch=True)


def _dim_exprs() -> st.SearchStrategy:
    sym = st.sampled_from(SYMBOL_NAMES).map(symbol)
    leaf = st.one_of(sym, st.integers(1, 64).map(sympy.Integer))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda ab: ab[0] + ab[1]),
        st.tuples(inner, inner).map(lambda ab: ab[0] - ab[1]),
        st.tuples(inner, st.integers(2, 9)).map(lambda ab: ab[0] * ab[1]),
        st.tuples(inner, st.integers(2, 9)).map(lambda ab: sympy.floor(ab[0] / ab[1])),
        st.tuples(inner, inner).map(lambda ab: sympy.Max(ab[0], ab[1])),
        st.tuples(inner, inner).map(lambda ab: sympy.Min(ab[0], ab[1])),
        st.tuples(sym, st.integers(2, 3)).map(lambda ab: ab[0] ** ab[1]),
    ), max_leaves=4)


DIM = st.one_of(st.integers(0, 2**40), _dim_exprs())
TYPE = st.builds(TensorType, st.sampled_from(list(DType)), st.lists(DIM, max_size=4).map(tuple))
SYMBOLIC = _dim_exprs().filter(lambda d: not d.is_number)

ATTR = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(), st.text(max_size=12),
              st.sampled_from(list(DType)), SYMBOLIC),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple)),
    max_leaves=6)
LOC = st.one_of(  # a line only comes with a file
    st.builds(Loc, st.from_regex(r"[A-Za-z0-9_.]{0,12}", fullmatch=True)),
    st.builds(Loc, st.from_regex(r"[A-Za-z0-9_.]{0,12}", fullmatch=True),
              st.from_regex(r"([a-z_]{1,6}/){0,2}[a-z_]{1,8}\.py", fullmatch=True), st.integers(1, 10**5)))


@st.composite
def graphs(draw) -> Graph:
    g = Graph(draw(NAME))
    for s in draw(st.lists(st.sampled_from(SYMBOL_NAMES), max_size=3, unique=True)):
        g.declare_symbol(s)
    values = [g.add_input(draw(NAME), draw(TYPE)) for _ in range(draw(st.integers(0, 3)))]
    for _ in range(draw(st.integers(0, 3))):
        label = draw(st.text(max_size=16))
        encoding = draw(st.sampled_from(["plain", "q4_0", "my_codec2"]))
        values.append(g.add_const(draw(NAME), draw(TYPE), InMemory(None), label=label, encoding=encoding))
    for _ in range(draw(st.integers(0, 5))):
        inputs = draw(st.lists(st.sampled_from(values), max_size=3)) if values else []
        attrs = draw(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True), ATTR, max_size=3))
        types = draw(st.lists(TYPE, min_size=1, max_size=3))
        node = g.add_node(draw(OP), inputs, types, attrs, name=draw(NAME), loc=draw(LOC))
        values += node.outputs
    g.set_outputs(draw(st.lists(st.sampled_from(values), max_size=3)) if values else [])
    return g


def same_attr(a, b) -> bool:
    """Equal, and of the same kind: 1 is not 1.0 nor True, a tuple is not a list, NaN is NaN."""
    if type(a) is not type(b) and not (isinstance(a, sympy.Basic) and isinstance(b, sympy.Basic)):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_attr(x, y) for x, y in zip(a, b))
    if isinstance(a, sympy.Basic):
        return simplify_dim(a) == simplify_dim(b)
    return a == b


@examples(100)
@given(g=graphs())
def test_printed_graphs_parse_back_to_the_same_graph(g: Graph, property_cases) -> None:
    property_cases["ir: print -> parse -> print random graphs"] += 1
    text = str(g)
    back = parse_ir(text)
    assert str(back) == text
    assert [v.type for v in back.inputs] == [v.type for v in g.inputs]
    assert [(v.const.label, v.const.encoding) for v in back.consts] == [(v.const.label, v.const.encoding) for v in g.consts]
    for n, m in zip(g.nodes, back.nodes):
        assert (m.op, m.loc, [v.name for v in m.inputs]) == (n.op, n.loc, [v.name for v in n.inputs])
        assert n.attrs.keys() == m.attrs.keys()
        for k in n.attrs:
            assert same_attr(n.attrs[k], m.attrs[k]), (k, n.attrs[k], m.attrs[k])


DAMAGE_CHARS = st.sampled_from(list('%=,:()[]{}"\\#-+*/ \n\t.0123456789azS_') + ["f32", "graph", "output", "Ω"])


@st.composite
def damaged(draw) -> str:
    text = str(draw(graphs()))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 6)))
        text = text[:i] + "".join(draw(st.lists(DAMAGE_CHARS, max_size=3))) + text[j:]
    return text


@examples(150)
@given(text=damaged())
def test_damaged_text_gives_a_parse_error_or_a_graph(text: str, property_cases) -> None:
    property_cases["ir: parse damaged text"] += 1
    try:
        g = parse_ir(text)
    except IRParseError as e:
        assert str(e).split(":", 2)[0].isdigit(), str(e)  # starts with line:column
    else:
        assert parse_ir(str(g)) is not None
