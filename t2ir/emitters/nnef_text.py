"""Builds the data of `graph.nnef` from an NNEF-level graph; the Jinja template owns the syntax."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import sympy

from t2ir.ir import Graph, Node, Value
from t2ir.ops.registry import REGISTRY, TENSOR_KEYWORDS, nnef_call_name
from t2ir.ops.scan_steps import scan_step
from t2ir.types import DType, free_symbols

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
)
_F32_MAX = 3.4028234663852886e38


@dataclass
class Statement:
    lhs: str
    op: str
    args: list[str]


@dataclass
class NnefDocument:
    name: str
    extensions: list[str]
    symbols: list[str]
    assertions: list[str]
    fragments: list[str]
    inputs: list[str]
    outputs: list[str]
    statements: list[Statement] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # constant value name -> .dat label

    def render(self) -> str:
        return _TEMPLATES.get_template("graph.nnef.jinja").render(**self.__dict__)


def format_dim_expr(d) -> str:
    """A dimension as tract reads it: `S + P`, `2 * S`, `(S + 1) / 2`, `min(S, 4)`.

    tract's `/` is floor division by an integer literal, it has min/max but no modulo, and a
    leading unary minus negates the whole expression; so floor/ceil divisions become `(a) / n`
    and `(a + n - 1) / n`, `a mod n` becomes `a - n * (a / n)`, and negative terms never lead.
    """
    if isinstance(d, int):
        return str(d)
    d = sympy.sympify(d)
    if d.is_Integer:
        return str(int(d))
    if d.is_Symbol:
        return d.name
    if isinstance(d, (sympy.floor, sympy.ceiling)):
        num, den = _fraction(d.args[0])
        if den == 1:
            return format_dim_expr(num)
        if isinstance(d, sympy.ceiling):
            num = num + den - 1
        return f"({format_dim_expr(num)}) / {den}"
    if isinstance(d, sympy.Mod):
        a, n = d.args
        if not (n.is_Integer and n > 0):
            raise ValueError(f"dimension expression {d} cannot be written for tract (modulo by a symbol)")
        a_text = format_dim_expr(a)
        return f"({a_text}) - {int(n)} * (({a_text}) / {int(n)})"
    if isinstance(d, (sympy.Min, sympy.Max)):
        name = "min" if isinstance(d, sympy.Min) else "max"
        args = sorted(d.args, key=sympy.default_sort_key)
        text = format_dim_expr(args[0])
        for a in args[1:]:
            text = f"{name}({text}, {format_dim_expr(a)})"
        return text
    num, den = _fraction(d)
    if den != 1:  # an integer written over a common denominator: (T + 1) / 2 * 2 + ...
        return f"({format_dim_expr(num)}) / {den}"
    if d.is_Add:
        terms = sorted(d.args, key=lambda t: (t.could_extract_minus_sign(), t.is_number, sympy.default_sort_key(t)))
        out = format_dim_expr(terms[0]) if not terms[0].could_extract_minus_sign() else "0 - " + _subtrahend(-terms[0])
        for t in terms[1:]:
            out += " - " + _subtrahend(-t) if t.could_extract_minus_sign() else " + " + format_dim_expr(t)
        return out
    if d.is_Mul:
        if d.could_extract_minus_sign():
            return "0 - " + _subtrahend(-d)
        return " * ".join(_factor(a) for a in d.args)
    raise ValueError(f"dimension expression {d} cannot be written for tract")


def _subtrahend(d) -> str:
    """The right operand of `-`: parenthesised when it holds a `+` or `-` of its own."""
    text = format_dim_expr(d)
    return f"({text})" if d.is_Add or isinstance(d, sympy.Mod) else text


def _factor(d) -> str:
    """An operand of `*`: parenthesised unless atomic (`2 * (T / 2)` is not `(2 * T) / 2`)."""
    text = format_dim_expr(d)
    return text if d.is_Symbol or d.is_Integer or isinstance(d, (sympy.Min, sympy.Max)) else f"({text})"


def _fraction(expr) -> tuple:
    """expr as (numerator, positive integer denominator), e.g. T/2 - 1/2 -> (T - 1, 2)."""
    num, den = sympy.together(expr).as_numer_denom()
    if not den.is_Integer:
        raise ValueError(f"dimension expression {expr} divides by a symbol, which tract cannot write")
    if den < 0:
        num, den = -num, -den
    return sympy.expand(num), int(den)


def format_literal(v: Any, pairs: bool = False) -> str:
    """A Python/IR attribute as an NNEF literal. `pairs` writes [[a, b]] as [(a, b)]."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, DType):
        return f'"{v.value}"'
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):  # NNEF has no NaN literal; tract evaluates this expression to NaN
            return "0.0 / 0.0"
        if math.isinf(v):  # tract has no inf literal; f32's extreme rounds to inf in f16 too
            v = _F32_MAX if v > 0 else -_F32_MAX
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, sympy.Expr):
        return format_dim_expr(v)
    if isinstance(v, (list, tuple)):
        if pairs and all(isinstance(x, (list, tuple)) and len(x) == 2 for x in v):
            return "[" + ", ".join(f"({format_literal(a)}, {format_literal(b)})" for a, b in v) + "]"
        if isinstance(v, list) and v and all(isinstance(x, tuple) for x in v):  # a list of NNEF tuples
            return "[" + ", ".join("(" + ", ".join(format_literal(a) for a in x) + ")" for x in v) + "]"
        return "[" + ", ".join(format_literal(x) for x in v) + "]"
    if v is None:
        raise ValueError("None cannot be written as an NNEF literal")
    raise TypeError(f"cannot write {v!r} as an NNEF literal")


_IDENT_BAD = re.compile(r"[^A-Za-z0-9_]")


_KEYWORDS = {"version", "extension", "fragment", "graph", "tensor", "integer", "scalar", "logical", "string",
             "true", "false", "for", "in", "if", "else", "yield", "length_of", "shape_of", "range_of"}


class _Names:
    """Value names -> unique NNEF identifiers (graph inputs and outputs keep theirs when valid)."""

    def __init__(self):
        self.ids: dict[int, str] = {}
        self.taken: set[str] = set()

    def assign(self, v: Value) -> str:
        base = _IDENT_BAD.sub("_", v.name)
        if not base or base[0].isdigit() or base in _KEYWORDS or base.startswith(("true", "false")):
            base = "v_" + base  # tract's parser reads `true_divide` as the literal `true`
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        self.ids[id(v)] = name
        return name

    def __getitem__(self, v: Value) -> str:
        return self.ids[id(v)]


_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.\-]")


def dat_labels(consts: list[Value]) -> dict[str, str]:
    """A safe, unique .dat label per constant: no path separators, no leading dot, no `..`."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for v in consts:
        label = _LABEL_BAD.sub("_", v.const.label).replace("..", "_").lstrip(".-") or "tensor"
        label = label[:180]
        base, i = label, 0
        while label.lower() in taken:
            i += 1
            label = f"{base}_{i}"
        taken.add(label.lower())
        out[v.name] = label
    return out


def _type_kind(dtype: DType) -> str:
    return "logical" if dtype == DType.bool else ("scalar" if dtype.is_float else "integer")


def _input_statement(v: Value, name: str) -> Statement:
    shape = f"shape = {format_literal(list(v.shape))}"
    if v.dtype in (DType.f32, DType.i64, DType.bool):
        return Statement(name, f"external<{_type_kind(v.dtype)}>", [shape])
    return Statement(name, "tract_core_external", [shape, f'datum_type = "{v.dtype.value}"'])


def _literal_operand(v: Any, node: Node, folded: bool) -> str:
    """A literal operand. tract types a float literal as f32, and when the other operand is a
    constant it folds the op in f32 too (an f16 weight + 1.0 becomes f32), so beside constants
    of another float type the literal is cast to that type first."""
    out = node.outputs[0].dtype if node.outputs else None
    if folded and isinstance(v, float) and out is not None and out.is_float and out != DType.f32:
        return f'tract_core_cast({format_literal(v)}, to = "{out.value}")'
    return format_literal(v)


def _call_args(node: Node, names: _Names, folded: bool = False) -> list[str]:
    """The call's arguments; `folded`: every tensor operand is computed from constants only."""
    sig = REGISTRY.lookup(node.op).signature
    keywords = list(node.attrs.get(TENSOR_KEYWORDS, ()))
    positional = node.inputs[:len(node.inputs) - len(keywords)]
    inputs = iter(positional)
    args: list[str] = []
    for p in sig.params:
        bare = p.lstrip("*?")
        if bare in node.attrs:
            args.append(_literal_operand(node.attrs[bare], node, folded))
        elif p.startswith("*"):
            args.append("[" + ", ".join(names[v] for v in inputs) + "]")
        elif p.startswith("?"):
            args += [names[v] for v in inputs]
        else:
            args.append(names[next(inputs)])
    params = {p.lstrip("*?") for p in sig.params}
    for k, v in node.attrs.items():
        if k in sig.input_refs:
            args.append(f"{k} = {_ref_tuples(v, node, names)}")
        elif k in sig.fragment_refs:
            args.append(f"{k} = {format_literal(nnef_call_name(v))}")
        elif k not in params and k != TENSOR_KEYWORDS:
            args.append(f"{k} = {format_literal(v, pairs=(k == 'padding'))}")
    args += [f"{k} = {names[v]}" for k, v in zip(keywords, node.inputs[len(positional):])]
    return args


def _ref_tuples(items, node: Node, names: _Names) -> str:
    """`[("w", 1)]` with input 1 named `fc_w` -> `[("w", fc_w)]` (see NnefSignature.input_refs)."""
    tuples = []
    for item in items:
        parts = [format_literal(x) for x in item]
        parts[1] = names[node.inputs[item[1]]]
        tuples.append("(" + ", ".join(parts) + ")")
    return "[" + ", ".join(tuples) + "]"



def add_fragment(fragments: dict[str, str], op: str) -> None:
    """Add `op`'s fragment definition, after the registered fragments its body calls (each
    definition is written once, and before its first use)."""
    if op in fragments:
        return
    step = scan_step(op)
    text = step_fragment(step.graph, nnef_call_name(op)) if step else REGISTRY.lookup(op).signature.fragment.strip()
    fragments[op] = ""  # placeholder: stops a fragment that (wrongly) calls itself from looping
    body = text.split("{", 1)[-1]
    for other, entry in REGISTRY.ops.items():
        if other != op and entry.signature and entry.signature.fragment and \
                re.search(rf"\b{re.escape(nnef_call_name(other))}\s*\(", body):
            add_fragment(fragments, other)
    del fragments[op]
    fragments[op] = text


def step_fragment(body: Graph, name: str) -> str:
    """A scan's lowered step (t2ir.ops.scan_steps) as an NNEF fragment: its inputs are the
    parameters, its outputs the results."""
    doc = build_document(body)
    params = ", ".join(f"{n}: tensor<{_type_kind(v.dtype)}>" for n, v in zip(doc.inputs, body.inputs))
    results = ", ".join(f"{n}: tensor<{_type_kind(v.dtype)}>" for n, v in zip(doc.outputs, body.outputs))
    lines = [f"    {s.lhs} = {s.op}({', '.join(s.args)});" for s in doc.statements[len(body.inputs):]]
    return f"fragment {name}( {params} )\n-> ( {results} )\n{{\n" + "\n".join(lines) + "\n}"


def build_document(g: Graph) -> NnefDocument:
    names = _Names()
    for v in g.inputs + g.outputs:
        if id(v) not in names.ids:
            names.assign(v)
    labels = dat_labels(g.consts)
    symbols = list(g.symbols)
    stmts: list[Statement] = []
    for v in g.inputs:
        stmts.append(_input_statement(v, names[v]))
    for v in g.consts:
        names.assign(v)
        shape = format_literal(list(v.shape))
        stmts.append(Statement(names[v], f"variable<{_type_kind(v.dtype)}>",
                               [f'label = "{labels[v.name]}"', f"shape = {shape}"]))
    uses_transformers, fragments = False, {}
    constant = {id(v) for v in g.consts}  # values computed from constants only
    for node in g.nodes:
        folded = bool(node.inputs) and all(id(v) in constant for v in node.inputs)
        if folded:
            constant.update(id(o) for o in node.outputs)
        for o in node.outputs:
            if id(o) not in names.ids:
                names.assign(o)
            symbols += [s for s in sorted(free_symbols(o.shape)) if s not in symbols]
        entry = REGISTRY.lookup(node.op)
        if entry.signature.fragment:
            add_fragment(fragments, node.op)
        for attr in entry.signature.fragment_refs:
            add_fragment(fragments, node.attrs[attr])
        uses_transformers |= node.op.startswith("tract_transformers.")
        lhs = ", ".join(names[o] for o in node.outputs)
        lhs = f"( {lhs} )" if len(node.outputs) > 1 else lhs
        stmts.append(Statement(lhs, nnef_call_name(node.op), _call_args(node, names, folded)))
    exts = ["tract_registry tract_core"]
    if uses_transformers or any("tract_transformers_" in text for text in fragments.values()):
        exts.append("tract_registry tract_transformers")
    return NnefDocument(
        name=_IDENT_BAD.sub("_", g.name) or "main", extensions=exts, symbols=symbols, assertions=list(g.assertions),
        fragments=list(fragments.values()), inputs=[names[v] for v in g.inputs],
        outputs=[names[v] for v in g.outputs], statements=stmts, labels=labels,
    )
