"""Pattern pieces and analyses shared by the fusion passes: no-op walks, constants behind casts,
last-axis predicates, transformers' `repeat_kv`, and position vectors (`arange(S) + P`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import sympy

from t2ir.ir import Node, Value
from t2ir.ops.aliases import CASTS, DROPOUT, IDENTITY, RESHAPES, TRANSPOSES
from t2ir.ops.aliases import MUL
from t2ir.passes.pattern import Pattern, Skip, Var, arguments, is_number, lit, op, skip, var
from t2ir.types import Dim, DType, dims_equal, simplify_dim

INT_MAX = 2**63 - 1


def axis_of(dim: int, rank: int) -> int:
    return dim % rank if rank else 0


def is_last_axis(dim: Any, rank: int) -> bool:
    """`dim` (an int, or a one-element list) names the last of `rank` axes."""
    if isinstance(dim, (list, tuple)):
        if len(dim) != 1:
            return False
        dim = dim[0]
    return isinstance(dim, int) and rank > 0 and axis_of(dim, rank) == rank - 1


def on_last_axis(arg: str = "dim", of: str = "self"):
    """An `op(..., where=)` predicate: argument `arg` names the last axis of argument `of`."""
    return lambda a: isinstance(a.get(of), Value) and is_last_axis(a.get(arg), a[of].rank)


def concat_on_last_axis(a: dict) -> bool:
    tensors = a.get("tensors") or []
    return bool(tensors) and is_last_axis(a.get("dim") or 0, tensors[0].rank)


def swaps_last_two(a: dict) -> bool:
    """transpose(x, -2, -1) in either order and any spelling of the axes."""
    x = a.get("self")
    if not isinstance(x, Value) or x.rank < 2:
        return False
    return {axis_of(a["dim0"], x.rank), axis_of(a["dim1"], x.rank)} == {x.rank - 2, x.rank - 1}


def transposes_last_two(node: Node) -> bool:
    return node.op in TRANSPOSES and swaps_last_two(arguments(node))


def is_full_slice(a: dict) -> bool:
    x = a["self"]
    start, end, step = a.get("start") or 0, a.get("end"), a.get("step") or 1
    if step != 1 or start != 0:
        return False
    size = x.shape[axis_of(a.get("dim") or 0, x.rank)]
    return end is None or end == INT_MAX or (isinstance(end, (int, sympy.Expr)) and dims_equal(end, size))


def _same_kind(a: DType, b: DType) -> bool:
    """Both float or both integer: a cast between them keeps what the values mean."""
    return a == b or (a.is_float and b.is_float) or (a.is_int and b.is_int)


def is_noop(node: Node, casts: bool = False) -> bool:
    """Does `node` return its first input's values? With `casts`, precision changes (f32 <-> f16,
    i64 <-> i32) count as no-ops too."""
    if not node.inputs:
        return False
    x, out = node.inputs[0], node.outputs[0]
    same = out.type == x.type
    if node.op in IDENTITY:
        return True
    if node.op in DROPOUT:
        args = arguments(node)
        return not args.get("train") or args.get("p") == 0
    if node.op == "aten.slice.Tensor":
        return is_full_slice(arguments(node))
    if node.op in CASTS:
        return same or (casts and out.shape == x.shape and _same_kind(out.dtype, x.dtype))
    if node.op in RESHAPES or node.op == "aten.expand":
        return same
    return False


def is_noop_or_cast(node: Node) -> bool:
    return is_noop(node, casts=True)


def skip_noops(v: Value, casts: bool = False) -> Value:
    """Walk back through ops that leave the values unchanged (precision changes too with `casts`)."""
    while (p := v.producer) is not None and is_noop(p, casts):
        v = p.inputs[0]
    return v


def through_noops(p: Pattern) -> Skip:
    """`p`, behind any ops that leave values unchanged (dropout, clone, same-type casts, ...)."""
    return skip(is_noop, p)


def through_casts(p: Pattern) -> Skip:
    """`p`, behind no-ops and precision changes (softmax's f32 round trip in eager attention)."""
    return skip(is_noop_or_cast, p)


def root_const(v: Value) -> Optional[Value]:
    """The graph constant behind `v` when `v` is that constant or a cast of it."""
    v = skip_noops(v, casts=True)
    return v if v.const is not None else None


def const(name: Optional[str] = None, **kwargs: Any) -> Var:
    """A tensor operand that is a graph constant (a weight), possibly behind casts."""
    where = kwargs.pop("where", None)
    return var(name, where=lambda v: root_const(v) is not None and (where is None or where(v)), **kwargs)


def number(name: Optional[str] = None) -> Pattern:
    """A Python number argument (not a bool), captured as `name`."""
    return lit(name=name, where=is_number)


def square(x: Pattern) -> Pattern:
    """x ** 2, square(x) or x * x."""
    return (op("aten.pow.Tensor_Scalar", x, lambda e: e in (2, 2.0)) | op("aten.square", x)
            | op(MUL, x, x))


def repeat_kv(kv: Pattern) -> Pattern:
    """transformers' `repeat_kv` of a [B, Hkv, L, D] value: `x[:, :, None].expand(B, Hkv, g, L, D)
    .reshape(B, Hkv*g, L, D)`, or `repeat_interleave(x, g, dim=1)`. tract's sdpa maps query head h
    to kv head h // g natively, which is the same grouping, so fusions match through it."""
    unsqueezed = op("aten.unsqueeze", kv, lambda d: d in (2, -3))
    expanded = op("aten.expand", through_noops(unsqueezed), size=lambda s: len(s) == 5)
    return (op(RESHAPES, through_noops(expanded), where=_merges_group_axis)
            | op("aten.repeat_interleave.self_int", kv, repeats=lambda r: isinstance(r, int), dim=lambda d: d in (1, -3),
                 where=lambda a: a["self"].rank == 4))


def _merges_group_axis(a: dict) -> bool:
    e = a["self"]
    if e.rank != 5:
        return False
    b, h, g, n, d = e.shape
    out = a.get("size") or a.get("shape") or []
    return len(out) == 4 and all(dims_equal(x, y) for x, y in zip(out, (b, h * g, n, d)))


@dataclass(frozen=True)
class Positions:
    """v[..., i, ...] = offset + i along `axis` (length `length`), with size 1 on every other axis."""

    rank: int
    axis: int
    offset: Dim
    length: Dim


def positions(v: Value) -> Optional[Positions]:
    """Recognise an integer position vector: arange, +/- a scalar, unsqueezes, full slices."""
    p = v.producer
    if p is None or v.dtype.is_float:
        return None
    if p.op.startswith("aten.arange"):
        a = arguments(p)
        start, step = (a.get("start") or 0) if p.op != "aten.arange" else 0, a.get("step") or 1
        if step != 1 or v.rank != 1:
            return None
        return Positions(1, 0, simplify_dim(start), v.shape[0])
    if is_noop(p, casts=True):
        return positions(p.inputs[0])
    if p.op in ("aten.add.Tensor", "aten.sub.Tensor"):
        a = arguments(p)
        x, c = a["self"], a["other"]
        if not isinstance(x, Value) or isinstance(c, Value) or isinstance(c, float) or (a.get("alpha") or 1) != 1:
            return None
        inner = positions(x)
        if inner is None:
            return None
        sign = 1 if p.op == "aten.add.Tensor" else -1
        return Positions(inner.rank, inner.axis, simplify_dim(inner.offset + sign * c), inner.length)
    if p.op == "aten.unsqueeze":
        inner = positions(p.inputs[0])
        if inner is None:
            return None
        d = axis_of(arguments(p)["dim"], v.rank)
        return Positions(v.rank, inner.axis + (1 if d <= inner.axis else 0), inner.offset, inner.length)
    return None

