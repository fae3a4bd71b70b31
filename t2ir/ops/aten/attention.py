"""Attention: `aten.scaled_dot_product_attention` and the IR's own `t2ir.sdpa` node.

`t2ir.sdpa(q, k, v[, mask], scale=, causal=, softcap=)` is what the fusion pass builds from
decomposed attention. `causal` is aligned bottom-right (query i sees keys j <= i + Skv - Sq),
the alignment KV-cache decoding needs and tract's operator uses; it equals PyTorch's top-left
`is_causal` whenever Sq == Skv. It becomes tract's one `sdpa` operator when tract can express it
(rank 4 or rank 3 without grouped heads, an additive mask of a shape tract accepts, no
soft-capping) and an explicit matmul/softmax/matmul sequence otherwise.
"""

from __future__ import annotations

import math

from t2ir.errors import TranslationError
from t2ir.ir import Node, Value
from t2ir.ops.aten._util import unsqueeze_to_rank
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.types import DType, TensorType, dims_equal

NEG_LARGE = -3.4028234663852886e38


def float_mask(ctx: LowerContext, mask: Value | None, dtype: DType) -> Value | None:
    """Boolean masks (True = attend) become additive float masks."""
    if mask is None:
        return None
    if mask.dtype == DType.bool:
        return ctx.emit("nnef.select", [mask], mask.type.with_dtype(dtype), true_value=0.0, false_value=NEG_LARGE)
    return ctx.cast(mask, dtype)


def causal_mask(ctx: LowerContext, sq, skv, dtype: DType, top_left: bool) -> Value:
    """Additive [Sq, Skv] mask: 0 where key j <= i + offset, very negative elsewhere."""
    offset = 0 if top_left else skv - sq
    qi = ctx.emit("tract_core.range", [], TensorType(DType.i64, (sq,)), start=offset, end=offset + sq, step=1)
    ki = ctx.emit("tract_core.range", [], TensorType(DType.i64, (skv,)), start=0, end=skv, step=1)
    qi = ctx.emit("nnef.unsqueeze", [qi], TensorType(DType.i64, (sq, 1)), axes=[1])
    ki = ctx.emit("nnef.unsqueeze", [ki], TensorType(DType.i64, (1, skv)), axes=[0])
    allowed = ctx.emit("nnef.le", [unsqueeze_to_rank(ctx, ki, 2), qi], TensorType(DType.bool, (sq, skv)))
    return ctx.emit("nnef.select", [allowed], TensorType(dtype, (sq, skv)), true_value=0.0, false_value=NEG_LARGE)


def _tract_mask_ok(mask: Value, q: Value) -> bool:
    """tract accepts [Sq,Skv], [1,Sq,Skv], [1,1,Sq,Skv] and [1,Hq,Sq,Skv] masks."""
    lead = mask.shape[:-2]
    return all(d == 1 for d in lead) or (mask.rank == 4 and mask.shape[0] == 1 and dims_equal(mask.shape[1], q.shape[1]))


def attention(ctx: LowerContext, q: Value, k: Value, v: Value, mask: Value | None, *, scale: float | None,
              causal: bool, softcap: float | None, out: TensorType) -> Value:
    dtype = out.dtype
    q, k, v = ctx.cast(q, dtype), ctx.cast(k, dtype), ctx.cast(v, dtype)
    mask = float_mask(ctx, mask, dtype)
    grouped = not dims_equal(q.shape[-3], k.shape[-3]) if q.rank >= 3 else False
    fits_tract = (q.rank == 4 or (q.rank == 3 and not grouped)) and softcap is None
    if fits_tract and (mask is None or _tract_mask_ok(mask, q)):
        # With a KV cache (Skv = P + S), an explicit additive causal mask rather than is_causal=true:
        # tract 0.23.9's CPU sdpa runs 1.3-1.5x faster with it at prefill (docs/passes.md). When
        # Skv is Sq, is_causal stays: tract then fails on a computed [S, S] mask.
        explicit = causal and (mask is not None or not dims_equal(q.shape[-2], k.shape[-2]))
        attrs = dict(datum_type=dtype.value, acc_datum_type="f32", is_causal=causal and not explicit)
        if scale is not None:
            attrs["scale"] = float(scale)
        if explicit:
            mask = _add_causal(ctx, mask, q, k, dtype) if mask is not None else \
                causal_mask(ctx, q.shape[-2], k.shape[-2], dtype, top_left=False)
        inputs = [q, k, v] + ([mask] if mask is not None else [])
        return ctx.emit("tract_transformers.sdpa", inputs, out, **attrs)
    return decomposed_attention(ctx, q, k, v, mask, scale=scale, causal=causal, softcap=softcap, out=out)


def _add_causal(ctx: LowerContext, mask: Value, q: Value, k: Value, dtype: DType) -> Value:
    cm = causal_mask(ctx, q.shape[-2], k.shape[-2], dtype, top_left=False)
    rank = mask.rank
    cm = unsqueeze_to_rank(ctx, cm, rank)
    shape = tuple(m if m != 1 else c for m, c in zip(mask.shape, cm.shape))
    return ctx.emit("nnef.add", [mask, cm], mask.type.with_shape(shape))


def repeat_kv(ctx: LowerContext, x: Value, heads) -> Value:
    """[B, Hkv, S, D] -> [B, Hq, S, D], query head h reading kv head h // (Hq / Hkv)."""
    b, hkv, s, d = x.shape
    group = heads // hkv
    x5 = ctx.emit("nnef.unsqueeze", [x], x.type.with_shape((b, hkv, 1, s, d)), axes=[2])
    x5 = ctx.emit("nnef.tile", [x5], x.type.with_shape((b, hkv, group, s, d)), repeats=[1, 1, group, 1, 1])
    return ctx.emit("nnef.reshape", [x5], x.type.with_shape((b, heads, s, d)), shape=[b, heads, s, d])


def decomposed_attention(ctx: LowerContext, q: Value, k: Value, v: Value, mask: Value | None, *,
                         scale: float | None, causal: bool, softcap: float | None, out: TensorType) -> Value:
    """softmax(q k^T * scale [softcap] + mask) v, written with plain NNEF ops."""
    if q.rank == 4 and not dims_equal(q.shape[1], k.shape[1]):
        k, v = repeat_kv(ctx, k, q.shape[1]), repeat_kv(ctx, v, q.shape[1])
    sq, skv = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    st = q.type.with_shape(tuple(q.shape[:-1]) + (skv,))
    scores = ctx.emit("nnef.matmul", [q, k], st, transposeB=True, name="scores")
    scores = ctx.emit("nnef.mul", [scores], st, y=scale)
    if softcap:
        scores = ctx.emit("nnef.mul", [ctx.emit("nnef.tanh", [ctx.emit("nnef.mul", [scores], st, y=1.0 / softcap)], st)],
                          st, y=float(softcap))
    if causal:
        scores = ctx.emit("nnef.add", [scores, unsqueeze_to_rank(ctx, causal_mask(ctx, sq, skv, st.dtype, False), st.rank)], st)
    if mask is not None:
        scores = ctx.emit("nnef.add", [scores, unsqueeze_to_rank(ctx, mask, st.rank)], st)
    probs = ctx.emit("nnef.softmax", [scores], st, axes=[st.rank - 1])
    return ctx.emit("nnef.matmul", [probs, v], out)


@builtin("aten.scaled_dot_product_attention")
def aten_sdpa(node: Node, ctx: LowerContext) -> Value:
    a = ctx.args
    q, k, v, mask = a["query"], a["key"], a["value"], a.get("attn_mask")
    if a.get("dropout_p"):
        raise TranslationError("attention with dropout_p > 0 is random, which an exported graph cannot be",
                               "pass dropout_p=0.0 (e.g. `dropout_p=self.dropout if self.training else 0.0`)")
    causal = bool(a.get("is_causal"))
    if causal and not dims_equal(q.shape[-2], k.shape[-2]):
        # PyTorch aligns is_causal top-left; make that explicit when Sq may differ from Skv.
        cm = causal_mask(ctx, q.shape[-2], k.shape[-2], ctx.out.dtype, top_left=True)
        mask = cm if mask is None else ctx.emit("nnef.add", [float_mask(ctx, mask, ctx.out.dtype), cm], mask.type.with_dtype(ctx.out.dtype))
        causal = False
    return attention(ctx, q, k, v, mask, scale=a.get("scale"), causal=causal, softcap=None, out=ctx.out)


@builtin("t2ir.sdpa")
def t2ir_sdpa(node: Node, ctx: LowerContext) -> Value:
    q, k, v, *rest = node.inputs
    return attention(ctx, q, k, v, rest[0] if rest else None, scale=node.attrs.get("scale"),
                     causal=bool(node.attrs.get("causal")), softcap=node.attrs.get("softcap"), out=ctx.out)
