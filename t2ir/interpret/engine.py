"""The reference interpreter: evaluates an IR graph node by node with PyTorch, at any stage of the
pipeline (lifted aten ops, fused t2ir ops, NNEF-level ops), so the tools can say where values go
wrong: `t2ir bisect` compares it with tract node by node, `check_passes` runs it after every pass.

Source-level ops that PyTorch has (`aten.*`, a user's `mylib.*`) run as themselves through
`torch.ops`, called with the node's schema arguments; t2ir's own ops and the NNEF-level ops run
their implementations in `t2ir.interpret.ops`. Symbols (S, P, batch) are bound from the input
shapes (`2*L` solved for L) and from the outputs of the nodes that introduce new ones, constants
are read through their lazy handles one at a time, and values are freed after their last reader
unless asked to be kept.

    values = Interpreter(graph).run([x], keep=True)   # every value, by name
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import sympy
import torch

from t2ir.errors import T2IRError
from t2ir.ir import Graph, Node, Value
from t2ir.ops.context import schema_args, torch_schema
from t2ir.ops.registry import REGISTRY, is_nnef_level
from t2ir.interpret.ops import REFERENCE, Call
from t2ir.types import DType

Tensorish = Union[torch.Tensor, np.ndarray]
WeightLoader = Callable[[Value], torch.Tensor]
ValueHook = Callable[[Node, Value, torch.Tensor], None]


class InterpretError(T2IRError):
    """The reference interpreter cannot evaluate a node (no implementation, or the result does not
    have the type the IR declares)."""


def as_tensor(x: Tensorish) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as numpy (bf16, which numpy lacks, as f32)."""
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def source_weights(v: Value) -> torch.Tensor:
    """A constant from its lazy handle, in the IR's dtype; a packed constant as the values the
    exported model computes with (its compression method's dequantized form)."""
    tensor = v.const.source.load().detach()
    if v.const.encoding != "plain":
        tensor = _dequantized(v.const.encoding, tensor)
    return tensor.to(v.dtype.torch)


def _dequantized(encoding: str, tensor: torch.Tensor) -> torch.Tensor:
    from t2ir.compression.methods import METHODS

    for cls in METHODS.values():
        method = cls(None)
        if method.stored_as == encoding:
            new = method.dequantized(tensor)
            if new is not None:
                return new
    raise InterpretError(f"no compression method stores {encoding!r} weights with a dequantized form")


def bind_symbols(graph: Graph, inputs: Sequence[torch.Tensor]) -> dict[sympy.Symbol, int]:
    """Symbol -> size, read from the input shapes (a declared `2*L` is solved for L)."""
    if len(inputs) != len(graph.inputs):
        raise InterpretError(f"the graph takes {len(graph.inputs)} inputs ({', '.join(v.name for v in graph.inputs)}), "
                             f"got {len(inputs)}")
    sizes: dict[sympy.Symbol, int] = {}
    for v, x in zip(graph.inputs, inputs):
        if x.dim() != v.rank:
            raise InterpretError(f"input %{v.name} is declared {v.type}, got shape {list(x.shape)}")
    for v, x in zip(graph.inputs, inputs):
        bind_dims(v.shape, x.shape, sizes)
    for v, x in zip(graph.inputs, inputs):
        unbound = [d for d in v.shape if isinstance(d, sympy.Expr) and d.free_symbols - sizes.keys()]
        if unbound or [concrete(d, sizes) for d in v.shape] != list(x.shape):
            raise InterpretError(f"input %{v.name} is declared {v.type}, got shape {list(x.shape)} "
                                 f"(with {', '.join(f'{k}={n}' for k, n in sizes.items()) or 'no symbol bound'})")
    return sizes


def bind_dims(dims: Sequence[Any], actual: Sequence[int], sizes: dict[sympy.Symbol, int]) -> None:
    """Adds to `sizes` the symbols that `dims` introduce, from the actual sizes: a plain symbol
    as it is, an expression (`2*L`) solved for its one unknown symbol when that has one
    non-negative integer solution. Symbols a graph introduces (a reshape's `T`) get bound
    where they first show up: the inputs, or the output of the node that makes them."""
    pending = [(d, int(n)) for d, n in zip(dims, actual) if isinstance(d, sympy.Expr) and d.free_symbols]
    progress = True
    while progress:
        progress = False
        for d, n in pending:
            unknown = d.free_symbols - sizes.keys()
            if len(unknown) != 1:
                continue
            (s,) = unknown
            if d == s:
                roots = [n]
            else:
                try:
                    roots = [r for r in sympy.solve(sympy.Eq(d.xreplace(sizes), n), s) if r.is_integer and r >= 0]
                except (NotImplementedError, TypeError):
                    roots = []
            if len(roots) == 1:
                sizes[s] = int(roots[0])
                progress = True


def concrete(value: Any, sizes: dict[sympy.Symbol, int]) -> Any:
    """An attribute with its dimension expressions evaluated at `sizes`."""
    if isinstance(value, sympy.Expr):
        out = sympy.sympify(value.xreplace(sizes))
        if not out.is_number:
            raise InterpretError(f"dimension {value} has unbound symbols {sorted(map(str, out.free_symbols))}")
        return int(out) if out.is_integer else float(out)
    if isinstance(value, list):
        return [concrete(x, sizes) for x in value]
    if isinstance(value, tuple):
        return tuple(concrete(x, sizes) for x in value)
    if isinstance(value, dict):
        return {k: concrete(x, sizes) for k, x in value.items()}
    return value


class Interpreter:
    """Evaluates `graph` on inputs; `weights(value)` reads a constant (default: its own handle)."""

    def __init__(self, graph: Graph, weights: WeightLoader = source_weights):
        self.graph = graph
        self.weights = weights

    def run(self, inputs: Sequence[Tensorish], *, keep: bool | Iterable[str] = False,
            on_value: Optional[ValueHook] = None) -> dict[str, torch.Tensor]:
        """The graph outputs by name, plus every value named in `keep` (all with `keep=True`).
        `on_value(node, value, tensor)` sees each node output as soon as it is computed."""
        g = self.graph
        tensors = [as_tensor(x) for x in inputs]
        sizes = bind_symbols(g, tensors)
        keep_all = keep is True
        kept = set() if keep in (True, False) else set(keep)
        kept |= {v.name for v in g.outputs}
        last_use = self._last_uses()
        env: dict[str, torch.Tensor] = {v.name: x.to(v.dtype.torch) for v, x in zip(g.inputs, tensors)}
        result: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for i, node in enumerate(g.nodes):
                args = [self._read(v, env) for v in node.inputs]
                outs = evaluate_node(node, args, sizes)
                for v, t in zip(node.outputs, outs):
                    env[v.name] = t
                    if on_value is not None:
                        on_value(node, v, t)
                    if keep_all or v.name in kept:
                        result[v.name] = t
                for v in node.inputs:
                    if last_use.get(v.name) == i and v.name not in kept and not keep_all:
                        env.pop(v.name, None)
        for v in g.outputs:
            result[v.name] = env[v.name] if v.name in env else self._read(v, env)
        if keep_all:
            result.update({v.name: env[v.name] for v in g.inputs})
        return result

    def outputs(self, inputs: Sequence[Tensorish]) -> list[torch.Tensor]:
        values = self.run(inputs)
        return [values[v.name] for v in self.graph.outputs]

    def _read(self, v: Value, env: dict[str, torch.Tensor]) -> torch.Tensor:
        if v.name in env:
            return env[v.name]
        if v.const is not None:
            return self.weights(v)  # read at each use: never all weights at once
        raise InterpretError(f"%{v.name} is read before it is computed")

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, node in enumerate(self.graph.nodes):
            for v in node.inputs:
                last[v.name] = i
        return last


def evaluate_node(node: Node, args: list[torch.Tensor], sizes: dict[sympy.Symbol, int]) -> list[torch.Tensor]:
    """One node's outputs, checked against (and cast to) the types the IR declares."""
    attrs = concrete(node.attrs, sizes)
    try:
        if node.op in REFERENCE:
            result = REFERENCE[node.op](_call(node, args, attrs))
        elif is_nnef_level(node.op) or (node.namespace == "t2ir" and not _torch_has(node.op)):
            raise InterpretError(f"{node.op} has no reference implementation: register one with "
                                 "@t2ir.interpret.reference_op")
        else:
            result = _run_torch_op(node, args, sizes)
    except T2IRError:
        raise
    except Exception as e:
        where = f" at {node.loc}" if node.loc else ""
        raise InterpretError(f"%{node.outputs[0].name} = {node.op}{where}: the reference failed "
                             f"({type(e).__name__}: {e})") from e
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    if len(outs) != len(node.outputs):
        raise InterpretError(f"{node.op} gave {len(outs)} results for {len(node.outputs)} outputs")
    for v, t in zip(node.outputs, outs):
        bind_dims(v.shape, t.shape, sizes)
    checked = []
    for v, t in zip(node.outputs, outs):
        shape = [concrete(d, sizes) for d in v.shape]
        if list(t.shape) != shape:
            raise InterpretError(f"%{v.name} = {node.op}: the reference gives shape {list(t.shape)}, the IR "
                                 f"declares {v.type} = {shape}")
        checked.append(t.to(v.dtype.torch))
    return checked


def _literal_dtype(args: Sequence[torch.Tensor], node: Node) -> torch.dtype:
    """A literal operand takes the type of the first non-bool tensor operand, else the output's."""
    for t in args:
        if t.dtype != torch.bool:
            return t.dtype
    return node.outputs[0].dtype.torch


def _call(node: Node, args: list[torch.Tensor], attrs: dict[str, Any]) -> Call:
    """Arguments in signature order for NNEF-level ops (literal tensor parameters made tensors)."""
    out = [v.type for v in node.outputs]
    entry = REGISTRY.lookup(node.op)
    if entry is None or entry.signature is None or entry.signature.input_refs:  # scan: inputs by index
        return Call(node.op, list(args), attrs, out)
    params = entry.signature.params
    literal_dtype = _literal_dtype(args, node)
    rest = iter(args)
    positional: list[Any] = []
    for p in params:
        bare = p.lstrip("*?")
        if bare in attrs:
            positional.append(torch.tensor(attrs[bare], dtype=literal_dtype))
        elif p.startswith("*"):
            positional.append(list(rest))
        elif p.startswith("?"):
            positional += list(rest)
        else:
            positional.append(next(rest))
    bare_params = {p.lstrip("*?") for p in params}
    return Call(node.op, positional, {k: v for k, v in attrs.items() if k not in bare_params}, out)


def _torch_arg(value: Any, tensors: dict[int, torch.Tensor], sizes) -> Any:
    if isinstance(value, Value):
        return tensors[id(value)]
    if isinstance(value, (list, tuple)):
        return type(value)(_torch_arg(x, tensors, sizes) for x in value)
    if isinstance(value, DType):
        return value.torch
    if isinstance(value, str) and value.startswith("torch."):
        return getattr(torch, value.removeprefix("torch."))
    if isinstance(value, sympy.Expr):
        return concrete(value, sizes)
    return value


def _torch_has(op: str) -> bool:
    """Whether `op` is a torch op (t2ir's own custom ops, such as t2ir.fft, run as themselves)."""
    try:
        torch_schema(op)
        return True
    except (AttributeError, RuntimeError):
        return False


def _run_torch_op(node: Node, args: list[torch.Tensor], sizes) -> Any:
    """A source-level op run as PyTorch runs it, from its schema arguments."""
    try:
        schema = torch_schema(node.op)
    except (AttributeError, RuntimeError):
        raise InterpretError(f"{node.op} is neither a PyTorch op nor an op with a reference implementation: "
                             "register one with @t2ir.interpret.reference_op") from None
    by_value = collections.defaultdict(list)
    for v, t in zip(node.inputs, args):
        by_value[id(v)].append(t)
    tensors = {k: ts[0] for k, ts in by_value.items()}
    named = schema_args(node)
    consumed = collections.Counter(id(x) for a in named.values()
                                   for x in (a if isinstance(a, list) else [a]) if isinstance(x, Value))
    leftover = []
    for v in node.inputs:  # tensors of a list given partly as literals: `indices=[None, "*"]`
        if consumed[id(v)]:
            consumed[id(v)] -= 1
        else:
            leftover.append(v)
    fill = iter(leftover)
    positional, keywords = [], {}
    for a in schema.arguments:
        value = named.get(a.name)
        if isinstance(value, list) and "*" in value:
            value = [next(fill) if x == "*" else x for x in value]
        value = _torch_arg(value, tensors, sizes)
        if a.kwarg_only:
            keywords[a.name] = value
        else:
            positional.append(value)
    packet = getattr(getattr(torch.ops, node.op.split(".")[0]), node.op.split(".")[1])
    overload = node.op.split(".")[2] if node.op.count(".") >= 2 else "default"
    return getattr(packet, overload)(*positional, **keywords)


def evaluate(graph: Graph, inputs: Sequence[Tensorish], weights: WeightLoader = source_weights) -> list[torch.Tensor]:
    """The graph's outputs on `inputs`, computed by the reference interpreter."""
    return Interpreter(graph, weights).outputs(inputs)
