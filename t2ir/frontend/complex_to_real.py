"""Complex tensors carried as real ones: tract has no complex numbers.

Rotary embeddings written with complex numbers (Llama 4, DeepSeek-V2: `torch.polar`,
`view_as_complex`, a complex product, `view_as_real`) never let a complex value reach the
graph's outputs; inside, each complex tensor of shape [..] is carried as the real tensor
[.., 2] of its real and imaginary parts (torch's own `view_as_real` layout), and every op on it
is rewritten into real ops. The rewrite is all or nothing: when a complex value meets an op not
covered here (or is a graph input or output), the graph is returned as it was, and the lifter
names the op and the complex dtype.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.fx

aten = torch.ops.aten


def is_complex(node: Any) -> bool:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return isinstance(val, torch.Tensor) and val.is_complex()


class _Unsupported(Exception):
    pass


class _Rewriter:
    """Copies an FX graph, replacing each complex-valued node by real nodes ([.., 2] layout)."""

    def __init__(self, graph: torch.fx.Graph):
        self.source = graph
        self.graph = torch.fx.Graph()
        self.env: dict[torch.fx.Node, torch.fx.Node] = {}
        self.fake_mode = torch._guards.detect_fake_mode(
            [n.meta.get("val") for n in graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)])
        self.origin: Optional[torch.fx.Node] = None  # the node being rewritten (its meta is inherited)

    def run(self) -> torch.fx.Graph:
        for node in self.source.nodes:
            self.origin = node
            if node.target is aten._assert_tensor_metadata.default and not node.users:
                continue  # a dtype check the real form would fail; the lifter drops these anyway
            if node.op == "call_function" and (is_complex(node) or any(is_complex(a) for a in node.all_input_nodes)):
                self.env[node] = self._rewrite(node)
            elif node.op in ("placeholder", "output") and (is_complex(node) or any(
                    is_complex(a) for a in node.all_input_nodes)):
                raise _Unsupported(node.name)
            else:
                self.env[node] = self.graph.node_copy(node, lambda n: self.env[n])
        return self.graph

    # ---- building real nodes -------------------------------------------------------------------
    def call(self, op: Callable, *args: Any, **kwargs: Any) -> torch.fx.Node:
        """A new node `op(*args)`, its value computed on the fake tensors of its arguments."""
        node = self.graph.call_function(op, args, kwargs)
        meta = {k: v for k, v in self.origin.meta.items() if k in ("nn_module_stack", "stack_trace")}
        fake = torch.fx.node.map_arg((args, kwargs), lambda n: n.meta["val"])
        with self.fake_mode:
            meta["val"] = op(*fake[0], **fake[1])
        node.meta.update(meta)
        return node

    def parts(self, node: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node]:
        """Real and imaginary parts of a rewritten complex node."""
        pair = self.env[node]
        return self.call(aten.select.int, pair, -1, 0), self.call(aten.select.int, pair, -1, 1)

    def pair(self, real: torch.fx.Node, imag: torch.fx.Node) -> torch.fx.Node:
        return self.call(aten.stack.default, [real, imag], -1)

    # ---- the ops ---------------------------------------------------------------------------------
    def _rewrite(self, node: torch.fx.Node) -> torch.fx.Node:
        op = node.target
        args = [self.env.get(a, a) if isinstance(a, torch.fx.Node) else a for a in node.args]
        if op is aten.polar.default:
            magnitude, angle = args
            return self.pair(self.call(aten.mul.Tensor, magnitude, self.call(aten.cos.default, angle)),
                             self.call(aten.mul.Tensor, magnitude, self.call(aten.sin.default, angle)))
        if op in (aten.view_as_complex.default, aten.view_as_real.default):
            return args[0]
        if op in (aten.mul.Tensor, aten.add.Tensor, aten.sub.Tensor) and not node.kwargs:
            return self._arithmetic(node)
        if op in (aten._conj.default, aten.conj_physical.default):
            real, imag = self.parts(node.args[0])
            return self.pair(real, self.call(aten.neg.default, imag))
        if op is aten._to_copy.default and is_complex(node.args[0]) and is_complex(node) and set(
                node.kwargs) <= {"dtype", "device", "layout"}:
            return args[0]  # complex64 -> complex64 (device moves are no-ops in the graph)
        if op in _LAYOUT_OPS and is_complex(node.args[0]):
            return self._layout(node, args)
        raise _Unsupported(str(op))

    def _arithmetic(self, node: torch.fx.Node) -> torch.fx.Node:
        op, (a, b) = node.target, node.args
        if is_complex(a) and is_complex(b):
            if op is not aten.mul.Tensor:  # sums and differences act on both parts alike
                return self.call(op, self.env[a], self.env[b])
            (ar, ai), (br, bi) = self.parts(a), self.parts(b)
            real = self.call(aten.sub.Tensor, self.call(aten.mul.Tensor, ar, br), self.call(aten.mul.Tensor, ai, bi))
            imag = self.call(aten.add.Tensor, self.call(aten.mul.Tensor, ar, bi), self.call(aten.mul.Tensor, ai, br))
            return self.pair(real, imag)
        if op is not aten.mul.Tensor:  # complex +- real touches the real part only: not needed so far
            raise _Unsupported(str(op))
        c, r = (a, b) if is_complex(a) else (b, a)
        if isinstance(r, torch.fx.Node):  # a real tensor scales both parts: broadcast it over the pair axis
            r = self.call(aten.unsqueeze.default, self.env.get(r, r), -1)
        elif isinstance(r, complex):
            raise _Unsupported("a complex scalar")
        return self.call(aten.mul.Tensor, self.env[c], r)

    def _layout(self, node: torch.fx.Node, args: list) -> torch.fx.Node:
        """Views and copies: the same op on the pair, with axes and sizes extended by the pair axis."""
        op, rank = node.target, node.args[0].meta["val"].dim()
        extend = _LAYOUT_OPS[op]
        return self.call(op, *extend(args, rank), **node.kwargs)


def _axis(d: int, rank: int) -> int:
    """A complex tensor's axis in its [.., 2] form: negative axes counted from the complex end."""
    return d + rank if d < 0 else d


def _dim_arg(position: int, rank_delta: int = 0) -> Callable:
    def extend(args: list, rank: int) -> list:
        args = list(args)
        if len(args) > position:
            args[position] = _axis(args[position], rank + rank_delta)
        return args
    return extend


def _sizes(args: list, rank: int) -> list:
    return [args[0], [*args[1], 2], *args[2:]]


def _permutation(args: list, rank: int) -> list:
    return [args[0], [_axis(d, rank) for d in args[1]] + [rank]]


def _transpose(args: list, rank: int) -> list:
    return [args[0], _axis(args[1], rank), _axis(args[2], rank)]


def _same(args: list, rank: int) -> list:
    return args


# op -> how its arguments change when the tensor gains a trailing pair axis
_LAYOUT_OPS: dict = {
    aten.unsqueeze.default: _dim_arg(1, rank_delta=1),
    aten.squeeze.dim: _dim_arg(1),
    aten.select.int: _dim_arg(1),
    aten.slice.Tensor: _dim_arg(1),
    aten.expand.default: _sizes,
    aten.view.default: _sizes,
    aten.reshape.default: _sizes,
    aten._unsafe_view.default: _sizes,
    aten.permute.default: _permutation,
    aten.transpose.int: _transpose,
    aten.clone.default: _same,
    aten.alias.default: _same,
    aten.contiguous.default: _same,
}


def lower_complex(graph: torch.fx.Graph) -> torch.fx.Graph:
    """`graph` with its complex values carried as real pairs, or `graph` itself when it has none
    or some complex op is not covered (the lifter then names it)."""
    if not any(is_complex(n) for n in graph.nodes):
        return graph
    try:
        return _Rewriter(graph).run()
    except _Unsupported:
        return graph
