"""The operator test table: one row per (op, pattern), with the dtypes and dynamic axes it is
checked with in tract. `tests/test_ops.py` runs every row; the rows are data so that the table
doubles as the list of what t2ir supports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# Sizes of the dynamic symbols: every case runs at both, so the symbolic shapes must generalise.
SIZES = ({"B": 2, "S": 3, "L": 6}, {"B": 3, "S": 5, "L": 10})


@dataclass(frozen=True)
class In:
    """An input: shape (ints, or symbol names that become dynamic axes) and value kind.

    kind: "float" (N(0,1)), "pos" (in [0.5, 2.5]), "int" (in [-5, 5]), "bool", "index" (in
    [0, high), high may be a symbol).
    """

    shape: tuple
    kind: str = "float"
    high: object = 0


def X(*shape) -> In:
    return In(shape)


def Pos(*shape) -> In:
    return In(shape, "pos")


def Int(*shape) -> In:
    return In(shape, "int")


def Mask(*shape) -> In:
    return In(shape, "bool")


def Idx(high, *shape) -> In:
    return In(shape, "index", high)


@dataclass(frozen=True)
class Case:
    """`fn(*inputs)` or `mod()(*inputs)` compared in tract and eager, for each of `dtypes`.

    `dtypes` lists the float types the case runs in ("f32", "f16", "f64"): float inputs and
    module parameters are converted. `static` freezes the symbols named there (torch.export would
    specialise them). `atol` overrides the default tolerance of the dtype.
    """

    id: str
    inputs: tuple[In, ...]
    fn: Optional[Callable] = None
    mod: Optional[Callable[[], nn.Module]] = None
    dtypes: tuple[str, ...] = ("f32",)
    static: tuple[str, ...] = ()
    atol: Optional[float] = None


F16 = ("f32", "f16")
F64 = ("f32", "f64")  # tract computes f64; a few ops go through f32 (t2ir.ops.context.NO_F64_OPS)
ALL = ("f32", "f16", "f64")


def c(id: str, fn, *inputs: In, **kw) -> Case:
    return Case(id, tuple(inputs), fn=fn, **kw)


def m(id: str, mod, *inputs: In, **kw) -> Case:
    return Case(id, tuple(inputs), mod=mod, **kw)


class HFRMSNorm(nn.Module):
    """The transformers (Llama) RMSNorm pattern, written out."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        var = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        return self.weight * x.to(dtype)


class WithBuffer(nn.Module):
    """A module whose forward combines an input with a parameter (constant weights in tract)."""

    def __init__(self, fn, *shape):
        super().__init__()
        self.fn = fn
        self.w = nn.Parameter(torch.randn(*shape))

    def forward(self, *xs):
        return self.fn(self.w, *xs)


def _bn(n: int, c: int) -> nn.Module:
    bn = (nn.BatchNorm1d if n == 1 else nn.BatchNorm2d)(c)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return bn


def _keep_first(m):
    """A mask with its first column False, so no softmax row is fully masked (no NaN)."""
    return torch.cat([torch.zeros_like(m[..., :1]), m[..., 1:]], -1)


def _sdpa(**kw):
    return lambda q, k, v, *mask: F.scaled_dot_product_attention(q, k, v, *mask, **kw)


ELEMENTWISE = [
    c("add", lambda a, b: a + b, X("B", 4), X("B", 4), dtypes=ALL),
    c("add_broadcast", lambda a, b: a + b, X("B", 3, 4), X(4), dtypes=F16),
    c("add_broadcast_mid", lambda a, b: a + b, X("B", 3, 4), X(3, 1), dtypes=F16),
    c("add_alpha", lambda a, b: torch.add(a, b, alpha=2.5), X("B", 4), X("B", 4)),
    c("add_scalar", lambda a: a + 1.5, X("B", 4), dtypes=F16),
    c("sub", lambda a, b: a - b, X("B", 1, 4), X(3, 4), dtypes=F16),
    c("rsub", lambda a: 2.0 - a, X("B", 4)),
    c("mul", lambda a, b: a * b, X("B", 3, 4), X("B", 1, 4), dtypes=F16),
    c("mul_scalar", lambda a: a * 3, X("B", 4), dtypes=F16),
    c("div", lambda a, b: a / b, X("B", 4), Pos("B", 4), dtypes=F16),
    c("div_scalar", lambda a: a / 4, X("B", 4)),
    c("floor_divide", lambda a, b: torch.div(a, b, rounding_mode="floor"), X("B", 4), Pos("B", 4)),
    c("trunc_divide", lambda a, b: torch.div(a, b, rounding_mode="trunc"), X("B", 4), Pos("B", 4)),
    c("remainder", lambda a, b: torch.remainder(a, b), X("B", 4), Pos("B", 4)),
    c("fmod", lambda a: torch.fmod(a, 0.7), X("B", 4)),
    c("add_int", lambda a, b: a + b, Int("B", 4), Int("B", 4)),
    c("mul_int_scalar", lambda a: a * 3 + 1, Int("B", 4)),
    c("int_float_promote", lambda a, b: a * b, Int("B", 4), X("B", 4)),
    c("floor_divide_int", lambda a: a // 2, Int("B", 4)),
    c("maximum", torch.maximum, X("B", 4), X(4), dtypes=F16),
    c("minimum", torch.minimum, X("B", 4), X("B", 4)),
    c("pow_scalar", lambda a: a ** 3, X("B", 4), dtypes=F16),
    c("pow_frac", lambda a: a ** 2.5, Pos("B", 4)),
    c("pow_square", lambda a: a.pow(2), X("B", 4)),
    c("pow_tensor", torch.pow, Pos("B", 4), X("B", 4)),
    c("pow_scalar_base", lambda a: 2.0 ** a, X("B", 4)),
    c("sqrt", torch.sqrt, Pos("B", 4), dtypes=F16),
    c("rsqrt", torch.rsqrt, Pos("B", 4), dtypes=F16),
    c("exp", torch.exp, X("B", 4), dtypes=F16),
    c("log", torch.log, Pos("B", 4), dtypes=F16),
    c("abs", torch.abs, X("B", 4), dtypes=F16),
    c("neg", torch.neg, X("B", 4), dtypes=F16),
    c("reciprocal", torch.reciprocal, Pos("B", 4), dtypes=F16),
    c("sign", torch.sign, X("B", 4)),
    c("floor", torch.floor, X("B", 4), dtypes=F16),
    c("ceil", torch.ceil, X("B", 4), dtypes=F16),
    c("round", lambda a: torch.round(a * 2), X("B", 4), dtypes=F64),
    c("trig", lambda a: torch.sin(a) + torch.cos(a) * torch.tanh(a), X("B", 4), dtypes=F16),
    c("clamp", lambda a: torch.clamp(a, -0.5, 0.7), X("B", 4), dtypes=F16),
    c("clamp_min", lambda a: a.clamp(min=0.1), X("B", 4)),
    c("clamp_max", lambda a: a.clamp(max=0.1), X("B", 4)),
    c("clamp_tensor", lambda a, lo, hi: torch.clamp(a, lo, hi), X("B", 4), X(4), X("B", 4)),
    c("clamp_int", lambda a: a.clamp(-2, 3), Int("B", 4)),
    c("eq_ne", lambda a, b: torch.stack([a == b, a != b]), Int("B", 4), Int(4)),
    c("compare_bool", lambda m, n: torch.stack([m == 0, m != n, m < n, m >= n]), Mask("B", 4), Mask(4)),
    c("lt_le", lambda a, b: torch.stack([a < b, a <= b]), X("B", 4), X("B", 4)),
    c("gt_ge_scalar", lambda a: torch.stack([a > 0.2, a >= 0.0]), X("B", 4), dtypes=F16),
    c("compare_int_scalar", lambda a: (a > 1) & (a <= 3), Int("B", 4)),
    c("where", torch.where, Mask("B", 4), X("B", 4), X(4), dtypes=F16),
    c("where_scalar", lambda m, a: torch.where(m, a, 0.0), Mask("B", 1), X("B", 4)),
    c("where_from_compare", lambda a: torch.where(a > 0, a, a * 0.1), X("B", 4)),
    c("masked_fill", lambda a, m: a.masked_fill(m, -1.5), X("B", 3, 4), Mask(3, 4), dtypes=F16),
    c("masked_fill_neg_inf", lambda a, m: a.masked_fill(_keep_first(m), float("-inf")).softmax(-1),
      X("B", 4), Mask("B", 4)),
    c("masked_fill_tensor", lambda a, m, v: a.masked_fill(m, v), X("B", 4), Mask("B", 4), X()),
    c("masked_fill_broadcast_x", lambda a, m: a.masked_fill(m, 10.0), X(4), Mask("B", 4)),
    c("logical", lambda a, b: torch.stack([a & b, a | b, a ^ b, ~a, torch.logical_and(a, b),
                                           torch.logical_or(a, b), torch.logical_xor(a, b), torch.logical_not(b)]),
      Mask("B", 4), Mask("B", 4)),
    c("bitwise_int", lambda a, b: torch.stack([a & b, a | b, a ^ b, ~a, a & 3]), Int("B", 4), Int("B", 4)),
    c("isfinite", lambda a: torch.stack([torch.isfinite(a.log()), torch.isposinf(1 / (a - a))]), X("B", 4)),
    c("isnan_isinf", lambda a: torch.stack([torch.isnan(a.log()), torch.isinf(1 / (a - a))]), X("B", 4), dtypes=F64),
]

ACTIVATIONS = [
    c("relu", F.relu, X("B", 8), dtypes=F16),
    c("relu6_hardtanh", lambda a: F.relu6(a * 4) + F.hardtanh(a), X("B", 8)),
    c("leaky_relu", lambda a: F.leaky_relu(a, 0.2), X("B", 8), dtypes=ALL),
    c("gelu", F.gelu, X("B", 8), dtypes=ALL),
    c("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"), X("B", 8), dtypes=ALL),
    c("silu", F.silu, X("B", 8), dtypes=ALL),
    c("sigmoid", torch.sigmoid, X("B", 8), dtypes=ALL),
    c("tanh", torch.tanh, X("B", 8), dtypes=F16),
    c("softplus", F.softplus, X("B", 8), dtypes=F16),
    c("softplus_beta", lambda a: F.softplus(a * 10, beta=2.0, threshold=5.0), X("B", 8)),
    c("elu", F.elu, X("B", 8), dtypes=F16),
    c("elu_alpha", lambda a: F.elu(a, alpha=0.5), X("B", 8)),
    c("selu_celu", lambda a: F.selu(a) + F.celu(a, 1.5), X("B", 8)),
    c("hardswish", lambda a: F.hardswish(a * 3), X("B", 8), dtypes=ALL),
    c("hardsigmoid", lambda a: F.hardsigmoid(a * 3), X("B", 8)),
    c("mish", F.mish, X("B", 8)),
    c("softmax", lambda a: F.softmax(a, -1), X("B", 3, 8), dtypes=ALL),
    c("softmax_dim1", lambda a: F.softmax(a, 1), X("B", 3, 8)),
    c("log_softmax", lambda a: F.log_softmax(a, -1), X("B", 8), dtypes=F16),
    m("prelu", lambda: nn.PReLU(4), X("B", 4, 5)),
    c("prelu_scalar", lambda a, w: F.prelu(a, w), X(), X(1)),
    c("softmax_scalar", lambda a: (a.softmax(0), a.log_softmax(-1)), X()),
]

def _windows_then_linear(x, w, b):
    """A linear over [windows * B, 2, 2, C] (Hiera, Swin): tract folds the reshape into the product."""
    n = x.shape[0]
    y = x.view(n, 2, 2, 2, 2, 8).permute(0, 1, 3, 2, 4, 5).reshape(n * 4, 2, 2, 8)
    return F.linear(y, w, b)


LINALG = [
    c("matmul_2d", torch.matmul, X("S", 4), X(4, 5), dtypes=F16),
    c("matmul_batched", torch.matmul, X("B", 3, 4), X("B", 4, 5), dtypes=ALL),
    c("matmul_broadcast", torch.matmul, X("B", 2, 3, 4), X(4, 5)),
    c("matmul_broadcast_batch", torch.matmul, X("B", 1, 3, 4), X(2, 4, 5)),
    c("matmul_vec", lambda a, v: a @ v, X("B", 3, 4), X(4)),
    c("matmul_vec_left", lambda v, a: v @ a, X(4), X("B", 4, 3)),
    c("dot", lambda a, b: a @ b, X(5), X(5)),
    c("mm", torch.mm, X("S", 4), X(4, 6)),
    c("bmm", torch.bmm, X("B", 3, 4), X("B", 4, 2), dtypes=F16),
    m("linear", lambda: nn.Linear(8, 6), X("B", "S", 8), dtypes=F16),
    m("linear_2d_nobias", lambda: nn.Linear(8, 6, bias=False), X("B", 8)),
    c("linear_rank4_after_window_split", _windows_then_linear, X("B", 4, 4, 8), X(6, 8), X(6), dtypes=F16),
    c("linear_functional", lambda x, w, b: F.linear(x, w, b), X("B", 8), X(3, 8), X(3)),
    c("addmm", lambda b, x, y: torch.addmm(b, x, y, beta=0.5, alpha=2.0), X(6), X("B", 4), X(4, 6)),
    c("einsum_bmm", lambda a, b: torch.einsum("bij,bjk->bik", a, b), X("B", 3, 4), X("B", 4, 5), dtypes=F16),
    c("einsum_attn", lambda q, k: torch.einsum("bhqd,bhkd->bhqk", q, k), X(1, 2, "S", 4), X(1, 2, "S", 4)),
    c("einsum_transpose", lambda a: torch.einsum("ij->ji", a), X("S", 4)),
    c("einsum_outer", lambda a, b: torch.einsum("i,j->ij", a, b), X("S"), X(4)),
    c("einsum_reduce", lambda a: torch.einsum("bij->bj", a), X("B", 3, 4)),
    c("einsum_ellipsis", lambda a, b: torch.einsum("...ij,jk->...ik", a, b), X("B", 3, 4), X(4, 2)),
]

CONV = [
    m("conv1d", lambda: nn.Conv1d(3, 4, 3), X("B", 3, "L"), dtypes=F16),
    m("conv1d_stride_pad_dil", lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), X("B", 4, "L")),
    m("conv1d_same", lambda: nn.Conv1d(3, 4, 4, padding="same"), X("B", 3, "L")),
    m("conv2d", lambda: nn.Conv2d(3, 4, 3, padding=1), X("B", 3, 6, 7), dtypes=ALL),
    m("conv2d_stride_groups", lambda: nn.Conv2d(4, 8, (3, 2), stride=(2, 1), padding=(1, 0), groups=4),
      X("B", 4, 7, 6)),
    m("conv1x1_then_strided_conv1x1", lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 5, 1, stride=2)),
      X("B", 3, "S", 7)),  # tract 0.23.9 cannot load the stride as its Downsample here (strided-gathers pass)
    m("conv2d_dilation_nobias", lambda: nn.Conv2d(2, 3, 3, dilation=2, bias=False), X(1, 2, 8, "L")),
    m("conv2d_depthwise", lambda: nn.Conv2d(4, 4, 3, groups=4, padding="same"), X("B", 4, 6, 6)),
    m("conv_transpose1d", lambda: nn.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1),
      X("B", 3, 5), dtypes=F16),
    m("conv_transpose1d_groups", lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2, bias=False),
      X("B", 4, 5)),
    m("conv_transpose2d", lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1), X("B", 3, 4, 5), dtypes=F16),
    m("conv_transpose2d_dil_groups", lambda: nn.ConvTranspose2d(4, 6, (2, 3), stride=(1, 2), dilation=2, groups=2,
                                                                  output_padding=(0, 1)), X("B", 4, 4, 3)),
    # aten.max_pool1d reads its input length as a constant when traced: L stays static.
    c("max_pool1d", lambda a: F.max_pool1d(a, 3, 2, padding=1), X("B", 3, "L"), dtypes=F16, static=("L",)),
    c("max_pool2d", lambda a: F.max_pool2d(a, 2), X("B", 3, 6, 8), dtypes=F16),
    c("max_pool2d_pad_dil_ceil", lambda a: F.max_pool2d(a, 3, 2, padding=1, dilation=1, ceil_mode=True),
      X("B", 2, 7, 8)),
    c("max_pool2d_dilation", lambda a: F.max_pool2d(a, 2, 1, dilation=2), X("B", 2, 6, 6)),
    c("avg_pool1d", lambda a: F.avg_pool1d(a, 2), X("B", 3, 8), dtypes=F16),
    c("avg_pool2d_pad", lambda a: F.avg_pool2d(a, 3, 2, padding=1), X("B", 2, 7, 8)),
    c("avg_pool2d_pad_exclude", lambda a: F.avg_pool2d(a, 3, 2, padding=1, count_include_pad=False),
      X("B", 2, 7, 8)),
    c("avg_pool2d_ceil", lambda a: F.avg_pool2d(a, 2, ceil_mode=True), X("B", 2, 5, 7)),
    c("adaptive_avg_pool1d", lambda a: F.adaptive_avg_pool1d(a, 1), X("B", 3, "L")),
    c("adaptive_avg_pool2d", lambda a: F.adaptive_avg_pool2d(a, (2, 3)), X("B", 3, 4, 6), dtypes=F16),
    c("adaptive_avg_pool2d_1", lambda a: F.adaptive_avg_pool2d(a, 1), X("B", 3, 5, 5)),
    c("adaptive_max_pool2d_1", lambda a: F.adaptive_max_pool2d(a, 1, return_indices=True), X("B", 3, 5, "L")),
    c("adaptive_max_pool2d", lambda a: F.adaptive_max_pool2d(a, (2, 3)), X("B", 3, 4, 6)),
    c("max_pool2d_indices", lambda a: F.max_pool2d(a, 2, return_indices=True), X("B", 2, 4, 6)),
]

NORM = [
    m("batch_norm1d", lambda: _bn(1, 4), X("B", 4, "L"), dtypes=F16),
    m("batch_norm2d", lambda: _bn(2, 3), X("B", 3, 4, 5), dtypes=F16),
    m("layer_norm", lambda: nn.LayerNorm(8), X("B", "S", 8), dtypes=ALL),
    m("layer_norm_2d_noaffine", lambda: nn.LayerNorm((3, 4), elementwise_affine=False), X("B", 3, 4)),
    m("group_norm", lambda: nn.GroupNorm(2, 4), X("B", 4, 3, 3), dtypes=F16),
    m("group_norm_1d", lambda: nn.GroupNorm(3, 6, affine=False), X("B", 6, "L")),
    m("rms_norm", lambda: nn.RMSNorm(8), X("B", "S", 8), dtypes=F16),
    m("rms_norm_eps", lambda: nn.RMSNorm(8, eps=1e-5), X("B", 8)),
    m("rms_norm_hf", lambda: HFRMSNorm(8), X("B", "S", 8), dtypes=F16),
    c("normalize", lambda a: F.normalize(a, dim=-1), X("B", 8)),
]

REDUCE = [
    c("sum_all", torch.sum, X("B", 4), dtypes=F16),
    c("sum_dim", lambda a: a.sum(1), X("B", 3, 4), dtypes=ALL),
    c("sum_dims_keepdim", lambda a: a.sum((0, 2), keepdim=True), X("B", 3, 4)),
    c("sum_bool", lambda m: m.sum(-1), Mask("B", 4)),
    c("sum_int", lambda a: a.sum(0), Int("B", 4)),
    c("mean_all", torch.mean, X("B", 4)),
    c("mean_dim_keepdim", lambda a: a.mean(-1, keepdim=True), X("B", 3, 4), dtypes=F16),
    c("mean_dtype", lambda a: a.mean(1, dtype=torch.float32), X("B", 4), dtypes=("f16",)),
    c("amax_amin", lambda a: a.amax(1) - a.amin((0, 2)).sum(), X("B", 3, 4), dtypes=F16),
    c("max_all", torch.max, X("B", 4)),
    c("min_all", torch.min, X("B", 4)),
    c("max_dim", lambda a: torch.max(a, 1), X("B", 3, 4), dtypes=F16),
    c("min_dim_keepdim", lambda a: torch.min(a, -1, keepdim=True), X("B", 3, 4)),
    c("max_dim_values", lambda a: a.max(dim=0).values, X("B", 4)),
    c("argmax", lambda a: a.argmax(-1), X("B", 3, 4), dtypes=F16),
    c("argmin_keepdim", lambda a: a.argmin(1, keepdim=True), X("B", 3, 4)),
    c("argmax_flat", lambda a: a.argmax(), X("B", 4)),
    c("prod", lambda a: a.prod(1), X("B", 3, 4)),
    c("prod_all", lambda a: a.prod(), Pos(2, "B")),
    c("var", lambda a: a.var(-1), X("B", 3, 8)),
    c("var_unbiased_keepdim", lambda a: torch.var(a, (0, 2), correction=0, keepdim=True), X("B", 3, 4)),
    c("var_all", lambda a: a.var(), X("B", 4)),
    c("std", lambda a: a.std(1), X("B", 6, 4), dtypes=F16),
    c("std_correction0", lambda a: torch.std(a, -1, correction=0, keepdim=True), X("B", 8)),
    c("var_mean", lambda a: torch.var_mean(a, -1), X("B", 8)),
    c("cumsum", lambda a: a.cumsum(-1), X("B", 5), dtypes=ALL),
    c("cumsum_dim0", lambda a: torch.cumsum(a, 0), X("B", 3)),
    c("cumsum_int", lambda a: a.cumsum(1), Int("B", 4)),
    # through torch's decomposition: a product over a triangle of the axis (prims.prod)
    # arithmetic on masks: * is and, + is or (tract has no Bool Mul or Add)
    c("mask_times_mask", lambda a, b: ((a > 0) * (b < 0.5)).all(-1), X("B", 6), X("B", 6)),
    c("mask_plus_mask", lambda a, b: (a > 0) + (b < 0), X("B", 6), X("B", 6)),
    c("mask_max_scalar", lambda a: torch.maximum(a > 0, torch.tensor(False)), X("B", 6)),
    c("cumprod", lambda a: a.cumprod(1), Pos("B", 4)),
    c("cumprod_dynamic_axis", lambda a: a.cumprod(0), Pos("S", 3)),
    c("cumsum_bool", lambda m: m.cumsum(1), Mask("B", 4)),
    c("diff", lambda a: torch.diff(a, dim=-1), X("B", 5)),
    c("diff_n2_prepend", lambda a, p: torch.diff(a, n=2, dim=0, prepend=p), X("S", 3), X(1, 3)),
    c("diff_int_bool", lambda a, m: (torch.diff(a, dim=1), torch.diff(m, dim=1)), Int("B", 4), Mask("B", 4)),
    c("any_all", lambda m: torch.stack([m.any(-1), m.all(-1)]), Mask("B", 4)),
    c("topk", lambda a: torch.topk(a, 2, -1), X("B", 5)),
    c("topk_smallest", lambda a: torch.topk(a, 2, 0, largest=False), X("B", 5)),
    c("logsumexp", lambda a: torch.logsumexp(a, -1), X("B", 6)),
    c("norm", lambda a: torch.linalg.vector_norm(a, dim=-1), X("B", 6)),
]

SHAPE = [
    c("view", lambda a: a.view(a.shape[0], 2, 6), X("B", 3, 4)),
    c("view_neg1", lambda a: a.view(-1, 4), X("B", 3, 4)),
    c("reshape_merge", lambda a: a.reshape(a.shape[0] * a.shape[1], 4), X("B", 3, 4)),
    c("reshape_numel", lambda a: a.reshape(a.numel() // 4, 4), X("B", 8)),
    c("reshape_size_arith", lambda a: a.view(a.size(0), a.size(1) * 2, a.size(2) // 2), X("B", "S", 4)),
    c("flatten", lambda a: a.flatten(1), X("B", 3, 4)),
    c("flatten_all", torch.flatten, X("B", 3, 4)),
    c("unflatten", lambda a: a.unflatten(-1, (2, 3)), X("B", 6)),
    c("permute", lambda a: a.permute(2, 0, 1), X("B", 3, 4), dtypes=F16),
    c("transpose", lambda a: a.transpose(-1, 1), X("B", 3, 4)),
    c("t", lambda a: a.t(), X("S", 4)),
    c("mT", lambda a: a.mT, X("B", 3, 4)),
    c("expand", lambda a: a.expand(-1, 3, 4), X("B", 1, 4), dtypes=F16),
    c("expand_new_axis", lambda a: a.expand(2, a.shape[0], 4), X("B", 4)),
    c("expand_as", lambda a, b: a.expand_as(b), X(1, 4), X("B", 4)),
    c("repeat", lambda a: a.repeat(2, 1, 3), X("B", 4)),
    c("repeat_interleave", lambda a: a.repeat_interleave(2, dim=1), X("B", 3)),
    c("squeeze", lambda a: a.squeeze(1), X("B", 1, 4)),
    c("squeeze_all", lambda a: a.squeeze(), X(1, "B", 1, 4)),
    c("unsqueeze", lambda a: a.unsqueeze(-1), X("B", 4)),
    c("none_index", lambda a: a[:, None, :, None], X("B", 4)),
    c("cat", lambda a, b: torch.cat([a, b], -1), X("B", 2), X("B", 3), dtypes=F16),
    c("cat_dynamic_axis", lambda a, b: torch.cat([a, b], 0), X("B", 3), X("S", 3)),
    c("cat_mixed_dtype", lambda a, b: torch.cat([a, b], 1), X("B", 2), Int("B", 3)),
    c("stack", lambda a, b: torch.stack([a, b], 1), X("B", 3), X("B", 3)),
    c("split", lambda a: a.split(2, -1), X("B", 5)),
    c("split_sizes", lambda a: torch.split(a, [1, 3, 2], 1), X("B", 6)),
    c("split_dynamic", lambda a: a.split(1, 0), X(3, "S")),
    c("chunk", lambda a: a.chunk(3, -1), X("B", 6)),
    c("unbind", lambda a: a.unbind(1), X("B", 3)),
    c("slice", lambda a: a[:, 1:3], X("B", 5), dtypes=F16),
    c("slice_negative", lambda a: a[:, -3:-1], X("B", 5)),
    c("slice_step", lambda a: a[:, 1::2], X("B", 7)),
    c("slice_dynamic", lambda a: a[1:], X("S", 4)),
    c("slice_dynamic_negative", lambda a: a[-2:], X("S", 4)),
    c("slice_dynamic_end", lambda a: a[:-1], X("S", 4)),
    c("slice_dynamic_from_end", lambda a, b: a[-b.shape[0]:] + b, X("S", 4), X("S", 4)),
    c("slice_dynamic_step", lambda a: a[::2], X("S", 4)),
    c("slice_step_after_reshape", lambda a: a.reshape(a.shape[0], 3, -1)[:, :, 1::2], X("B", 3, "S", 4)),
    c("slice_half_dynamic", lambda a: a[:, : a.shape[1] // 2], X(2, "L")),
    c("split_half_dynamic", lambda a: a.split(a.shape[0] // 2, 0)[1], X("L", 3)),
    c("slice_past_end", lambda a: a[:, 2:100], X("B", 5)),
    c("select", lambda a: a[:, 1], X("B", 3, 4)),
    c("select_negative", lambda a: a[..., -1], X("B", 3, 4)),
    c("select_dynamic_last", lambda a: a[-1], X("S", 4)),
    c("narrow", lambda a: a.narrow(1, 1, 2), X("B", 4)),
    c("index_select", lambda a, i: a.index_select(1, i), X("B", 5), Idx(5, 3)),
    c("index_tensor", lambda a, i: a[:, i], X("B", 5, 2), Idx(5, 3)),
    c("index_tensor_2d", lambda a, i: a[i], X(6, 3), Idx(6, "B", 2)),
    c("index_tensor_multi", lambda a, i, j: a[i, j], X(4, 5, "B"), Idx(4, 3), Idx(5, 2, 1)),
    c("index_tensor_dynamic", lambda a, i: a[i], X("S", 3), Idx("S", 4)),
    c("gather", lambda a, i: torch.gather(a, 1, i), X("B", 5), Idx(5, "B", 3)),
    c("gather_dim0", lambda a, i: a.gather(0, i), X(4, 3), Idx(4, "B", 3)),
    c("gather_scalar", lambda a, i: (a.gather(0, i), a.gather(0, i[0])), X(), Idx(1, 1)),
    # torch.take_along_dim specialises its broadcast batch axes when traced: B stays static.
    c("take_along_dim", lambda a, i: torch.take_along_dim(a, i, -1), X("B", 5), Idx(5, "B", 3), static=("B",)),
    m("embedding", lambda: nn.Embedding(10, 4), Idx(10, "B", "S"), dtypes=F16),
    c("embedding_functional", lambda i, w: F.embedding(i, w), Idx(7, "S"), X(7, 3)),
    c("pad_constant", lambda a: F.pad(a, (1, 2)), X("B", 3), dtypes=F16),
    c("pad_constant_value", lambda a: F.pad(a, (1, 0, 0, 2), value=0.5), X("B", 3, 4)),
    c("pad_reflect", lambda a: F.pad(a, (2, 1), mode="reflect"), X("B", 3, 5)),
    c("pad_reflect_2d", lambda a: F.pad(a, (1, 1, 2, 0), mode="reflect"), X("B", 2, 4, 5)),
    c("pad_replicate", lambda a: F.pad(a, (1, 2), mode="replicate"), X("B", 3, 4)),
    c("pad_circular", lambda a: F.pad(a, (2, 1), mode="circular"), X("B", 3, 5)),
    # negative amounts crop first; the wrapped parts come from what is left
    c("pad_circular_crop", lambda a: F.pad(a, (-1, 2, 1, -2), mode="circular"), X("B", 2, 4, 5)),
    c("pad_negative", lambda a: F.pad(a, (-1, 2)), X("B", 5)),
    c("pad_dynamic_axis", lambda a: F.pad(a, (0, 0, 1, 1)), X("S", 3)),
    c("flip", lambda a: a.flip(-1), X("B", 5)),
    c("flip_dynamic", lambda a: a.flip(0, 1), X("S", 3)),
    c("roll", lambda a: a.roll(2, -1), X("B", 5)),
    c("roll_multi", lambda a: a.roll((1, -1), (0, 1)), X(3, 4)),
    c("roll_dynamic", lambda a: a.roll(1, 0), X("S", 4)),
    c("roll_flat", lambda a: a.roll(1), X(3, 4)),
    c("tril", torch.tril, X("B", 4, 4)),
    c("triu_k", lambda a: torch.triu(a, 1), X("S", "S")),
    c("tril_neg_k", lambda a: a.tril(-1), X(3, "S")),
    c("contiguous_clone", lambda a: a.transpose(0, 1).contiguous().clone(), X("B", 3)),
    # relative positions shifted by pad/view/slice (Transformer-XL, Conformer): x[:, 1:] of a
    # size 2*S starts at 1 (not at min(1, 2*S), which tract cannot simplify)
    c("relative_shift_dynamic", lambda a: _relative_shift(a @ torch.cat([a, a[1:]]).T), X("S", 4)),
    # DPT's readout: tokens beside the class token broadcast to each, projected (products-of-broadcasts)
    m("readout_projection", lambda: _Readout(), X("B", 5, 8)),
    # len(x) is a plain int in torch.export's default mode (it pins B); strict mode keeps it symbolic
    c("len_of_batch", lambda a: a.reshape(len(a), 2, -1) * len(a), X("B", 4)),
    # a size divided and multiplied back through floors (SEW-D): B again, not a fraction over symbols
    c("reshape_through_floors", lambda a: _regroup(F.pad(a[:, ::2], (0, 0, 1, 0))), X("B", "L", 4)),
]


def _relative_shift(scores):
    """(S, 2S - 1) scores of every relative distance -> (S, S) scores of absolute positions."""
    s, r = scores.shape
    shifted = F.pad(scores, (1, 0)).view(r + 1, s)[1:].view(s, r)
    return shifted[:, :s]


class _Readout(nn.Module):
    def __init__(self):
        super().__init__()
        self.project = nn.Linear(16, 8)

    def forward(self, x):
        tokens = x[:, 1:]
        return self.project(torch.cat([tokens, x[:, :1].expand_as(tokens)], -1))


def _regroup(t):
    return t.reshape(-1, 4).reshape(-1, t.shape[1], 4) * 2

CREATION = [
    c("arange", lambda a: a + torch.arange(4), X("B", 4)),
    c("arange_float", lambda a: a * torch.arange(0.0, 2.0, 0.5), X("B", 4)),
    c("arange_dynamic", lambda a: torch.arange(a.shape[0]) * 2, X("S", 3)),
    c("arange_dynamic_start", lambda a: torch.arange(1, a.shape[0] + 1).float() + a[:, 0], X("S", 3)),
    c("arange_dynamic_step", lambda a: torch.arange(0, a.shape[0], 2), X("L", 3)),
    c("full", lambda a: a + torch.full((2, 4), 1.5), X(2, 4)),
    c("full_dynamic", lambda a: torch.full((a.shape[0], 3), 7), X("S", 2)),
    c("zeros_ones", lambda a: torch.cat([torch.zeros(a.shape[0], 2), torch.ones(a.shape[0], 1), a], 1), X("B", 3)),
    c("zeros_int", lambda a: a + torch.zeros(4, dtype=torch.long), Int("B", 4)),
    c("zeros_like", lambda a: torch.zeros_like(a) + 1, X("B", 3), dtypes=F16),
    c("ones_like", lambda a: torch.ones_like(a, dtype=torch.bool) & (a > 0), X("B", 3)),
    c("full_like", lambda a: torch.full_like(a, 2.5) * a, X("B", 3)),
    c("new_zeros_ones", lambda a: torch.stack([a.new_zeros(a.shape), a.new_ones(a.shape)]), X("B", 3)),
    c("new_full", lambda a: a.new_full((a.shape[0], 2), 3.0), X("B", 3)),
    c("empty_like_fill", lambda a: torch.empty_like(a).fill_(0.5) + a, X("B", 3)),
    c("scalar_tensor", lambda a: a * torch.tensor(2.0), X("B", 3)),
    c("causal_mask", lambda a: torch.ones(a.shape[1], a.shape[1], dtype=torch.bool).tril(), X(1, "S")),
]

CASTS = [
    c("to_half", lambda a: a.half(), X("B", 4)),
    c("to_float", lambda a: a.float(), X("B", 4), dtypes=("f16",)),
    c("to_dtype", lambda a: a.to(torch.float16).to(torch.float32), X("B", 4)),
    c("to_long_trunc", lambda a: (a * 3).long(), X("B", 4)),
    c("to_int32", lambda a: a.to(torch.int32), Int("B", 4)),
    c("to_bool", lambda a: a.bool(), Int("B", 4)),
    c("bool_to_float", lambda m: m.float() * 2, Mask("B", 4)),
    c("int_to_float", lambda a: a.float() / 2, Int("B", 4)),
    c("type_as", lambda a, b: a.type_as(b), Int("B", 4), X("B", 4)),
]

ATTENTION = [
    c("sdpa", _sdpa(), X("B", 2, "S", 8), X("B", 2, "S", 8), X("B", 2, "S", 8), dtypes=F16),
    c("sdpa_causal", _sdpa(is_causal=True), X(1, 2, "S", 8), X(1, 2, "S", 8), X(1, 2, "S", 8), dtypes=F16),
    c("sdpa_scale", _sdpa(scale=0.3), X(1, 2, "S", 8), X(1, 2, "S", 8), X(1, 2, "S", 8)),
    c("sdpa_bool_mask", lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, ~_keep_first(~m)),
      X(1, 2, "S", 8), X(1, 2, "S", 8), X(1, 2, "S", 8), Mask(1, 1, "S", "S")),
    c("sdpa_float_mask", _sdpa(), X(1, 2, 3, 8), X(1, 2, "S", 8), X(1, 2, "S", 8), X(1, 1, 3, "S")),
    c("sdpa_causal_cross", _sdpa(is_causal=True), X(1, 2, 3, 8), X(1, 2, 5, 8), X(1, 2, 5, 8)),
    c("sdpa_rank3", _sdpa(), X(2, "S", 8), X(2, "S", 8), X(2, "S", 8)),
    c("sdpa_gqa", _sdpa(enable_gqa=True), X(1, 4, "S", 8), X(1, 2, "S", 8), X(1, 2, "S", 8)),
    c("sdpa_gqa_mask_per_batch_row", _sdpa(enable_gqa=True), X("B", 4, "S", 8), X("B", 2, "S", 8), X("B", 2, "S", 8),
      X("B", 1, "S", "S")),
]


class WithState(nn.Module):
    """A recurrent layer called with initial states (h0, or h0 and c0 for an LSTM)."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, *states):
        return self.rnn(x, states if len(states) > 1 else states[0])


def _assign(a, b):
    """In-place writes (functionalized to slice_scatter / select_scatter) into a copy of a."""
    y = a * 1
    y[:, 1:3] = b
    y[:, 0] = 2.0
    y[:, 3::2] = -1.0  # a step over a static axis: one gather from [y, the values]
    return y


def _assign_interleaved(a, b):
    """Every third position from one tensor (interleaved rotary sections), and a write to a
    section that starts past the end (nothing written, as tiny rotary dims give)."""
    y = a * 1
    y[..., 1::3] = b
    y[..., 9::3] = -2.0
    return y


def _windows(x):
    """Swin's window partition of a dynamic image: pad to multiples of 3, view into windows."""
    b, h, w, c = x.shape
    x = F.pad(x, (0, 0, 0, (3 - w % 3) % 3, 0, (3 - h % 3) % 3))
    hp, wp = x.shape[1], x.shape[2]
    return x.view(b, hp // 3, 3, wp // 3, 3, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 9, c).mean(1)


def _causal_where(a):
    """A causal mask from two position ranges (how models build theirs), applied with where."""
    i = torch.arange(a.shape[-2]).view(-1, 1)
    j = torch.arange(a.shape[-1]).view(1, -1)
    return torch.where(i >= j, a, torch.zeros_like(a) - 1e4)


def _unique_index(keys):
    """Distinct positions per row (scatter without reduction writes each place once)."""
    return torch.argsort(keys, -1)[..., :2]


RESIZE = [
    c("interpolate_nearest", lambda a: F.interpolate(a, scale_factor=2.0), X("B", 2, "S", "L"), dtypes=F16),
    c("interpolate_bilinear", lambda a: F.interpolate(a, scale_factor=2.0, mode="bilinear"), X("B", 2, "S", "L")),
    c("interpolate_bilinear_align", lambda a: F.interpolate(a, scale_factor=2.0, mode="bilinear", align_corners=True),
      X("B", 2, "S", "L")),
    c("interpolate_bicubic_size", lambda a: F.interpolate(a, size=(5, 7), mode="bicubic"), X("B", 2, 4, 6)),
    c("interpolate_bicubic_antialias_down", lambda a: F.interpolate(a, size=(3, 5), mode="bicubic", antialias=True),
      X("B", 2, 7, 9)),
    c("interpolate_bilinear_antialias_scale", lambda a: F.interpolate(a, scale_factor=(0.5, 1.5), mode="bilinear",
                                                                      antialias=True), X("B", 2, 8, 6)),
    c("interpolate_nearest_exact_down", lambda a: F.interpolate(a, size=(3, 4), mode="nearest-exact"),
      X("B", 2, 7, 9)),
    c("interpolate_linear_1d", lambda a: F.interpolate(a, scale_factor=3.0, mode="linear"), X("B", 2, "L")),
    c("interpolate_trilinear", lambda a: F.interpolate(a, scale_factor=2.0, mode="trilinear"), X("B", 2, 2, 3, 4)),
    c("interpolate_size_dynamic", lambda a: F.interpolate(a, size=a.shape[-1] * 2), X("B", 2, "L")),
    c("pixel_shuffle", lambda a: F.pixel_shuffle(a, 2), X("B", 8, 3, "L")),
    c("pixel_unshuffle", lambda a: F.pixel_unshuffle(a, 2), X("B", 2, 4, 6)),
]

FFT = [  # complex values carried as real pairs; tract's FFT (t2ir/frontend/complex_to_real.py)
    c("fft_fft2_real", lambda a: torch.fft.fft2(a).real, X("B", "S", 8)),
    c("fft_rfft_abs", lambda a: torch.fft.rfft(a, dim=1).abs(), X("B", "S", 3)),
    c("fft_ifft_ortho", lambda a: torch.fft.ifft(torch.fft.fft(a * 2, norm="ortho"), norm="ortho").imag + a,
      X("B", 6)),
    c("fft_irfft_n", lambda a: torch.fft.irfft(torch.fft.rfft(a), n=12), X("B", "S", 8)),
    c("fft_irfft2", lambda a: torch.fft.irfft2(torch.fft.rfft2(a)), X("B", "S", 6)),
]

SORT_SCATTER = [
    c("sort", lambda a: torch.sort(a, -1), X("B", "L")),
    c("sort_descending_dim0", lambda a: torch.sort(a, 0, descending=True), X("S", 3)),
    c("argsort", lambda a: torch.argsort(a, -1), X("B", 6)),
    c("scatter", lambda a, k, u: a.scatter(1, _unique_index(k), u), X("B", 5), X("B", 5), X("B", 2)),
    c("scatter_value", lambda a, k: a.scatter(1, _unique_index(k), 2.5), X("B", 5), X("B", 5)),
    c("scatter_add", lambda a, i, u: a.scatter_add(1, i, u), X("B", 5), Idx(5, "B", 3), X("B", 3)),
    c("scatter_reduce_amax", lambda a, i, u: a.scatter_reduce(1, i, u, "amax", include_self=False),
      X("B", 5), Idx(5, "B", 3), X("B", 3)),
    c("scatter_reduce_mean", lambda a, i, u: a.scatter_reduce(1, i, u, "mean"), X("B", 5), Idx(5, "B", 3),
      X("B", 3)),
    c("index_put_accumulate", lambda a, i, v: a.index_put((i,), v, accumulate=True), X(6, "B"), Idx(6, 4),
      X(4, "B")),
    c("index_put_middle_axis", lambda a, i, v: torch.ops.aten.index_put(a, [None, i], v, True), X("B", 6, 3), Idx(6, 4), X("B", 4, 3)),
    c("index_put_adjacent_pair", lambda a, i, j, v: torch.ops.aten.index_put(a, [None, i, j], v, True),
      X("B", 4, 5, 3), Idx(4, 2), Idx(5, 2), X(2, 3)),
    c("index_put_split_axes", lambda a, i, j, v: torch.ops.aten.index_put(a, [i, None, j], v, True),
      X(4, "B", 5), Idx(4, 2), Idx(5, 2), X(2, "B")),
    c("where_causal_positions", _causal_where, X("B", 2, "S", "S")),
    c("masked_fill_causal_positions", lambda a: a.masked_fill(
        torch.arange(a.shape[-1])[None, :] > torch.arange(a.shape[-2])[:, None], float("-inf")).softmax(-1),
      X("B", 2, "S", "S")),
    c("index_put_mask", lambda a, m: a.index_put((m,), torch.tensor(-1.0)), X("B", 4), Mask("B", 4)),
    c("slice_assign", _assign, X("B", 6), X("B", 2)),
    c("slice_assign_interleaved", _assign_interleaved, X("B", 3, 8), X("B", 3, 3)),
    c("expm1_log1p", lambda a: torch.expm1(a * 1e-3) + torch.log1p(a.abs()), X("B", 4)),
]

SHAPE_ARITHMETIC = [  # sizes torch computes with floor / ceil / modulo / min, at two sizes of each symbol
    c("conv_stride_flatten", lambda a, w: F.conv1d(a, w, stride=2, padding=1).flatten(1), X("B", 3, "L"),
      X(4, 3, 3)),
    c("chunk_odd", lambda a: a.chunk(2, -1)[1] * 2, X("B", "S")),
    c("pad_to_multiple", lambda a: F.pad(a, (0, (4 - a.shape[-1] % 4) % 4)), X("B", "S")),
    c("adaptive_avg_pool_uneven", lambda a: F.adaptive_avg_pool1d(a, 3), X("B", 2, "L")),
    c("adaptive_avg_pool2d_dynamic", lambda a: F.adaptive_avg_pool2d(a, (7, 5)), X("B", 2, "S", "L"), dtypes=F16),
    c("adaptive_avg_pool2d_symbolic_output",  # timm's VGG head: at least 7 x 7
      lambda a: F.adaptive_avg_pool2d(a, (max(7, a.shape[-2]), max(7, a.shape[-1]))), X("B", 2, "S", "L")),
    # ceil_mode pooling over symbolic sizes: ResNet-D's 2x2 average, GoogLeNet's 3x3 max, padded
    c("avg_pool2d_ceil_dynamic", lambda a: F.avg_pool2d(a, 2, ceil_mode=True, count_include_pad=False),
      X("B", 2, "S", "L"), dtypes=F16),
    c("max_pool2d_ceil_dynamic", lambda a: F.max_pool2d(a, 3, 2, padding=1, ceil_mode=True), X("B", 2, "S", "L")),
    c("avg_pool2d_pad_ceil_dynamic", lambda a: F.avg_pool2d(a, 3, 2, padding=1, ceil_mode=True), X("B", 2, "S", "L")),
    # means over symbolic axes (counted-means): a squeeze-excitation gate, a variance, a group norm
    c("squeeze_excitation_dynamic", lambda a: a * torch.sigmoid(a.mean((2, 3), keepdim=True)), X("B", 2, "S", "L"),
      dtypes=F16),
    c("var_dynamic", lambda a: a.var(-1), X("B", "L"), dtypes=F16),
    c("group_norm_dynamic", lambda a: F.group_norm(a, 1), X("B", 2, "S", "L")),
    c("adaptive_max_pool2d_dynamic", lambda a: F.adaptive_max_pool2d(a, (2, 3)), X("B", 2, "S", "L")),
    c("arange_float_dynamic", lambda a: a * torch.arange(a.shape[-1]) / a.shape[-1], X("B", "L")),
    c("size_ratio", lambda a: a * ((a.shape[1] - 1) / (2 * a.shape[1] - 1)), X("B", "L")),
    c("window_partition", _windows, X("B", "S", "L", 2)),
    # a view that halves L: L is then a multiple of 2 for tract (the input reads [B, 2 * L']); L = 6, 10
    c("view_split_dynamic", lambda a: a.view(a.shape[0], a.shape[1] // 2, 2).sum(-1), X("B", "L")),
    c("pixel_unshuffle_dynamic", lambda a: F.pixel_unshuffle(a, 2), X("B", 2, "L", "L")),
]

RNN = [
    m("lstm", lambda: nn.LSTM(4, 6), X("S", "B", 4), dtypes=F16),
    m("lstm_2layers_bidirectional", lambda: nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True),
      X("B", "S", 4)),
    m("lstm_proj_states", lambda: WithState(nn.LSTM(4, 6, proj_size=3)), X("S", "B", 4), X(1, "B", 3),
      X(1, "B", 6)),
    m("gru_bidirectional_state", lambda: WithState(nn.GRU(4, 5, bidirectional=True)), X("S", "B", 4), X(2, "B", 5)),
    m("gru_no_bias", lambda: nn.GRU(4, 5, bias=False, batch_first=True), X("B", "S", 4)),
    m("rnn_tanh_2layers", lambda: nn.RNN(4, 5, num_layers=2), X("S", "B", 4)),
    m("rnn_relu_unbatched", lambda: nn.RNN(4, 5, nonlinearity="relu"), X("S", 4)),
]


CASES: list[Case] = [
    *ELEMENTWISE, *ACTIVATIONS, *LINALG, *CONV, *NORM, *REDUCE, *SHAPE, *CREATION, *CASTS, *ATTENTION, *RESIZE, *FFT,
    *SORT_SCATTER, *SHAPE_ARITHMETIC, *RNN,
]
