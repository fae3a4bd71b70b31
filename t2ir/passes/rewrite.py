"""Rewrite rules (a pattern and a replacement) and the driver that applies them to a fixed point.

    x = var("x")

    @rule(op(MUL, x, op("aten.sigmoid", x), commute=True))
    def silu(m: Match) -> Value:   # its docstring is the rule's doc: x * sigmoid(x) -> t2ir.silu(x)
        return m.op("t2ir.silu", [m.x], m.out)

A rule's pattern is rooted at an `op(...)`; the driver offers it only the nodes whose op the root
names. The replacement function receives the `Match` (captures by name, builder methods that insert
before the matched node) and returns the value(s) that replace the root's output(s), or None to
decline. The driver redirects every use, gives the new value the old name (dumps stay readable),
erases what became dead, skips dead nodes, counts hits per rule, and raises `RewriteNotConverged`
naming the rules still firing when its round limit is reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from t2ir.errors import RewriteNotConverged
from t2ir.ir import Graph, Node, Value
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.pattern import Alt, Captures, Op
from t2ir.types import DType, TensorType

Replacement = Union[Value, Sequence[Value], None]
MAX_ROUNDS = 32


class Match:
    """What a replacement function sees: the captures, the matched node and a builder.

    Captures read as attributes (`m.x`) or items (`m["x"]`, `m.get("mask")`). New nodes made with
    `m.op` / `m.cast` go right before the matched node and take its source location.
    """

    def __init__(self, graph: Graph, root: Node, captures: Captures, options: Any):
        self.graph, self.root, self.captures, self.options = graph, root, captures, options

    def __getattr__(self, name: str) -> Any:
        captures = self.__dict__.get("captures", {})
        if name in captures:
            return captures[name]
        raise AttributeError(f"the pattern captured no {name!r} (captured: {', '.join(sorted(captures))})")

    def __getitem__(self, name: str) -> Any:
        return self.captures[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.captures.get(name, default)

    @property
    def out(self) -> TensorType:
        """The type of the matched node's (first) output."""
        return self.root.outputs[0].type

    def op(self, op: str, inputs: Sequence[Value], out_type: TensorType, *, name: Optional[str] = None,
           **attrs: Any) -> Value:
        return self.graph.op(op, list(inputs), out_type, name=name or op.rsplit(".", 1)[-1], **attrs)

    def cast(self, v: Value, dtype: DType) -> Value:
        """`v` as `dtype`, through an explicit aten.to.dtype node unless it already is."""
        return cast_to(self.graph, v, dtype)


@dataclass(frozen=True)
class Rule:
    """A named pattern and its replacement; `doc` is the rule's one-line `before -> after`."""

    name: str
    pattern: Union[Op, Alt]
    replace: Callable[[Match], Replacement]
    doc: str = ""

    def try_at(self, graph: Graph, node: Node, options: Any) -> bool:
        """Rewrite at `node` with the first match whose replacement is accepted."""
        root = {} if self.pattern.name is None else {self.pattern.name: node.outputs[0]}
        for caps in self.pattern.match_node(node, root):
            before = node._prev
            with graph.inserting_before(node):
                new = self.replace(Match(graph, node, caps, options))
            created = _nodes_between(before, node)
            if new is not None:
                new = [new] if isinstance(new, Value) else list(new)
                if _replace_outputs(graph, node, new, created):
                    return True
            for n in reversed(created):  # a declined replacement leaves nothing behind
                erase_dead(graph, n, created)
        return False


def rule(pattern: Union[Op, Alt], name: Optional[str] = None):
    """Decorator: the function becomes a Rule named after it (`_` as `-`); its docstring is the doc."""
    if not isinstance(pattern, (Op, Alt)):
        raise TypeError("a rule's pattern must be rooted at op(...) (or alternatives of them)")
    pattern.ops  # noqa: B018  (raises for alternatives that are not all op(...))

    def wrap(fn: Callable[[Match], Replacement]) -> Rule:
        return Rule(name or fn.__name__.replace("_", "-"), pattern, fn, (fn.__doc__ or "").strip())

    return wrap


def _nodes_between(before: Optional[Node], node: Node) -> list[Node]:
    """The nodes inserted right before `node` since `before` was its predecessor, in order."""
    out, n = [], node._prev
    while n is not None and n is not before:
        out.append(n)
        n = n._prev
    return out[::-1]


def _replace_outputs(graph: Graph, node: Node, new: list[Value], created: list[Node]) -> bool:
    """Point the users of `node`'s outputs at `new`. A value the rewrite created takes the old
    name; a graph output keeps its name, so only a created value may replace it."""
    if len(new) != len(node.outputs):
        raise ValueError(f"a rule returned {len(new)} values for {node.op}'s {len(node.outputs)} outputs")
    made = {id(o) for n in created for o in n.outputs}
    if any(old.is_output and id(v) not in made for old, v in zip(node.outputs, new)):
        return False
    for old, v in zip(node.outputs, new):
        if v is old:
            continue
        name = old.name
        old.replace_all_uses_with(v)
        if id(v) in made:
            graph.rename(old, graph.fresh_name(f"{name}_replaced"))
            graph.rename(v, name)
    erase_dead(graph, node)
    return True


def replace_value(graph: Graph, old: Value, new: Value) -> None:
    """Every reader (and graph output) of `old` reads the freshly built `new`, which takes
    `old`'s name so dumps keep the frontend's names (for rewrites outside the rule driver)."""
    name = old.name
    old.replace_all_uses_with(new)
    graph.rename(old, graph.fresh_name(f"{name}_replaced"))
    graph.rename(new, name)


def erase_dead(graph: Graph, node: Node, within: Optional[list[Node]] = None) -> None:
    """Erase `node` if nothing reads it, then each of its producers that became dead (only
    among `within` when given)."""
    allowed = None if within is None else set(map(id, within))
    todo = [node]
    while todo:
        n = todo.pop()
        if n.graph is not graph or is_dead(n) is False or (allowed is not None and id(n) not in allowed):
            continue
        producers = [v.producer for v in n.inputs if v.producer is not None]
        graph.erase_node(n)
        todo += producers


def is_dead(node: Node) -> bool:
    """Nothing reads the node's outputs (and none is a graph output)."""
    return not any(o.is_used for o in node.outputs)


@dataclass(frozen=True)
class RuleSet:
    """Rules offered each node in order (the first that rewrites wins), indexed by root op."""

    rules: tuple[Rule, ...]

    def __init__(self, rules: Iterable[Rule]):
        object.__setattr__(self, "rules", tuple(rules))
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be unique: {names}")
        by_op: dict[str, list[Rule]] = {}
        for r in self.rules:
            for o in r.pattern.ops:
                by_op.setdefault(o, []).append(r)
        object.__setattr__(self, "_by_op", by_op)

    def __add__(self, other: "RuleSet") -> "RuleSet":
        return RuleSet(self.rules + other.rules)

    def for_op(self, op: str) -> list[Rule]:
        return self._by_op.get(op, [])  # type: ignore[attr-defined]

    def apply(self, graph: Graph, options: Any = None, max_rounds: int = MAX_ROUNDS) -> dict[str, int]:
        """Rewrite until no rule matches; returns how often each rule fired."""
        fired: dict[str, int] = {}
        recent: list[dict[str, int]] = []  # the last rounds' hits, to name a cycle of rules
        for _ in range(max_rounds):
            this_round: dict[str, int] = {}
            for node in graph.nodes:
                if node.graph is not graph or is_dead(node):
                    continue
                for r in self.for_op(node.op):
                    if r.try_at(graph, node, options):
                        this_round[r.name] = this_round.get(r.name, 0) + 1
                        break
            if not this_round:
                return fired
            for k, n in this_round.items():
                fired[k] = fired.get(k, 0) + n
            recent = (recent + [this_round])[-3:]
        still = {k: sum(r.get(k, 0) for r in recent) for r in recent for k in r}
        raise RewriteNotConverged(
            f"rewriting did not settle after {max_rounds} rounds; still firing in the last {len(recent)}: "
            + ", ".join(f"{k} ({n}x)" for k, n in sorted(still.items()))
            + ". Two rules probably undo each other, or a rule matches its own replacement.")


def dead_code_elimination(g: Graph) -> int:
    """Erase nodes (last to first) and constants that nothing reads; returns how many."""
    removed = 0
    for node in reversed(list(g.nodes)):
        if is_dead(node):
            g.erase_node(node)
            removed += 1
    for c in g.consts:
        if not c.is_used:
            g.remove_const(c)
            removed += 1
    return removed


def cast_to(g: Graph, v: Value, dtype: DType, name: Optional[str] = None) -> Value:
    """An explicit cast node (aten.to.dtype) unless `v` already has `dtype`."""
    if v.dtype == dtype:
        return v
    return g.op("aten.to.dtype", [v], v.type.with_dtype(dtype), name=name or f"{v.name}_{dtype.value}", dtype=dtype)


def single_user(v: Value) -> Optional[Node]:
    """The only node reading `v` (None when it has several readers or is a graph output)."""
    users = v.users
    return users[0] if len(users) == 1 and not v.is_output else None


class RewritePass(Pass):
    """A pass made of rules: applies them to a fixed point, then sweeps what they left dead.
    Its stats are how often each rule fired.

        my_fusions = RewritePass("my-fusions", [quick_gelu])
        t2ir.register_pass(my_fusions, after="fuse-transformer-ops")
    """

    def __init__(self, name: str, rules: Iterable[Rule], *, requires: Iterable[str] = (),
                 ensures: Iterable[str] = ()):
        self.name = name
        self.rules = RuleSet(rules)
        self.requires = frozenset(requires)
        self.ensures = frozenset(ensures)

    def run(self, graph: Graph, options: Any) -> PassResult:
        fired = self.rules.apply(graph, options)
        if fired:
            dead_code_elimination(graph)
        return PassResult(bool(fired), fired)
