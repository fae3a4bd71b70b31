"""Complex tensors carried as real ones: tract has no complex numbers.

Rotary embeddings written with complex numbers (Llama 4, DeepSeek-V2: `torch.polar`,
`view_as_complex`, a complex product, `view_as_real`) and Fourier transforms (FNet's token
mixing, `torch.fft.*`) never let a complex value reach the graph's outputs; inside, each complex
tensor of shape [..] is carried as the real tensor [.., 2] of its real and imaginary parts
(torch's own `view_as_real` layout, which tract's FFT also takes), and every op on it is
rewritten into real ops. The rewrite is all or nothing: when a complex value meets an op not
covered here (or is a graph input or output), the graph is returned as it was, and the lifter
names the op and the complex dtype.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

import t2ir.ops.fft  # noqa: F401  (defines torch.ops.t2ir.fft)

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
        env = self.fake_mode.shape_env if self.fake_mode is not None else None
        pinned = dict(env.replacements) if env is not None else {}
        self._copy_nodes()
        if env is not None and dict(env.replacements) != pinned:  # a fake kernel guarded on a dynamic size
            raise _Unsupported("a rewrite that pins a dynamic size")
        return self.graph

    def _copy_nodes(self) -> None:
        for node in self.source.nodes:
            self.origin = node
            if node.target is aten._assert_tensor_metadata.default and not node.users:
                continue  # a dtype check the real form would fail; the lifter drops these anyway
            if node.op == "call_function" and (is_complex(node) or any(is_complex(a) for a in node.all_input_nodes)):
                self.env[node] = self._rewrite(node)
            elif node.op in ("placeholder", "output") and (is_complex(node) or any(
                    is_complex(a) for a in node.all_input_nodes)):
                raise _Unsupported(f"a complex graph {'input' if node.op == 'placeholder' else 'output'}")
            else:
                self.env[node] = self.graph.node_copy(node, lambda n: self.env[n])

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
        if op is aten._to_copy.default and is_complex(node) and set(node.kwargs) <= {"dtype", "device", "layout"}:
            if is_complex(node.args[0]):
                return args[0]  # complex64 -> complex64 (device moves are no-ops in the graph)
            real_dtype = node.meta["val"].real.dtype  # a real tensor made complex: a zero imaginary part
            real = self.call(aten._to_copy.default, args[0], dtype=real_dtype)
            return self.pair(real, self.call(aten.zeros_like.default, real))
        if op in _LAYOUT_OPS and is_complex(node.args[0]):
            return self._layout(node, args)
        if op is aten.constant_pad_nd.default and is_complex(node.args[0]):
            if len(args) > 2 and args[2] not in (0, 0.0):
                raise _Unsupported("padding a complex tensor with a value other than 0")
            pair, rank = args[0], node.args[0].meta["val"].dim()
            for i in range(0, len(args[1]), 2):  # (before, after) pairs from the last axis
                pair = self._zero_padded(pair, rank - 1 - i // 2, args[1][i], args[1][i + 1])
            return pair
        if op is aten.abs.default and is_complex(node.args[0]):
            real, imag = self.parts(node.args[0])
            squares = [self.call(aten.mul.Tensor, v, v) for v in (real, imag)]
            return self.call(aten.sqrt.default, self.call(aten.add.Tensor, *squares))
        if op in (aten._fft_r2c.default, aten._fft_c2c.default, aten._fft_c2r.default):
            return self._fft(node, args)
        raise _Unsupported(f"{op} on complex values")

    # ---- Fourier transforms ----------------------------------------------------------------------
    def _fft(self, node: torch.fx.Node, args: list) -> torch.fx.Node:
        """torch's three FFT primitives from `t2ir::fft` along each axis (tract's unnormalised
        transform), then torch's normalisation: 0 none, 1 by sqrt(n), 2 by n."""
        op, x, dims, normalization = node.target, args[0], list(args[1]), args[2]
        shape = node.args[0].meta["val"].shape
        rank = len(shape)
        dims = [_axis(d, rank) for d in dims]
        if op is aten._fft_r2c.default:  # real input: a zero imaginary part
            pair = self.pair(x, self.call(aten.zeros_like.default, x))
            pair = self._transform(pair, dims, inverse=False)
            if args[3]:  # onesided: the other half is the conjugate mirror of this one
                pair = self.call(aten.slice.Tensor, pair, dims[-1], 0, shape[dims[-1]] // 2 + 1)
            return self._normalized(pair, [shape[d] for d in dims], normalization)
        if op is aten._fft_c2c.default:
            pair = self._transform(x, dims, inverse=not args[3])
            return self._normalized(pair, [shape[d] for d in dims], normalization)
        # c2r: the inverse of a onesided transform; the last axis is completed by symmetry
        n, bins = args[3], shape[dims[-1]]
        pair = self._transform(x, dims[:-1], inverse=True)
        if isinstance(bins, int) and isinstance(n, int) and bins < n // 2 + 1:  # torch pads with zeros
            pair = self._zero_padded(pair, dims[-1], 0, n // 2 + 1 - bins)
        elif not statically_known_true(bins >= n // 2 + 1):
            raise _Unsupported("an inverse real FFT whose input may be shorter than n // 2 + 1")
        pair = self.call(aten.slice.Tensor, pair, dims[-1], 0, n // 2 + 1)
        mirror = self.call(aten.flip.default, self.call(aten.slice.Tensor, pair, dims[-1], 1, n - n // 2), [dims[-1]])
        real, imag = (self.call(aten.select.int, mirror, -1, i) for i in (0, 1))
        pair = self.call(aten.cat.default, [pair, self.pair(real, self.call(aten.neg.default, imag))], dims[-1])
        pair = self._transform(pair, dims[-1:], inverse=True)
        real = self.call(aten.select.int, pair, -1, 0)
        return self._normalized(real, [shape[d] for d in dims[:-1]] + [n], normalization)

    def _zero_padded(self, pair: torch.fx.Node, axis: int, before: int, after: int) -> torch.fx.Node:
        """Zeros concatenated on `axis` (torch's fake constant_pad_nd would pin symbolic sizes)."""
        if not (isinstance(before, int) and isinstance(after, int)) or before < 0 or after < 0:
            raise _Unsupported("padding a complex tensor by a dynamic or negative amount")
        shape = list(pair.meta["val"].shape)

        def zeros(amount: int) -> list[torch.fx.Node]:
            return [self.call(aten.new_zeros.default, pair, [*shape[:axis], amount, *shape[axis + 1:]])] if amount else []

        pieces = [*zeros(before), pair, *zeros(after)]
        return pair if len(pieces) == 1 else self.call(aten.cat.default, pieces, axis)

    def _transform(self, pair: torch.fx.Node, dims: list[int], inverse: bool) -> torch.fx.Node:
        for d in dims:
            pair = self.call(torch.ops.t2ir.fft.default, pair, d, inverse)
        return pair

    def _normalized(self, x: torch.fx.Node, sizes: list, normalization: int) -> torch.fx.Node:
        if normalization == 0:
            return x
        n = math.prod(sizes)
        if normalization == 2:
            return self.call(aten.div.Tensor, x, n)
        if not isinstance(n, int):
            raise _Unsupported("an orthonormal FFT over a dynamic size")
        return self.call(aten.mul.Tensor, x, 1.0 / math.sqrt(n))

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


def lower_complex(graph: torch.fx.Graph) -> tuple[torch.fx.Graph, Optional[str]]:
    """`graph` with its complex values carried as real pairs, or `graph` itself and why not when
    some complex value meets an op not covered or an input or output (the lifter then names the
    op and the complex dtype)."""
    if not any(is_complex(n) for n in graph.nodes):
        return graph, None
    try:
        return _Rewriter(graph).run(), None
    except _Unsupported as e:
        return graph, str(e)
