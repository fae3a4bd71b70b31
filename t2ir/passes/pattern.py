"""Declarative patterns over the IR: what a rewrite rule looks for, kept apart from what it builds.

    x = var("x")
    silu = op(MUL, x, op("aten.sigmoid", x), commute=True)     # x * sigmoid(x), either order

A pattern matches an *operand*: a Value, or a literal torch passed as an argument (the 0.5 of
`x * 0.5`, the `dim=-1` of a softmax). Matching yields every way a pattern fits (both orders of a
commutative op, each alternative of `p | q`) as a dict of captures; a name captured twice must
capture the same thing, which is how `x * sigmoid(x)` insists on one `x`.

`op(...)` matches the node that produces the operand. Its positional patterns match the node's
arguments in their torch schema order (`self, other` for `aten.mul.Tensor`; exactly the inputs
for ops without a torch schema such as `t2ir.*` and NNEF-level ops); keyword patterns match
arguments or attributes by name (`any_()` also accepts an argument the op does not have). A
schema argument the pattern does not mention must hold its default value (so `add` with
`alpha=2` is not an `add`), except those that never change the values computed (`device`,
`memory_format`, ...). A bare `op(NAMES)` matches those nodes whatever their arguments.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import sympy

from t2ir.ir import Node, Value

Captures = dict[str, Any]
OpNames = Union[str, Iterable[str]]
_UNSET = object()
# Schema arguments that never change what an op computes: left unconstrained when unmentioned.
IGNORED_ARGS = frozenset({"device", "layout", "pin_memory", "non_blocking", "memory_format", "copy", "output_size"})


class Pattern:
    """Base of every pattern: `match(subject, captures)` yields each extended set of captures."""

    def match(self, subject: Any, caps: Captures) -> Iterator[Captures]:
        raise NotImplementedError

    def __or__(self, other: "Pattern") -> "Pattern":
        return Alt((self, other))

    def first(self, subject: Any) -> Optional[Captures]:
        """The first way `subject` matches, or None."""
        return next(self.match(subject, {}), None)


def bind(caps: Captures, name: Optional[str], value: Any) -> Optional[Captures]:
    """`caps` plus name -> value; None when the name is already bound to something else."""
    if name is None:
        return caps
    if name in caps:
        return caps if same(caps[name], value) else None
    return {**caps, name: value}


def same(a: Any, b: Any) -> bool:
    """Identity for values, equality for literals (floats within 1e-6, dims symbolically)."""
    if isinstance(a, Value) or isinstance(b, Value):
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if is_number(a) and is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0) or float(a) == float(b)
    if isinstance(a, sympy.Basic) or isinstance(b, sympy.Basic):
        try:
            return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0
        except (sympy.SympifyError, TypeError):
            return False
    return type(a) is type(b) and a == b


def is_number(x: Any) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


class Leaf(Pattern):
    """A pattern on the subject alone (no operands): `accepts` decides, then the name binds it."""

    name: Optional[str] = None

    def accepts(self, subject: Any) -> bool:
        raise NotImplementedError

    def match(self, subject, caps):
        if self.accepts(subject):
            c = bind(caps, self.name, subject)
            if c is not None:
                yield c


class Any_(Leaf):
    """Anything at all (a Value, a literal, None)."""

    def __init__(self, name: Optional[str] = None):
        self.name = name

    def accepts(self, subject) -> bool:
        return True


class Var(Leaf):
    """A tensor operand (a Value), optionally of a dtype / rank, or satisfying `where(value)`."""

    def __init__(self, name: Optional[str] = None, *, dtype=None, rank: Optional[int] = None,
                 where: Optional[Callable[[Value], bool]] = None):
        self.name, self.dtype, self.rank, self.where = name, dtype, rank, where

    def accepts(self, subject) -> bool:
        return (isinstance(subject, Value) and (self.dtype is None or subject.dtype == self.dtype)
                and (self.rank is None or subject.rank == self.rank) and (self.where is None or self.where(subject)))


class Lit(Leaf):
    """A literal argument (not a tensor): equal to `value` when given, or satisfying `where`."""

    def __init__(self, value: Any = _UNSET, *, name: Optional[str] = None,
                 where: Optional[Callable[[Any], bool]] = None):
        self.value, self.name, self.where = value, name, where

    def accepts(self, subject) -> bool:
        return (not isinstance(subject, Value) and (self.value is _UNSET or same(subject, self.value))
                and (self.where is None or self.where(subject)))


class Alt(Pattern):
    """The alternatives in order: every match of the first, then of the second, ..."""

    def __init__(self, options: Sequence[Pattern]):
        flat: list[Pattern] = []
        for p in options:
            flat += p.options if isinstance(p, Alt) else [p]
        self.options = tuple(flat)

    def match(self, subject, caps):
        for p in self.options:
            yield from p.match(subject, caps)

    @property
    def ops(self) -> frozenset[str]:
        """The root ops of alternatives that are all `op(...)` (a rule may be rooted at them)."""
        if not all(isinstance(p, Op) for p in self.options):
            raise TypeError("a rule rooted at alternatives needs op(...) in every alternative")
        return frozenset().union(*(p.ops for p in self.options))

    @property
    def name(self) -> Optional[str]:
        return None

    def match_node(self, node: Node, caps: Optional[Captures]) -> Iterator[Captures]:
        for p in self.options:
            if isinstance(p, Op):
                yield from p.match_node(node, bind(caps, p.name, node.outputs[0]) if caps is not None else None)


class Skip(Pattern):
    """`inner`, reached by walking back through zero or more producers that `over` accepts
    (an op set, or a predicate on the node), following their first input."""

    def __init__(self, over: Union[OpNames, Callable[[Node], bool]], inner: Pattern):
        self.over = over if callable(over) else _op_set(over).__contains__
        self.takes_node = callable(over)
        self.inner = inner

    def _accepts(self, node: Node) -> bool:
        return bool(node.inputs) and (self.over(node) if self.takes_node else self.over(node.op))

    def match(self, subject, caps):
        seen = 0
        while True:
            yield from self.inner.match(subject, caps)
            p = subject.producer if isinstance(subject, Value) else None
            if p is None or not self._accepts(p) or seen > 64:
                return
            subject, seen = p.inputs[0], seen + 1


ArgPattern = Union[Pattern, Sequence["ArgPattern"], Callable[[Any], bool], Any]


class Op(Pattern):
    """The node producing the operand has one of `ops`, and its arguments match.

    `commute` also tries the first two positional arguments swapped. `one_use` requires the
    operand to have exactly one use (so absorbing it into a fused node duplicates nothing).
    `where(args)` is a predicate on the node's arguments by name. Keyword values may be patterns,
    predicates on the argument, or plain values it must equal.
    """

    def __init__(self, ops: OpNames, *args: ArgPattern, commute: bool = False, name: Optional[str] = None,
                 one_use: bool = False, where: Optional[Callable[[dict], bool]] = None, **kwargs: ArgPattern):
        self.ops = _op_set(ops)
        self.args, self.kwargs = args, kwargs
        self.commute, self.name, self.one_use, self.where = commute, name, one_use, where
        if commute and len(args) < 2:
            raise ValueError("commute=True needs two positional argument patterns")

    def match(self, subject, caps):
        if not isinstance(subject, Value) or subject.producer is None:
            return
        if self.one_use and subject.num_uses != 1:
            return
        node = subject.producer
        if len(node.outputs) == 1 or subject is node.outputs[0]:
            yield from self.match_node(node, bind(caps, self.name, subject))

    def match_node(self, node: Node, caps: Optional[Captures]) -> Iterator[Captures]:
        """Match `node` itself (the driver starts here, at a rule's root)."""
        if caps is None or node.op not in self.ops:
            return
        named = arguments(node)
        values = list(named.values())
        if len(self.args) > len(values) or not self._unmentioned_are_default(node, named):
            return
        if self.args and _schema(node.op) is None and len(self.args) != len(node.inputs):
            return  # ops without a schema: positional patterns cover exactly the inputs
        orders = [self.args]
        if self.commute:
            orders.append((self.args[1], self.args[0], *self.args[2:]))
        for patterns in orders:
            for c in _match_all(patterns, values[: len(patterns)], caps):
                for c2 in _match_all(tuple(self.kwargs.values()), [named.get(k, _UNSET) for k in self.kwargs], c):
                    if self.where is None or self.where(named):
                        yield c2

    def _unmentioned_are_default(self, node: Node, named: dict) -> bool:
        """Bare `op(NAMES)` takes any arguments; otherwise unmentioned ones hold their defaults."""
        defaults = schema_defaults(node.op)
        if not defaults or not (self.args or self.kwargs):
            return True
        positional = list(named)[: len(self.args)]
        for arg, default in defaults.items():
            if arg in self.kwargs or arg in positional or arg in IGNORED_ARGS:
                continue
            if not same(named.get(arg), default):
                return False
        return True


def _match_all(patterns: Sequence[ArgPattern], subjects: Sequence[Any], caps: Captures) -> Iterator[Captures]:
    """Match patterns to subjects pairwise, backtracking over every way each one fits."""
    if not patterns:
        yield caps
        return
    for c in _match_arg(patterns[0], subjects[0], caps):
        yield from _match_all(patterns[1:], subjects[1:], c)


def _match_arg(p: ArgPattern, subject: Any, caps: Captures) -> Iterator[Captures]:
    if subject is _UNSET:  # an argument this op does not have: only any_() accepts that
        if isinstance(p, Any_):
            c = bind(caps, p.name, None)
            if c is not None:
                yield c
        return
    if isinstance(p, Pattern):
        yield from p.match(subject, caps)
    elif isinstance(p, (list, tuple)):
        if isinstance(subject, (list, tuple)) and len(subject) == len(p):
            yield from _match_all(p, subject, caps)
    elif callable(p):
        if p(subject):
            yield caps
    elif same(subject, p):
        yield caps


def _op_set(ops: OpNames) -> frozenset[str]:
    return frozenset({ops}) if isinstance(ops, str) else frozenset(ops)


# ---- arguments by name ------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _schema(op: str):
    """The torch schema behind an op name, or None (t2ir.*, NNEF-level and unknown ops)."""
    if op.split(".", 1)[0] in ("t2ir", "nnef", "tract_core", "tract_transformers", "fragment"):
        return None
    from t2ir.ops.context import torch_schema

    try:
        return torch_schema(op)
    except (AttributeError, RuntimeError):
        return None


@functools.lru_cache(maxsize=None)
def schema_defaults(op: str) -> dict[str, Any]:
    schema = _schema(op)
    if schema is None:
        return {}
    return {a.name: a.default_value for a in schema.arguments if a.has_default_value()}


def arguments(node: Node) -> dict[str, Any]:
    """The node's arguments by name: torch schema order for torch ops; otherwise inputs as
    `0, 1, ...` followed by the attributes."""
    if _schema(node.op) is not None:
        from t2ir.ops.context import schema_args

        return schema_args(node)
    named: dict[str, Any] = {str(i): v for i, v in enumerate(node.inputs)}
    named.update(node.attrs)
    return named


# ---- constructors (the public spelling) --------------------------------------------------------

def op(ops: OpNames, *args: ArgPattern, **kwargs: Any) -> Op:
    """`op(MUL, x, y, commute=True)`: see `Op`."""
    return Op(ops, *args, **kwargs)


def var(name: Optional[str] = None, **kwargs: Any) -> Var:
    """A tensor operand, captured as `name`: see `Var`."""
    return Var(name, **kwargs)


def lit(value: Any = _UNSET, **kwargs: Any) -> Lit:
    """A literal argument: `lit(0.5)`, `lit(name="eps")`, `lit(where=lambda d: d < 0)`."""
    return Lit(value, **kwargs)


def any_(name: Optional[str] = None) -> Any_:
    """Anything, captured as `name` (a tensor, a literal, None)."""
    return Any_(name)


def skip(over: Union[OpNames, Callable[[Node], bool]], inner: Pattern) -> Skip:
    """`inner` behind zero or more ops of `over`: `skip(CASTS, op("t2ir.rms_norm", x))`."""
    return Skip(over, inner)


def one_of(*options: Pattern) -> Alt:
    return Alt(options)
