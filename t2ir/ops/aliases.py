"""The one table of op aliases: groups of op names that passes and translations treat alike.

Every pass, pattern and translation that asks "is this an identity / a cast / attention?" reads
these sets, so adding a spelling (a new torch overload, an NNEF-level twin) is one edit here.
"""

from __future__ import annotations

# Return their first input unchanged in inference (dropout is off in an exported graph).
IDENTITY = frozenset({
    "aten.clone", "aten.contiguous", "aten.detach", "aten.detach_", "aten.alias", "aten.lift_fresh",
    "aten.lift_fresh_copy", "aten.positive",
})
# Random in training, nothing in inference (train=False or p=0).
DROPOUT = frozenset({"aten.dropout", "aten.feature_dropout", "aten.alpha_dropout", "aten.feature_alpha_dropout"})
# Change the element type only (source level).
CASTS = frozenset({"aten._to_copy", "aten.to.dtype", "aten.to.dtype_layout", "aten.to.device", "aten.type_as"})
NNEF_CAST = "tract_core.cast"
# Reinterpret the shape of their first input (source level).
RESHAPES = frozenset({"aten.view", "aten.reshape", "aten._unsafe_view"})
NNEF_RESHAPES = frozenset({"nnef.reshape", "nnef.squeeze", "nnef.unsqueeze"})
# Swap two axes.
TRANSPOSES = frozenset({"aten.transpose.int", "aten.swapaxes", "aten.swapdims"})
CONCATS = frozenset({"aten.cat", "aten.concat", "aten.concatenate"})
SOFTMAX = frozenset({"aten.softmax.int", "aten._softmax", "aten.softmax"})

# Arithmetic, by operator (tensor and scalar overloads of the same operation).
ADD = frozenset({"aten.add.Tensor", "aten.add.Scalar"})
SUB = frozenset({"aten.sub.Tensor", "aten.sub.Scalar"})
MUL = frozenset({"aten.mul.Tensor", "aten.mul.Scalar"})
DIV = frozenset({"aten.div.Tensor", "aten.div.Scalar"})

# Attention, in source form and as t2ir's own fused node; the key and value operand positions.
ATTENTION = frozenset({"t2ir.sdpa", "aten.scaled_dot_product_attention"})
ATTENTION_KV_INPUTS = {1: "key", 2: "value"}
# Normalisations that upcast-f32 computes in f32.
NORMS = frozenset({"t2ir.rms_norm", "aten.layer_norm", "aten.rms_norm", "aten.group_norm"})
