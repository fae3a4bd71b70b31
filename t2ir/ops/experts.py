"""`t2ir::expert_linear`: one projection of a mixture-of-experts layer, as a torch op and its
tract translation (the frontend's "t2ir" experts implementation calls it, see t2ir.frontend.moe)."""

from __future__ import annotations

from typing import Optional

import torch

from t2ir.ir import Node, Value
from t2ir.ops.aten._util import unsqueeze_to_rank
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import TENSOR_KEYWORDS, builtin
from t2ir.types import DType, TensorType


@torch.library.custom_op("t2ir::expert_linear", mutates_args=())
def expert_linear(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  transposed: bool) -> torch.Tensor:
    """Each token's rows through the experts it was routed to.

    x [T, in] (one row per token) or [T, k, in] (one per token and slot), index [T, k],
    weight [E, out, in] ([E, in, out] when `transposed`), bias [E, out] -> [T, k, out].
    """
    w = weight[index]
    if transposed:
        w = w.transpose(-1, -2)
    rows = x.unsqueeze(1) if x.dim() == 2 else x
    y = torch.matmul(w, rows.unsqueeze(-1).to(w.dtype)).squeeze(-1)
    return y if bias is None else y + bias[index]


@expert_linear.register_fake
def _(x, index, weight, bias, transposed):
    out = weight.shape[2] if transposed else weight.shape[1]
    return x.new_empty((index.shape[0], index.shape[1], out), dtype=weight.dtype)


@builtin("t2ir.expert_linear")
def lower_expert_linear(node: Node, ctx: LowerContext) -> Value:
    """x [T, in] or [T, k, in] through the experts `index` [T, k] selects in `weight` [E, out, in]
    (`transposed`: [E, in, out]): a gather of the selected matrices, then a batched matmul. Used
    where the experts could not be fused into tract's MoE operator."""
    x, index, weight = ctx.args["x"], ctx.args["index"], ctx.args["weight"]
    bias, transposed = ctx.args.get("bias"), bool(ctx.args["transposed"])
    out = ctx.out
    t, k, width = out.shape
    index = ctx.cast(index, DType.i64)
    chosen = ctx.emit("tract_core.gather", [weight, index], weight.type.with_shape((t, k, *weight.shape[1:])), axis=0)
    chosen = ctx.cast(chosen, out.dtype)
    rows = ctx.cast(x, out.dtype)
    if rows.rank == 2:
        rows = ctx.emit("nnef.unsqueeze", [rows], rows.type.with_shape((t, 1, rows.shape[1])), axes=[1])
    rows = ctx.emit("nnef.unsqueeze", [rows], rows.type.with_shape((t, rows.shape[1], 1, rows.shape[2])), axes=[2])
    if rows.shape[1] != k:  # one row per token, used by each of its k experts
        rows = ctx.emit("nnef.tile", [rows], rows.type.with_shape((t, k, 1, rows.shape[3])), repeats=[1, k, 1, 1])
    y = ctx.emit("nnef.matmul", [rows, chosen], out.with_shape((t, k, 1, width)), transposeB=not transposed)
    y = ctx.emit("nnef.squeeze", [y], out, axes=[2])
    if bias is None:
        return y
    b = ctx.emit("tract_core.gather", [bias, index], bias.type.with_shape((t, k, width)), axis=0)
    return ctx.emit("nnef.add", [y, unsqueeze_to_rank(ctx, ctx.cast(b, out.dtype), 3)], out)


@builtin("t2ir.moe_ffn")
def lower_moe_ffn(node: Node, ctx: LowerContext) -> Value:
    """t2ir.moe_ffn(x, wg, w1, w2[, w3], *biases) -> tract's tract_moe_ffn, experts in the "linear"
    layout ([E, out, in], the one with a fast Q4_0 kernel); `biases` names the trailing inputs."""
    dtype = ctx.out.dtype
    attrs = {key: node.attrs[key] for key in ("k", "activation", "gate", "act_alpha", "act_limit") if key in node.attrs}
    biases = list(node.attrs.get("biases", ()))
    inputs = [ctx.cast(v, dtype) if i < 2 or i >= len(node.inputs) - len(biases) else v
              for i, v in enumerate(node.inputs)]
    if biases:
        attrs[TENSOR_KEYWORDS] = biases
    return ctx.emit("tract_transformers.moe_ffn", inputs, ctx.out, expert_layout="linear", **attrs)


# Logit of an expert the model did not route to: below any routing weight, and an f16 number.
NOT_ROUTED = -60000.0


@builtin("t2ir.moe_experts")
def lower_moe_experts(node: Node, ctx: LowerContext) -> Value:
    """Experts with the model's own routing (`index`, `weights` [T, k]) through tract_moe_ffn.

    tract's operator routes by itself (top-k of x @ wg^T), so the model's routing rides along x:
    its weights, scattered into per-expert logits (NOT_ROUTED elsewhere), become `routing_width`
    extra input columns; the expert weights have zero columns there, and the down projection zero
    rows (fuse-moe padded them, so the extra output columns are dropped), and a router reading only
    those columns with the "raw" gate makes tract pick exactly the model's experts, weighted by
    exactly the model's weights.
    """
    from t2ir.ops.aten.factories import fill

    x, index, weights, *experts = node.inputs
    dtype = ctx.out.dtype
    tokens, hidden = x.shape
    width = int(node.attrs["routing_width"])
    num_experts = experts[0].shape[0]
    logits = fill(ctx, NOT_ROUTED, TensorType(dtype, (tokens, width)))
    logits = ctx.emit("tract_core.scatter_elements", [logits, ctx.cast(index, DType.i64), ctx.cast(weights, dtype)],
                      logits.type, axis=1)
    wide = ctx.emit("nnef.concat", [ctx.cast(x, dtype), logits], TensorType(dtype, (tokens, hidden + width)), axis=1)
    attrs = {key: node.attrs[key] for key in ("k", "activation", "act_alpha", "act_limit") if key in node.attrs}
    biases = list(node.attrs.get("biases", ()))
    if biases:
        attrs[TENSOR_KEYWORDS] = biases
    router = _routing_reader(ctx, num_experts, hidden, width, dtype)
    y = ctx.emit("tract_transformers.moe_ffn", [wide, router, *experts], wide.type, gate="raw",
                 expert_layout="linear", **attrs)
    return ctx.emit("nnef.slice", [y], ctx.out, axes=[1], begin=[0], end=[hidden])


def _routing_reader(ctx: LowerContext, num_experts: int, hidden: int, width: int, dtype: DType) -> Value:
    """[E, hidden + width]: expert e's logit is input column hidden + e (one constant per shape)."""
    label = f"t2ir.routing_reader.{num_experts}x{hidden}+{width}.{dtype.value}"
    found = next((v for v in ctx.graph.consts if v.const.label == label), None)
    if found is not None:
        return found
    reader = torch.zeros(num_experts, hidden + width, dtype=dtype.torch)
    reader[:, hidden:hidden + num_experts] = torch.eye(num_experts, dtype=dtype.torch)
    return ctx.const("routing_reader", reader, label=label)
