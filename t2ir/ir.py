"""The SSA IR core: values, nodes, graphs and the one edit API that keeps use-lists right.

Invariants (checked by `t2ir.verify`):
- every value is defined once: a graph input, a constant, or one output of one node;
- nodes are kept in a topological order in a doubly linked list;
- `value.uses` lists exactly the (node, input index) pairs reading the value;
- value names are unique in a graph.

Edits go through methods only: `Node.inputs`, `Node.outputs` and the graph's `inputs`, `consts`
and `outputs` are read-only tuples, changed by `set_input`, `add_input`, `set_outputs`, ... so the
use-lists can never drift. A graph output counts as a use of its value (`Value.num_uses`).

Editing while iterating is safe: an erased node keeps a link to the node that followed it, so a
walk over `graph.nodes` continues correctly whichever nodes a rewrite erases, the current one
included. Nodes inserted after the current one are visited; nodes inserted before it are not.
"""

from __future__ import annotations

import abc
import contextlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from t2ir.types import DType, TensorType

# Attribute values are plain data: None, bool, int, float, str, DType, dims (ints or sympy
# expressions) and lists/tuples of those.
Attr = Any


@dataclass(frozen=True)
class Loc:
    """Where a node came from: a module path and a Python source line, for error messages."""

    module: str = ""
    file: str = ""
    line: int = 0

    def __bool__(self) -> bool:
        return bool(self.module or self.file)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file else ""
        if self.module and where:
            return f"{self.module} ({where})"
        return self.module or where


class TensorSource(abc.ABC):
    """A lazy handle on a constant's bytes: nothing is read until `load()` is called."""

    @abc.abstractmethod
    def load(self):  # -> torch.Tensor
        """Read the tensor (called once per write, one constant at a time)."""

    def describe(self) -> str:
        return type(self).__name__


@dataclass
class InMemory(TensorSource):
    """A tensor already in memory (small models, folded constants)."""

    tensor: Any

    def load(self):
        return self.tensor

    def describe(self) -> str:
        return "memory"


@dataclass
class SafetensorsEntry(TensorSource):
    """One tensor of a safetensors file, read (memory-mapped) only when needed."""

    path: str
    key: str

    def load(self):
        from safetensors import safe_open

        with safe_open(self.path, framework="pt") as f:
            return f.get_tensor(self.key)

    def describe(self) -> str:
        return f"safetensors:{self.key}"


@dataclass
class Derived(TensorSource):
    """A tensor computed from other sources on demand (folded transposes, casts, ...)."""

    fn: Callable[..., Any]
    sources: tuple[TensorSource, ...]
    what: str = "derived"

    def load(self):
        return self.fn(*(s.load() for s in self.sources))

    def describe(self) -> str:
        return self.what


class Detached(TensorSource):
    """The handle of a constant read back from IR text: its data is not part of the dump."""

    def load(self):
        raise RuntimeError("this constant was parsed from IR text and has no data attached")

    def describe(self) -> str:
        return "detached"


@dataclass
class Constant:
    """A weight or other constant tensor: its label (the .dat name) and how to get its bytes.

    `encoding` says how the emitter stores it: "plain" or a registered compression method such
    as "q4_0".
    """

    label: str
    source: TensorSource
    encoding: str = "plain"


@dataclass(eq=False)
class Use:
    node: "Node"
    index: int


class Value:
    """An SSA value. Exactly one of: graph input, constant, or output of `producer`."""

    __slots__ = ("name", "type", "producer", "const", "uses", "graph", "output_uses")

    def __init__(self, name: str, type: TensorType, producer: Optional["Node"] = None,
                 const: Optional[Constant] = None):
        self.name = name
        self.type = type
        self.producer = producer
        self.const = const
        self.uses: list[Use] = []      # reads by nodes
        self.output_uses = 0           # times it is listed among the graph outputs
        self.graph: Optional[Graph] = None

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self):
        return self.type.shape

    @property
    def rank(self) -> int:
        return self.type.rank

    @property
    def users(self) -> list["Node"]:
        seen: dict[int, Node] = {}
        for u in self.uses:
            seen.setdefault(id(u.node), u.node)
        return list(seen.values())

    @property
    def num_uses(self) -> int:
        """Reads by nodes plus appearances among the graph outputs."""
        return len(self.uses) + self.output_uses

    @property
    def is_used(self) -> bool:
        return bool(self.uses) or self.output_uses > 0

    @property
    def is_output(self) -> bool:
        return self.output_uses > 0

    @property
    def is_input(self) -> bool:
        return self.producer is None and self.const is None

    def replace_all_uses_with(self, other: "Value") -> None:
        """Point every reader of this value (and graph outputs) at `other`."""
        if other is self:
            return
        for use in list(self.uses):
            use.node.set_input(use.index, other)
        if self.graph is not None and self.output_uses:
            self.graph.replace_output(self, other)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """An operation: namespaced op name, input values, plain-data attributes, output values."""

    __slots__ = ("op", "_inputs", "attrs", "_outputs", "loc", "graph", "_prev", "_next")

    def __init__(self, op: str, inputs: Sequence[Value], attrs: dict[str, Attr],
                 outputs: Sequence[Value], loc: Loc = Loc()):
        self.op = op
        self._inputs: list[Value] = []
        self.attrs = dict(attrs)
        self._outputs = tuple(outputs)
        self.loc = loc
        self.graph: Optional[Graph] = None
        self._prev: Optional[Node] = None
        self._next: Optional[Node] = None
        for o in self._outputs:
            o.producer = self
        for v in inputs:
            self._append_input(v)

    @property
    def inputs(self) -> tuple[Value, ...]:
        """Read-only: change inputs with `set_input` / `set_inputs`."""
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[Value, ...]:
        return self._outputs

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs, not one")
        return self.outputs[0]

    @property
    def namespace(self) -> str:
        return self.op.split(".", 1)[0]

    def _append_input(self, v: Value) -> None:
        if not isinstance(v, Value):
            raise TypeError(f"node {self.op}: input must be a Value, got {type(v).__name__}")
        v.uses.append(Use(self, len(self._inputs)))
        self._inputs.append(v)

    def set_input(self, index: int, v: Value) -> None:
        if not isinstance(v, Value):
            raise TypeError(f"node {self.op}: input must be a Value, got {type(v).__name__}")
        old = self._inputs[index]
        old.uses = [u for u in old.uses if not (u.node is self and u.index == index)]
        v.uses.append(Use(self, index))
        self._inputs[index] = v

    def set_inputs(self, values: Sequence[Value]) -> None:
        self._drop_input_uses()
        self._inputs = []
        for v in values:
            self._append_input(v)

    def _drop_input_uses(self) -> None:
        for i, v in enumerate(self._inputs):
            v.uses = [u for u in v.uses if not (u.node is self and u.index == i)]

    def __repr__(self) -> str:
        ins = ", ".join(f"%{v.name}" for v in self.inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        return f"{outs} = {self.op}({ins})"


_NAME_OK = re.compile(r"[A-Za-z0-9_.]+")
_SYMBOL_OK = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# tract_assert syntax: an optional scenario name, then one comparison of dimension expressions
_ASSERTION = re.compile(r"(?:(?P<scenario>[A-Za-z_][A-Za-z0-9_]*) ?: ?)?(?P<lhs>[^<>=:]+?) ?(?P<op>==|<=|>=|<|>) ?"
                        r"(?P<rhs>[^<>=:]+)")


class InvalidNameError(ValueError):
    """A value or symbol name the IR text cannot hold."""


def check_name(name: str, what: str = "value name") -> str:
    """`name` itself when the IR text can hold it (letters, digits, '_' and '.'), else an error."""
    if not isinstance(name, str) or not _NAME_OK.fullmatch(name):
        raise InvalidNameError(f"invalid {what} {name!r}: use letters, digits, '_' and '.' only")
    return name


def _tuple_view(attr: str, doc: str) -> property:
    """A read-only tuple view of a private list attribute."""
    return property(lambda self: tuple(getattr(self, attr)), doc=doc)


class Graph:
    """Inputs, constants, nodes in topological order, and named outputs."""

    def __init__(self, name: str = "main"):
        self.name = check_name(name, "graph name")
        self._inputs: list[Value] = []
        self._consts: list[Value] = []
        self._outputs: list[Value] = []
        self._symbols: list[str] = []
        self._assertions: list[str] = []
        self._head: Optional[Node] = None
        self._tail: Optional[Node] = None
        self._names: dict[str, Value] = {}
        self._insert_before: Optional[Node] = None
        self._counter = 0
        self.default_loc = Loc()
        self._observers: list[Callable[[Node, Optional[Node]], None]] = []

    # ---- read-only views (edits go through the methods below) ----------------------------------
    inputs = _tuple_view("_inputs", "The graph inputs, in signature order.")
    consts = _tuple_view("_consts", "The constants (weights), in declaration order.")
    outputs = _tuple_view("_outputs", "The graph outputs (a value may appear twice).")
    symbols = _tuple_view("_symbols", "The declared dimension symbols.")
    assertions = _tuple_view("_assertions", "Facts about the symbols, in tract's syntax (`S >= 1`, `tg: S == 1`).")

    # ---- names -------------------------------------------------------------------------
    def fresh_name(self, hint: str = "v") -> str:
        """A value name not used yet, derived from `hint` (sanitised for the IR text)."""
        base = "_".join(_NAME_OK.findall(hint)) or "v"
        if base not in self._names:
            return base
        while True:
            self._counter += 1
            name = f"{base}_{self._counter}"
            if name not in self._names:
                return name

    def value(self, name: str) -> Value:
        return self._names[name]

    def has_name(self, name: str) -> bool:
        return name in self._names

    def values(self) -> Iterator[Value]:
        """Every value defined in the graph (inputs, constants, node outputs)."""
        return iter(list(self._names.values()))

    def _register(self, v: Value) -> Value:
        check_name(v.name)
        if v.name in self._names:
            raise ValueError(f"value name %{v.name} is already defined")
        v.graph = self
        self._names[v.name] = v
        return v

    def rename(self, v: Value, new_name: str) -> None:
        if new_name == v.name:
            return
        check_name(new_name)
        if new_name in self._names:
            raise ValueError(f"value name %{new_name} is already defined")
        del self._names[v.name]
        v.name = new_name
        self._names[new_name] = v

    # ---- definitions ----------------------------------------------------------------------
    def add_input(self, name: str, type: TensorType) -> Value:
        v = self._register(Value(self.fresh_name(name), type))
        self._inputs.append(v)
        return v

    def set_inputs(self, values: Sequence[Value]) -> None:
        """Reorder the inputs, or drop unused ones: `values` must be a subset of them."""
        current = set(map(id, self._inputs))
        if any(id(v) not in current for v in values) or len(set(map(id, values))) != len(values):
            raise ValueError("set_inputs takes the graph's own inputs, each once")
        kept = set(map(id, values))
        for v in self._inputs:
            if id(v) not in kept:
                if v.is_used:
                    raise ValueError(f"cannot drop input %{v.name}: it is still used")
                del self._names[v.name]
                v.graph = None
        self._inputs = list(values)

    def add_const(self, name: str, type: TensorType, source: TensorSource,
                  label: Optional[str] = None, encoding: str = "plain") -> Value:
        v = Value(self.fresh_name(name), type, const=Constant(label or name, source, encoding))
        self._consts.append(self._register(v))
        return v

    def declare_symbol(self, name: str) -> None:
        if not isinstance(name, str) or not _SYMBOL_OK.fullmatch(name):
            raise InvalidNameError(f"invalid symbol name {name!r}: use letters, digits and '_'")
        if name not in self._symbols:
            self._symbols.append(name)

    def add_assertion(self, text: str) -> None:
        """Record a fact about the symbols that tract may use (`extension tract_assert ...`):
        `S >= 1`, `S + P < 4096`, or a named scenario `tg: S == 1`. Symbols must be declared."""
        text = " ".join(str(text).split())
        m = _ASSERTION.fullmatch(text)
        if not m:
            raise ValueError(f"invalid assertion {text!r}: write `[name:] EXPR OP EXPR` with OP one of "
                             "==, <=, >=, <, >")
        from t2ir.types import free_symbols, parse_dim

        try:
            used = free_symbols((parse_dim(m["lhs"]), parse_dim(m["rhs"])))
        except Exception:
            raise ValueError(f"invalid assertion {text!r}: its sides are not dimension expressions") from None
        undeclared = sorted(used - set(self._symbols))
        if undeclared:
            raise ValueError(f"assertion {text!r} uses undeclared symbols {undeclared}")
        if text not in self._assertions:
            self._assertions.append(text)

    def set_outputs(self, values: Sequence[Value]) -> None:
        for v in self._outputs:
            v.output_uses -= 1
        for v in values:
            if not isinstance(v, Value) or v.graph is not self:
                raise ValueError(f"graph output {v!r} is not a value of this graph")
            v.output_uses += 1
        self._outputs = list(values)

    def set_output(self, index: int, v: Value) -> None:
        outs = list(self._outputs)
        outs[index] = v
        self.set_outputs(outs)

    def replace_output(self, old: Value, new: Value) -> None:
        """Every appearance of `old` among the outputs becomes `new`."""
        self.set_outputs([new if o is old else o for o in self._outputs])

    # ---- nodes ------------------------------------------------------------------------------
    @property
    def nodes(self) -> Iterator[Node]:
        """The nodes in order; see the module docstring for what edits during the walk do."""
        node = self._head
        while node is not None:
            if node.graph is self:
                yield node
            node = node._next  # an erased node still links to its successor at erase time

    def __len__(self) -> int:
        return sum(1 for _ in self.nodes)

    @contextlib.contextmanager
    def observe(self, fn: Callable[[Node, Optional[Node]], None]):
        """Inside the block, `fn(node, anchor)` sees every node added; `anchor` is the node new
        nodes are inserted before (the node a rewrite or translation replaces), or None."""
        self._observers.append(fn)
        try:
            yield
        finally:
            self._observers.remove(fn)

    @contextlib.contextmanager
    def inserting_before(self, node: Optional[Node]):
        """New nodes made inside this block go before `node` (None: at the end)."""
        saved, saved_loc = self._insert_before, self.default_loc
        self._insert_before = node
        if node is not None and node.loc:
            self.default_loc = node.loc
        try:
            yield
        finally:
            self._insert_before, self.default_loc = saved, saved_loc

    def add_node(self, op: str, inputs: Sequence[Value], out_types: Sequence[TensorType],
                 attrs: Optional[dict[str, Attr]] = None, *, name: Optional[str] = None,
                 loc: Optional[Loc] = None) -> Node:
        """Create a node at the insertion point; its outputs get fresh names from `name`."""
        hint = name or op.rsplit(".", 1)[-1]
        outputs = []
        for i, t in enumerate(out_types):
            outputs.append(self._register(Value(self.fresh_name(hint if i == 0 else f"{hint}_{i}"), t)))
        node = Node(op, inputs, attrs or {}, outputs, loc if loc is not None else self.default_loc)
        self._link(node, self._insert_before)
        for fn in self._observers:
            fn(node, self._insert_before)
        return node

    def op(self, op: str, inputs: Sequence[Value], out_type: TensorType, name: Optional[str] = None,
           **attrs: Attr) -> Value:
        """Shorthand for one-output nodes: returns the output value."""
        return self.add_node(op, inputs, [out_type], attrs, name=name).output

    def _link(self, node: Node, before: Optional[Node]) -> None:
        if before is not None and before.graph is not self:
            raise ValueError(f"cannot insert before {before!r}: it is not in this graph")
        node.graph = self
        if before is None:
            node._prev, node._next = self._tail, None
            if self._tail is not None:
                self._tail._next = node
            else:
                self._head = node
            self._tail = node
        else:
            node._prev, node._next = before._prev, before
            if before._prev is not None:
                before._prev._next = node
            else:
                self._head = node
            before._prev = node

    def move_before(self, node: Node, anchor: Node) -> None:
        """Move `node` before `anchor` (a walk at `node` continues from its new place)."""
        self._unlink(node)
        self._link(node, anchor)

    def _unlink(self, node: Node) -> None:
        """Take `node` out of the list; its own `_next` is kept so a walk standing on it goes on."""
        if node._prev is not None:
            node._prev._next = node._next
        else:
            self._head = node._next
        if node._next is not None:
            node._next._prev = node._prev
        else:
            self._tail = node._prev
        node._prev = None

    def erase_node(self, node: Node) -> None:
        """Remove a node whose outputs are unused (refused otherwise, to keep SSA valid)."""
        if node.graph is not self:
            raise ValueError(f"cannot erase {node!r}: it is not in this graph")
        for o in node.outputs:
            if o.is_used:
                raise ValueError(f"cannot erase {node!r}: %{o.name} is still used")
        node._drop_input_uses()
        node._inputs = []
        self._unlink(node)
        for o in node.outputs:
            del self._names[o.name]
            o.graph = None
        node.graph = None

    def replace_node(self, node: Node, new_outputs: Sequence[Value]) -> None:
        """Redirect the uses of `node`'s outputs to `new_outputs`, then erase it."""
        for old, new in zip(node.outputs, new_outputs, strict=True):
            old.replace_all_uses_with(new)
        self.erase_node(node)

    def remove_const(self, v: Value) -> None:
        if v.is_used:
            raise ValueError(f"cannot remove constant %{v.name}: still used")
        self._consts.remove(v)
        del self._names[v.name]
        v.graph = None

    def __str__(self) -> str:
        from t2ir.printer import print_graph

        return print_graph(self)
