"""Attention: `aten.scaled_dot_product_attention` and the IR's own `t2ir.sdpa` node.

`t2ir.sdpa(q, k, v[, mask], scale=, causal=, softcap=)` is what the fusion pass builds from
decomposed attention. `causal` is aligned bottom-right (query i sees keys j <= i + Skv - Sq),
the alignment KV-cache decoding needs and tract's operator uses; it equals PyTorch's top-left
`is_causal` whenever Sq == Skv. It becomes matmuls and a softmax (grouped heads reading their kv
head without copies), or, with `ExportOptions.attention="sdpa"`, tract's one `sdpa` operator when
tract can express it (rank 4 or rank 3 without grouped heads, an additive mask of a shape tract
accepts, no soft-capping).
"""

from __future__ import annotations

import math

from t2ir.errors import TranslationError
from t2ir.ir import Node, Value
from t2ir.ops.aten._util import symbol_scalar, unsqueeze_to_rank
from t2ir.ops.aten.factories import fill
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.types import DType, TensorType, dims_equal, simplify_dim

NEG_LARGE = -3.4028234663852886e38


def additive(ctx: LowerContext, allowed: Value, dtype: DType) -> Value:
    """0 where `allowed`, the most negative finite value of `dtype` elsewhere. tract makes a
    select of float literals f32, so other types get an explicit cast (adding an f32 mask to f16
    scores would silently promote them)."""
    lowest = -65504.0 if dtype == DType.f16 else NEG_LARGE
    mask = ctx.emit("nnef.select", [allowed], allowed.type.with_dtype(DType.f32), true_value=0.0, false_value=lowest)
    return ctx.cast(mask, dtype)


def float_mask(ctx: LowerContext, mask: Value | None, dtype: DType) -> Value | None:
    """Boolean masks (True = attend) become additive float masks."""
    if mask is None:
        return None
    if mask.dtype == DType.bool:
        return additive(ctx, mask, dtype)
    return ctx.cast(mask, dtype)


def causal_mask(ctx: LowerContext, sq, skv, dtype: DType, top_left: bool) -> Value:
    """Additive [Sq, Skv] mask: 0 where key j <= i + offset, very negative elsewhere.

    Built from tract's trilu on ones (lower triangle shifted by the offset) rather than from two
    position ranges and a comparison: tract 0.23.9 mis-optimizes the range form when the batch
    is larger than 1 and the sequence length is symbolic ("Can not broadcast S against batch")."""
    offset = 0 if top_left else simplify_dim(skv - sq)
    t = TensorType(DType.f32, (sq, skv))
    ones = fill(ctx, 1.0, t)
    k = offset if isinstance(offset, int) else symbol_scalar(ctx, offset, DType.i64)
    if isinstance(k, Value):
        lower = ctx.emit("tract_core.trilu", [ones, k], t, upper=False)
    else:
        lower = ctx.emit("tract_core.trilu", [ones], t, k=k, upper=False)
    return additive(ctx, ctx.emit("nnef.gt", [lower], t.with_dtype(DType.bool), y=0.5), dtype)


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
    if fits_tract and (mask is None or _tract_mask_ok(mask, q)) and use_tract_sdpa(ctx.options.attention, q, k):
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
    return matmul_attention(ctx, q, k, v, mask, scale=scale, causal=causal, softcap=softcap, out=out)


def use_tract_sdpa(choice: str, q: Value, k: Value) -> bool:
    """Whether attention runs as tract's fused sdpa operator or as matmuls and softmax.

    "auto" is matmuls: measured in tract 0.23.9 on CPU (docs/benchmarks.md, a 150M Llama with 16
    heads / 4 kv heads of 64), they were faster than tract's sdpa kernel in 19 of 21 (scenario,
    precision) pairs, up to 1.4x for decode steps with a long past, and never more than 8 % slower."""
    if choice not in ("auto", "sdpa", "matmul"):
        raise TranslationError(f"attention={choice!r} is not one of auto, sdpa, matmul")
    return choice == "sdpa" or choice == "auto" and _split_heads(k)


def _split_heads(k: Value) -> bool:
    """Keys concatenated along the head dimension (decoupled rotary parts, as in multi-head latent
    attention). tract 0.23.9's optimizer splits a matmul over such a concat into one per part
    and then fails on the parts ("concat-einsum": an EinSum whose input ranks do not match), so
    "auto" gives these tract's sdpa operator, which it leaves whole."""
    node = k.producer
    return node is not None and node.op == "nnef.concat" and node.attrs.get("axis") in (-1, k.rank - 1)


def _add_causal(ctx: LowerContext, mask: Value, q: Value, k: Value, dtype: DType) -> Value:
    cm = causal_mask(ctx, q.shape[-2], k.shape[-2], dtype, top_left=False)
    rank = mask.rank
    cm = unsqueeze_to_rank(ctx, cm, rank)
    shape = tuple(m if m != 1 else c for m, c in zip(mask.shape, cm.shape))
    return ctx.emit("nnef.add", [mask, cm], mask.type.with_shape(shape))


def matmul_attention(ctx: LowerContext, q: Value, k: Value, v: Value, mask: Value | None, *,
                     scale: float | None, causal: bool, softcap: float | None, out: TensorType) -> Value:
    """softmax(q k^T * scale [softcap] + mask) v with plain matmuls and softmax.

    Grouped heads read their kv head without copies: q [B, Hq, S, D] is viewed as
    [B, Hkv, g*S, D] (query heads are kv-major, so this is a reshape), one matmul per kv head
    serves its g query heads, and the scores are viewed as [B, Hkv, g, S, Skv] for the mask.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    lead, (sq, d), skv = tuple(q.shape[:-3]) if q.rank >= 3 else (), q.shape[-2:], k.shape[-2]
    hq = q.shape[-3] if q.rank >= 3 else 1
    hkv = k.shape[-3] if k.rank >= 3 else 1
    group = 1 if dims_equal(hq, hkv) else hq // hkv
    if group > 1:
        q = ctx.emit("nnef.reshape", [q], q.type.with_shape(lead + (hkv, group * sq, d)),
                     shape=list(lead + (hkv, group * sq, d)))
    st = q.type.with_shape(tuple(q.shape[:-1]) + (skv,))
    scores = ctx.emit("nnef.matmul", [q, k], st, transposeB=True, name="scores")
    scores = ctx.emit("nnef.mul", [scores], st, y=scale)
    if softcap:
        capped = ctx.emit("nnef.tanh", [ctx.emit("nnef.mul", [scores], st, y=1.0 / softcap)], st)
        scores = ctx.emit("nnef.mul", [capped], st, y=float(softcap))
    if causal:
        cm = causal_mask(ctx, sq, skv, st.dtype, False)
        mask = cm if mask is None else ctx.emit("nnef.add", [mask, unsqueeze_to_rank(ctx, cm, mask.rank)],
                                                mask.type.with_shape(_broadcast(mask.shape, cm.shape)))
    if mask is not None:
        scores = _add_grouped_mask(ctx, scores, mask, group, sq)
    probs = ctx.emit("nnef.softmax", [scores], scores.type, axes=[scores.rank - 1])
    if probs.rank != st.rank:
        probs = ctx.emit("nnef.reshape", [probs], st, shape=list(st.shape))
    y = ctx.emit("nnef.matmul", [probs, v], out.with_shape(tuple(q.shape[:-1]) + (v.shape[-1],)))
    return y if y.type == out else ctx.emit("nnef.reshape", [y], out, shape=list(out.shape))


def _broadcast(a, b) -> tuple:
    a, b = (1,) * (len(b) - len(a)) + tuple(a), (1,) * (len(a) - len(b)) + tuple(b)
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _add_grouped_mask(ctx: LowerContext, scores: Value, mask: Value, group: int, sq) -> Value:
    """scores [.., Hkv, g*S, Skv] + mask ([S, Skv], [.., 1|Hq, S, Skv]): the scores are viewed
    as [.., Hkv, g, S, Skv] so one mask row serves every head of a group, or a per-head mask
    lines up with its head."""
    if group == 1:
        return ctx.emit("nnef.add", [scores, unsqueeze_to_rank(ctx, mask, scores.rank)], scores.type)
    *lead, hkv, _, skv = scores.shape
    grouped = scores.type.with_shape((*lead, hkv, group, sq, skv))
    scores = ctx.emit("nnef.reshape", [scores], grouped, shape=list(grouped.shape))
    if mask.rank >= 3 and mask.shape[-3] != 1:  # one mask per query head: split like the scores
        heads = mask.shape[-3]
        mask = ctx.emit("nnef.reshape", [mask], mask.type.with_shape((*mask.shape[:-3], heads // group, group,
                                                                      *mask.shape[-2:])),
                        shape=[*mask.shape[:-3], heads // group, group, *mask.shape[-2:]])
    elif mask.rank >= 3:  # [.., 1, S, Skv] (one mask per batch row): the group axis goes before S
        mask = ctx.emit("nnef.unsqueeze", [mask], mask.type.with_shape((*mask.shape[:-2], 1, *mask.shape[-2:])),
                        axes=[mask.rank - 2])
    mask = unsqueeze_to_rank(ctx, mask, grouped.rank)
    return ctx.emit("nnef.add", [scores, mask], grouped)


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
