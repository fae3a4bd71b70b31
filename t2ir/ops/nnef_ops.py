"""Signatures of the NNEF-level ops t2ir emits (standard NNEF plus tract's registries).

Each row: IR name, positional tensor parameters (`*` = list of tensors), keyword attributes.
A `?` parameter is an optional trailing tensor. A parameter may also be given as a literal attribute (`sub(1.0, x)` is `nnef.sub(%x, x=1.0)`).
"""

from __future__ import annotations

from t2ir.ops.registry import register_nnef_op

_UNARY = (
    "exp log sin cos tan abs neg sign recip floor ceil round sqrt rsqrt tanh sigmoid relu not copy "
    "softplus asin acos atan sinh cosh asinh acosh atanh square"
).split()
_BINARY = "add sub mul div pow min max and or eq ne lt gt le ge".split()

_TABLE: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    *[(f"nnef.{op}", ("x",), ()) for op in _UNARY],
    *[(f"nnef.{op}", ("x", "y"), ()) for op in _BINARY],
    ("nnef.select", ("condition", "true_value", "false_value"), ()),
    ("nnef.clamp", ("x", "a", "b"), ()),
    ("nnef.leaky_relu", ("x",), ("alpha",)),
    ("nnef.elu", ("x",), ("alpha",)),
    ("nnef.matmul", ("A", "B"), ("transposeA", "transposeB")),
    ("nnef.conv", ("input", "filter", "bias"),
     ("border", "padding", "stride", "dilation", "groups")),
    ("nnef.deconv", ("input", "filter", "bias"),
     ("border", "padding", "stride", "dilation", "groups", "output_shape")),
    ("nnef.max_pool", ("input",), ("size", "border", "padding", "stride", "dilation")),
    ("nnef.avg_pool", ("input",), ("size", "border", "padding", "stride", "dilation")),
    ("nnef.box", ("input",), ("size", "border", "padding", "stride", "dilation", "normalize")),
    ("nnef.batch_normalization", ("input", "mean", "variance", "offset", "scale"), ("epsilon",)),
    ("nnef.reshape", ("input",), ("shape", "axis_start", "axis_count")),
    ("nnef.transpose", ("input",), ("axes",)),
    ("nnef.squeeze", ("input",), ("axes",)),
    ("nnef.unsqueeze", ("input",), ("axes",)),
    ("nnef.slice", ("input",), ("axes", "begin", "end", "stride")),
    ("nnef.concat", ("*values",), ("axis",)),
    ("nnef.stack", ("*values",), ("axis",)),
    ("nnef.tile", ("input",), ("repeats",)),
    ("nnef.pad", ("input",), ("padding", "border", "value")),
    ("nnef.sum_reduce", ("input",), ("axes", "normalize")),
    ("nnef.mean_reduce", ("input",), ("axes",)),
    ("nnef.max_reduce", ("input",), ("axes",)),
    ("nnef.min_reduce", ("input",), ("axes",)),
    ("nnef.argmax_reduce", ("input",), ("axes",)),
    ("nnef.argmin_reduce", ("input",), ("axes",)),
    ("nnef.softmax", ("x",), ("axes",)),
    ("tract_core.cast", ("input",), ("to",)),
    ("tract_core.gather", ("input", "indices"), ("axis", "datum_type")),
    ("tract_core.gather_elements", ("input", "indices"), ("axis",)),
    ("tract_core.range", ("start", "end", "step"), ()),
    ("tract_core.trilu", ("input", "k"), ("upper",)),
    ("tract_core.einsum", ("*inputs",), ("expr", "acc", "output")),
    ("tract_core.erf", ("x",), ()),
    ("tract_core.gelu_approx", ("x",), ("fast_impl",)),
    ("tract_core.round_even", ("x",), ()),
    ("tract_core.silu", ("x",), ()),
    ("tract_core.rms_norm", ("input",), ("axis", "eps")),
    ("tract_core.scaled_rms_norm", ("input", "scale"), ("axis", "eps")),
    ("tract_core.cumsum", ("input",), ("axis", "exclusive", "reverse")),
    ("tract_core.fft", ("input",), ("axis", "inverse")),
    ("tract_core.topk", ("input", "k"), ("axis", "largest")),
    ("tract_core.scatter_nd", ("input", "indices", "updates"), ("reduction",)),
    ("tract_core.argmax_reduce_last", ("input",), ("axes",)),
    ("tract_core.argmin_reduce_last", ("input",), ("axes",)),
    ("tract_core.scatter_elements", ("input", "indices", "updates"), ("axis", "reduction")),
    ("tract_core.hard_swish", ("x",), ()),
    ("tract_core.log_softmax", ("x",), ("axes",)),
    ("nnef.moments", ("input",), ("axes",)),
    ("nnef.any_reduce", ("input",), ("axes",)),
    ("nnef.all_reduce", ("input",), ("axes",)),
    ("tract_core.xor", ("x", "y"), ()),
    ("tract_transformers.apply_rope", ("input", "cos", "sin"), ()),
    ("tract_transformers.sdpa", ("q", "k", "v", "?mask"), ("datum_type", "acc_datum_type", "is_causal", "scale")),
    # optional tensors wg_bias, w1_bias, w3_bias, w2_bias go by keyword (registry.TENSOR_KEYWORDS)
    ("tract_transformers.moe_ffn", ("x", "wg", "w1", "w2", "?w3"),
     ("k", "activation", "gate", "expert_layout", "act_alpha", "act_limit")),
    ("tract_core.broadcast", ("input",), ("shape",)),
    ("tract_core.product_reduce", ("input",), ("axes",)),
    ("tract_core.dyn_slice", ("input", "start", "end"), ("axis", "len")),
    ("tract_transformers.silu", ("x",), ()),
    ("tract_transformers.rms_norm", ("input",), ("axis", "eps")),
    ("tract_core.is_nan", ("x",), ()),
    ("tract_core.is_inf", ("x",), ("detect_positive", "detect_negative")),
    ("tract_core.bitand", ("x", "y"), ()),
    ("tract_core.bitor", ("x", "y"), ()),
    ("tract_core.bitxor", ("x", "y"), ()),
    ("tract_core.bitnot", ("x",), ()),
    ("tract_core.gather_nd", ("input", "indices"), ("batch_dims",)),
    ("nnef.max_pool_with_index", ("input",), ("size", "border", "padding", "stride", "dilation")),
    ("tract_core.resize", ("input",), ("scales", "sizes", "coord_transformer", "interpolator", "nearest_mode")),
]

for _name, _params, _attrs in _TABLE:
    register_nnef_op(_name, _params, _attrs, origin="builtin")

# tract's scan: tensors are named inside `scan` / `full` / `state` (see NnefSignature.input_refs)
register_nnef_op("tract_core.scan", (), ("output", "skip", "reset_every_turn", "external_state"),
                 input_refs=("scan", "full", "state"), fragment_refs=("body",), origin="builtin")

# A tensor's shape as i64 data (tract_core_shape_of gives TDim, which an op reading sizes from a
# tensor, such as topk's k, cannot evaluate; the cast makes tract compute it at run time).
register_nnef_op("fragment.t2ir_shape_of_i64", ("x",), fragment="""
fragment t2ir_shape_of_i64<?>( x: tensor<?> ) -> ( shape: tensor<integer> )
{
    shape = tract_core_cast(tract_core_shape_of(x), to = "i64");
}""", origin="builtin")
