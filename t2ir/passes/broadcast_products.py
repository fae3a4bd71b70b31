"""products-of-broadcasts: a matrix product of a broadcast operand is the broadcast of the product.

tract 0.23.9's optimizer fails to load a matmul whose left operand is a `tract_core_broadcast`
along its rows or batch axes ("Trying to substitute a B,16,64 by B,1,64" while it rewrites the
einsum): DPT's readout concatenates the patch tokens with the class token broadcast to every patch,
then projects them (`linear(cat([tokens, cls.expand_as(tokens)], -1))`), and tract itself splits
that product over the concatenation before it fails on the broadcast piece. Computing the product
before broadcasting is what tract cannot do for us, and it does the work once instead of once per
row. A product over a concatenation (along the summed axis) that holds a broadcast is split first,
as a sum of products with slices of the other operand.
"""

from __future__ import annotations

from typing import Optional

from t2ir.ir import Value
from t2ir.passes.pattern import op
from t2ir.passes.rewrite import Match, RewritePass, rule
from t2ir.types import dims_equal


def _plain_product(m: Match) -> bool:
    a = m.root.attrs
    return not a.get("transposeA") and m.root.inputs[0].rank == m.root.inputs[1].rank >= 2


def _broadcast_source(v: Value, m: Optional[Match] = None) -> Optional[Value]:
    """The input of the broadcast producing `v` when it keeps the last (summed) axis and the rank.
    A broadcast literal (DETR's zero queries) has a source made with `m`: the literal over one
    row, of static size, which tract folds into a constant."""
    node = v.producer
    if node is None or node.op != "tract_core.broadcast":
        return None
    if not node.inputs:
        if m is None or not isinstance(v.shape[-1], int) or all(dims_equal(d, 1) for d in v.shape[:-1]):
            return None  # (the row itself: nothing to move)
        row = v.type.with_shape((1,) * (v.rank - 1) + (v.shape[-1],))
        return m.op("tract_core.broadcast", [], row, name="row", input=node.attrs["input"], shape=list(row.shape))
    source = node.inputs[0]
    if source.rank != v.rank or not dims_equal(source.shape[-1], v.shape[-1]):
        return None
    return source


@rule(op("nnef.matmul"))
def product_of_a_broadcast(m: Match) -> Optional[Value]:
    """matmul(broadcast(x), w) -> broadcast(matmul(x, w))"""
    if not _plain_product(m):
        return None
    a, b = m.root.inputs
    source = _broadcast_source(a, m)
    if source is None:
        return None
    # rows are the source's; a batch axis stays broadcast only where w has size 1 too
    batch = [1 if dims_equal(s, 1) and dims_equal(w, 1) else d
             for s, w, d in zip(source.shape[:-2], b.shape[:-2], m.out.shape[:-2])]
    product = m.op("nnef.matmul", [source, b], m.out.with_shape((*batch, source.shape[-2], m.out.shape[-1])),
                   name="product", **m.root.attrs)
    if all(dims_equal(p, o) for p, o in zip(product.shape, m.out.shape)):
        return product  # (w's batch axes already give the product its full shape)
    return m.op("tract_core.broadcast", [product], m.out, name="broadcast", shape=list(m.out.shape))


@rule(op("nnef.matmul"))
def product_of_a_concatenation(m: Match) -> Optional[Value]:
    """matmul(concat([x, broadcast(y)], summed axis), w) -> matmul(x, w[:k]) + matmul(broadcast(y), w[k:])"""
    if not _plain_product(m):
        return None
    a, b = m.root.inputs
    node = a.producer
    if node is None or node.op != "nnef.concat" or node.attrs["axis"] % a.rank != a.rank - 1:
        return None
    parts = node.inputs
    if not any(_broadcast_source(p) is not None for p in parts) or not all(isinstance(p.shape[-1], int) for p in parts):
        return None
    summed = b.rank - 1 if m.root.attrs.get("transposeB") else b.rank - 2
    total, start = None, 0
    for part in parts:
        size = part.shape[-1]
        rows = b.type.with_shape(tuple(size if i == summed else d for i, d in enumerate(b.shape)))
        piece = m.op("nnef.slice", [b], rows, name="rows", axes=[summed], begin=[start], end=[start + size])
        term = m.op("nnef.matmul", [part, piece], m.out, name="term", **m.root.attrs)
        total = term if total is None else m.op("nnef.add", [total, term], m.out, name="sum")
        start += size
    return total


ProductsOfBroadcasts = RewritePass("products-of-broadcasts", [product_of_a_concatenation, product_of_a_broadcast])
