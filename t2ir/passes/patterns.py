"""Matching helpers shared by the fusion passes: operands of aten nodes by name, no-op walks,
constant-ness and position vectors (`arange(S) + P` broadcast along one axis)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Optional

import sympy

from t2ir.ir import Graph, Node, Value
from t2ir.ops.context import schema_args
from t2ir.types import Dim, DType, dims_equal, simplify_dim

INT_MAX = 2**63 - 1

CASTS = frozenset({"aten.to.dtype", "aten._to_copy", "aten.type_as", "aten.to.dtype_layout", "aten.to.device"})
# Ops that return their first input unchanged (in inference).
IDENTITIES = frozenset({"aten.clone", "aten.contiguous", "aten.alias", "aten.detach", "aten.lift_fresh_copy",
                        "aten.dropout", "aten.feature_dropout"})
RESHAPES = frozenset({"aten.view", "aten.reshape", "aten._unsafe_view"})
TRANSPOSES = frozenset({"aten.transpose.int", "aten.swapaxes", "aten.swapdims"})


def producer(v: Any) -> Optional[Node]:
    return v.producer if isinstance(v, Value) else None


def op_of(v: Any) -> str:
    """The op producing `v` ("" for inputs, constants and Python numbers)."""
    p = producer(v)
    return p.op if p is not None else ""


def args(node: Node) -> dict[str, Any]:
    """The node's arguments by their torch schema names (aten ops only)."""
    return schema_args(node)


def is_number(x: Any) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


def operands(node: Node) -> tuple[Any, Any]:
    """(self, other) of a binary aten op: each a Value or a Python number ((None, None) for
    add/sub with alpha != 1, which no pattern means)."""
    a = args(node)
    if (a.get("alpha") or 1) != 1:
        return None, None
    return a.get("self"), a.get("other")


def plus_number(v: Any) -> Optional[tuple[Any, Any]]:
    """(x, c) when `v = x + c` with `c` a Python number, in either operand order."""
    p = producer(v)
    if p is None or p.op != "aten.add.Tensor":
        return None
    x, c = operands(p)
    if is_number(x):
        x, c = c, x
    return (x, c) if is_number(c) else None


def other_operand(node: Node, v: Value) -> Any:
    """The operand of commutative `node` that is not `v` (None when `v` is not an operand)."""
    a, b = operands(node)
    if a is v:
        return b
    if b is v:
        return a
    return None


def is_full_slice(node: Node) -> bool:
    a = args(node)
    x = a["self"]
    dim = a.get("dim") or 0
    start, end, step = a.get("start") or 0, a.get("end"), a.get("step") or 1
    if step != 1 or start != 0:
        return False
    size = x.shape[dim % x.rank]
    return end is None or end == INT_MAX or (isinstance(end, (int, sympy.Expr)) and dims_equal(end, size))


def _same_kind(a: DType, b: DType) -> bool:
    """Both float or both integer: a cast between them keeps what the values mean."""
    return a == b or (a.is_float and b.is_float) or (a.is_int and b.is_int)


def is_noop(node: Node, casts: bool = False) -> bool:
    """Does `node` return its first input's values? With `casts`, precision changes (f32 <-> f16,
    i64 <-> i32) count as no-ops too."""
    if not node.inputs:
        return False
    x = node.inputs[0]
    same = node.outputs[0].type == x.type
    if node.op in IDENTITIES:
        return not args(node).get("train", False)
    if node.op == "aten.slice.Tensor":
        return is_full_slice(node)
    if node.op in CASTS:
        out = node.outputs[0]
        return same or (casts and out.shape == x.shape and _same_kind(out.dtype, x.dtype))
    if node.op in RESHAPES or node.op == "aten.expand":
        return same
    return False


def skip_noops(v: Value, casts: bool = False) -> Value:
    """Walk back through ops that leave the values unchanged (precision changes too with `casts`)."""
    while (p := producer(v)) is not None and is_noop(p, casts):
        v = p.inputs[0]
    return v


def root_const(v: Value) -> Optional[Value]:
    """The graph constant behind `v` when `v` is that constant or a cast of it."""
    v = skip_noops(v, casts=True)
    return v if v.const is not None else None


def axis_of(dim: int, rank: int) -> int:
    return dim % rank if rank else 0


def transposes_last_two(node: Node) -> bool:
    """transpose(x, -2, -1) (either order, any spelling of the axes)."""
    if node.op not in TRANSPOSES:
        return False
    a, r = args(node), node.inputs[0].rank
    dims = {axis_of(a["dim0"], r), axis_of(a["dim1"], r)}
    return r >= 2 and dims == {r - 2, r - 1}


def strip_repeat_kv(v: Value) -> Value:
    """[B, Hkv, L, D] repeated to [B, Hkv*g, L, D] (transformers' repeat_kv) -> the unrepeated value.

    repeat_kv is `x[:, :, None].expand(B, Hkv, g, L, D).reshape(B, Hkv*g, L, D)`; tract's sdpa
    maps query head h to key head h // g natively, which is the same grouping.
    """
    p = producer(v)
    if p is not None and p.op == "aten.repeat_interleave.self_int":
        a = args(p)
        x = a["self"]
        if a.get("dim") is not None and axis_of(a["dim"], x.rank) == 1 and x.rank == 4:
            return x
    if p is None or p.op not in RESHAPES or v.rank != 4:
        return v
    e = skip_noops(p.inputs[0])
    pe = producer(e)
    if pe is None or pe.op != "aten.expand" or e.rank != 5:
        return v
    u = skip_noops(pe.inputs[0])
    pu = producer(u)
    if pu is None or pu.op != "aten.unsqueeze" or axis_of(args(pu)["dim"], 5) != 2:
        return v
    x = pu.inputs[0]
    b, h, g, n, d = e.shape
    if x.rank != 4 or not all(dims_equal(a, c) for a, c in zip(x.shape, (b, h, n, d))):
        return v
    if not all(dims_equal(a, c) for a, c in zip(v.shape, (b, h * g, n, d))):
        return v
    return x


@dataclass(frozen=True)
class Positions:
    """v[..., i, ...] = offset + i along `axis` (length `length`), with size 1 on every other axis."""

    rank: int
    axis: int
    offset: Dim
    length: Dim


def positions(v: Value) -> Optional[Positions]:
    """Recognise an integer position vector: arange, +/- a scalar, unsqueezes, full slices."""
    p = producer(v)
    if p is None or v.dtype.is_float:
        return None
    if p.op.startswith("aten.arange"):
        a = args(p)
        start, step = a.get("start") or 0, a.get("step") or 1
        if p.op == "aten.arange":
            start = 0
        if step != 1 or v.rank != 1:
            return None
        return Positions(1, 0, simplify_dim(start), v.shape[0])
    if is_noop(p, casts=True):
        return positions(p.inputs[0])
    if p.op in ("aten.add.Tensor", "aten.sub.Tensor"):
        a = args(p)
        x, c = a["self"], a["other"]
        if not isinstance(x, Value) or isinstance(c, Value) or (a.get("alpha") or 1) != 1:
            return None
        inner = positions(x)
        if inner is None or isinstance(c, float):
            return None
        sign = 1 if p.op == "aten.add.Tensor" else -1
        return Positions(inner.rank, inner.axis, simplify_dim(inner.offset + sign * c), inner.length)
    if p.op == "aten.unsqueeze":
        inner = positions(p.inputs[0])
        if inner is None:
            return None
        d = axis_of(args(p)["dim"], v.rank)
        return Positions(v.rank, inner.axis + (1 if d <= inner.axis else 0), inner.offset, inner.length)
    return None


def cast_to(g: Graph, v: Value, dtype: DType, name: Optional[str] = None) -> Value:
    """An explicit cast node (aten.to.dtype) unless `v` already has `dtype`."""
    if v.dtype == dtype:
        return v
    return g.op("aten.to.dtype", [v], v.type.with_dtype(dtype), name=name or f"{v.name}_{dtype.value}", dtype=dtype)


def is_dead(g: Graph, node: Node) -> bool:
    """Nothing reads the node's outputs (a value a rule already replaced, awaiting DCE)."""
    return all(not o.uses and o not in g.outputs for o in node.outputs)


def replace_value(g: Graph, old: Value, new: Value) -> None:
    """Point every reader (and graph output) of `old` at the freshly built `new`, which takes
    `old`'s name so dumps stay readable; `old`'s now dead producers are left to DCE."""
    name = old.name
    old.replace_all_uses_with(new)
    g.rename(old, g.fresh_name(f"{name}_replaced"))
    g.rename(new, name)
