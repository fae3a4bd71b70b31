"""Reads the IR text written by `t2ir.printer` back into a Graph (weights come back detached)."""

from __future__ import annotations

import json
import re

from t2ir.ir import Detached, Graph, Loc
from t2ir.types import DType, TensorType, parse_dim
from t2ir.verify import IRVerifyError, verify


class IRParseError(ValueError):
    """Malformed IR text; the message starts with `line:column`."""

    def __init__(self, line: int, col: int, msg: str, text: str = ""):
        pointer = f"\n    {text}\n    {' ' * (col - 1)}^" if text else ""
        super().__init__(f"{line}:{col}: {msg}{pointer}")
        self.line, self.col = line, col


_NAME = r"%([A-Za-z0-9_.]+)"
_KEYWORDS = {"none": None, "true": True, "false": False, "inf": float("inf"),
             "-inf": float("-inf"), "nan": float("nan")}
_DTYPES = {d.value: d for d in DType}


class _Cursor:
    """A position in one line, with errors that point at the column."""

    def __init__(self, text: str, lineno: int):
        self.text, self.lineno, self.pos = text, lineno, 0

    def error(self, msg: str, pos: int | None = None) -> IRParseError:
        return IRParseError(self.lineno, (self.pos if pos is None else pos) + 1, msg, self.text)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, s: str) -> None:
        self.skip_ws()
        if not self.text.startswith(s, self.pos):
            raise self.error(f"expected {s!r}")
        self.pos += len(s)

    def accept(self, s: str) -> bool:
        self.skip_ws()
        if self.text.startswith(s, self.pos):
            self.pos += len(s)
            return True
        return False

    def match(self, pattern: str, what: str) -> re.Match:
        self.skip_ws()
        m = re.compile(pattern).match(self.text, self.pos)
        if not m:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)


def _split_comment(line: str) -> tuple[str, str]:
    """Split off a trailing `# loc` comment that is not inside a string."""
    in_str = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            in_str = not in_str
        elif ch == "#" and not in_str:
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


_LOC = re.compile(r"^(?P<module>[^\s(]*)\s*(?:\((?P<file>.+):(?P<line>\d+)\))?$")


def _parse_loc(comment: str) -> Loc:
    m = _LOC.match(comment)
    if not m:
        return Loc(module=comment)
    return Loc(m["module"] or "", m["file"] or "", int(m["line"] or 0))


def _dim_text(c: _Cursor, stop: str = ",]") -> str:
    """The text of one dimension (or atom): up to the next `stop` character outside
    parentheses (`Min(S, 4)`, `floor(3*S/(S - floor(2*S/3)))`)."""
    c.skip_ws()
    depth, start = 0, c.pos
    while c.pos < len(c.text):
        ch = c.text[c.pos]
        if ch in stop and depth == 0:
            break
        depth += (ch == "(") - (ch == ")")
        c.pos += 1
    if c.pos == start:
        raise c.error("expected a dimension")
    return c.text[start:c.pos]


def parse_type(c: _Cursor) -> TensorType:
    c.skip_ws()
    start = c.pos
    name = c.match(r"[a-z0-9]+", "a type like f32[2, S]").group(0)
    if name not in _DTYPES:
        raise c.error(f"unknown element type {name!r}", start)
    c.expect("[")
    dims = []
    while c.peek() != "]":
        text = _dim_text(c)
        try:
            dims.append(parse_dim(text))
        except Exception:
            raise c.error(f"bad dimension {text.strip()!r}", c.pos - len(text)) from None
        if not c.accept(","):
            break
    c.expect("]")
    return TensorType(_DTYPES[name], tuple(dims))


def parse_attr(c: _Cursor):
    """One attribute value: literal, list, string, dtype or dimension expression."""
    ch = c.peek()
    if ch in "[(":
        close = "]" if ch == "[" else ")"
        c.expect(ch)
        items = []
        while c.peek() != close:
            items.append(parse_attr(c))
            if not c.accept(","):
                break
        c.expect(close)
        return items if ch == "[" else tuple(items)
    if ch == '"':
        m = c.match(r'"(?:[^"\\]|\\.)*"', "a string")
        return json.loads(m.group(0))
    start = c.pos
    atom = _dim_text(c, stop=",])").strip()
    if atom in _KEYWORDS:
        return _KEYWORDS[atom]
    if atom in _DTYPES:
        return _DTYPES[atom]
    if re.fullmatch(r"-?\d+", atom):
        return int(atom)
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", atom):
        return float(atom)
    try:
        return parse_dim(atom)
    except Exception:
        raise c.error(f"cannot read attribute value {atom!r}", start) from None


def _value(c: _Cursor, g: Graph):
    c.skip_ws()
    start = c.pos
    name = c.match(_NAME, "a value like %x").group(1)
    try:
        return g.value(name)
    except KeyError:
        raise c.error(f"value %{name} is used before it is defined", start) from None


def _parse_node(c: _Cursor, g: Graph, loc: Loc) -> None:
    out_names = [c.match(_NAME, "an output value like %y").group(1)]
    while c.accept(","):
        out_names.append(c.match(_NAME, "an output value").group(1))
    c.expect("=")
    op = c.match(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+", "an op name like aten.add").group(0)
    c.expect("(")
    inputs, attrs = [], {}
    while c.peek() != ")":
        if c.peek() == "%":
            if attrs:
                raise c.error("inputs must come before attributes")
            inputs.append(_value(c, g))
        else:
            key = c.match(r"[A-Za-z_][A-Za-z0-9_]*", "an attribute name").group(0)
            c.expect("=")
            attrs[key] = parse_attr(c)
        if not c.accept(","):
            break
    c.expect(")")
    c.expect(":")
    types = [parse_type(c)]
    while c.accept(","):
        types.append(parse_type(c))
    if len(types) != len(out_names):
        raise c.error(f"{len(out_names)} outputs but {len(types)} types")
    for name in out_names:
        if g.has_name(name):
            raise c.error(f"value %{name} is defined twice")
    node = g.add_node(op, inputs, types, attrs, loc=loc)
    for v, name in zip(node.outputs, out_names):
        g.rename(v, name)


def parse_ir(text: str) -> Graph:
    """Parse IR text into a Graph and verify it. Errors are `IRParseError` with line:column.

    >>> g = parse_ir('graph g\\ninput %x : f32[2]\\n%y = aten.relu(%x) : f32[2]\\noutput %y\\n')
    >>> print(g.outputs[0])
    %y: f32[2]
    """
    g: Graph | None = None
    saw_output = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        body, comment = _split_comment(raw)
        if not body.strip():
            continue
        c = _Cursor(body, lineno)
        if g is None:
            c.expect("graph")
            g = Graph(c.match(r"[A-Za-z0-9_.]+", "a graph name").group(0))
        elif saw_output:
            raise c.error("nothing may follow the output line")
        elif c.accept("symbol "):
            g.declare_symbol(c.match(r"[A-Za-z_][A-Za-z0-9_]*", "a symbol name").group(0))
        elif c.accept("input "):
            name = c.match(_NAME, "an input like %x").group(1)
            c.expect(":")
            g.rename(g.add_input(name, parse_type(c)), name)
        elif c.accept("const "):
            name = c.match(_NAME, "a constant like %w").group(1)
            c.expect(":")
            t = parse_type(c)
            c.expect("=")
            label = json.loads(c.match(r'"(?:[^"\\]|\\.)*"', "a label string").group(0))
            enc = c.match(r"[a-z0-9_]+", "an encoding").group(0) if not c.at_end() else "plain"
            g.rename(g.add_const(name, t, Detached(), label=label, encoding=enc), name)
        elif c.accept("output"):
            outs = []
            while not c.at_end():
                outs.append(_value(c, g))
                if not c.accept(","):
                    break
            g.set_outputs(outs)
            saw_output = True
        else:
            _parse_node(c, g, _parse_loc(comment))
        if not c.at_end():
            raise c.error("unexpected text")
    if g is None:
        raise IRParseError(1, 1, "empty IR text: expected 'graph NAME'")
    if not saw_output:
        raise IRParseError(len(text.splitlines()) + 1, 1, "missing 'output' line")
    try:
        verify(g)
    except IRVerifyError as e:
        raise IRParseError(1, 1, f"the text describes an invalid graph: {e}") from None
    return g
