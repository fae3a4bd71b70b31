"""PyTorch implementations of the ops PyTorch does not have under their IR name: t2ir's own ops
(`t2ir.rms_norm`, `t2ir.rope`, `t2ir.silu`, `t2ir.sdpa`) and the NNEF-level ops tract runs
(`nnef.*`, `tract_core.*`, `tract_transformers.*`), with tract's semantics: NNEF reductions keep
their axes, binary ops align a lower-rank operand to the left, `round` rounds half away from
zero, integer division truncates, sdpa's causal mask is aligned bottom-right. Recurrent layers:
`t2ir.lstm` & co. run aten's kernels; `tract_core.scan` runs its body fragment's reference per step.

`t2ir.interpret.engine` runs them; `@reference_op(name)` adds one (a user fragment, say).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from t2ir.ops.scan_steps import scan_step
from t2ir.types import DType, TensorType


@dataclass
class Call:
    """One node's evaluation: tensor arguments in signature order (literals made tensors),
    attributes with symbols resolved, and the output types the IR declares."""

    op: str
    args: list[Any]
    attrs: dict[str, Any]
    out: list[TensorType]

    def dtype(self, i: int = 0) -> torch.dtype:
        return self.out[i].dtype.torch

    def attr(self, name: str, default: Any = None) -> Any:
        v = self.attrs.get(name, default)
        return default if v is None else v


ReferenceFn = Callable[[Call], Any]
REFERENCE: dict[str, ReferenceFn] = {}


def reference_op(*names: str):
    """Register the PyTorch implementation of IR ops: `fn(call) -> tensor or tuple of tensors`.

        @reference_op("fragment.axpy")
        def axpy(c):
            x, y = c.args
            return x * c.attr("a") + y
    """
    def wrap(fn: ReferenceFn) -> ReferenceFn:
        for n in names:
            REFERENCE[n] = fn
        return fn

    return wrap


def left_aligned(*xs: torch.Tensor) -> list[torch.Tensor]:
    """NNEF broadcasting: a lower-rank operand gets trailing unit axes (aligned left)."""
    rank = max(x.dim() for x in xs)
    return [x.reshape(tuple(x.shape) + (1,) * (rank - x.dim())) for x in xs]


def _axes(c: Call, x: torch.Tensor) -> list[int]:
    return [a % max(x.dim(), 1) for a in c.attr("axes", [])]


# ---- element-wise ----------------------------------------------------------------------------

def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp, "log": torch.log, "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "abs": torch.abs,
    "neg": torch.neg, "sign": torch.sign, "recip": torch.reciprocal, "floor": torch.floor, "ceil": torch.ceil,
    "round": _round_half_away, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "relu": torch.relu, "not": torch.logical_not, "copy": lambda x: x.clone(),
    "softplus": lambda x: torch.log1p(torch.exp(x)), "asin": torch.asin, "acos": torch.acos, "atan": torch.atan,
    "sinh": torch.sinh, "cosh": torch.cosh, "asinh": torch.asinh, "acosh": torch.acosh, "atanh": torch.atanh,
    "square": torch.square,
}
for _name, _fn in _UNARY.items():
    reference_op(f"nnef.{_name}")(lambda c, fn=_fn: fn(c.args[0]))

reference_op("tract_core.erf")(lambda c: torch.erf(c.args[0]))
reference_op("tract_core.round_even")(lambda c: torch.round(c.args[0]))
reference_op("tract_core.silu", "tract_transformers.silu", "t2ir.silu")(lambda c: F.silu(c.args[0]))
reference_op("tract_core.hard_swish")(lambda c: F.hardswish(c.args[0]))
reference_op("tract_core.is_nan")(lambda c: torch.isnan(c.args[0]))
reference_op("tract_core.bitnot")(lambda c: torch.bitwise_not(c.args[0]))
reference_op("nnef.leaky_relu")(lambda c: F.leaky_relu(c.args[0], c.attr("alpha")))
reference_op("nnef.elu")(lambda c: F.elu(c.args[0], c.attr("alpha", 1.0)))


@reference_op("tract_core.gelu_approx")
def gelu_approx(c: Call) -> torch.Tensor:
    x = c.args[0]
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


@reference_op("tract_core.is_inf")
def is_inf(c: Call) -> torch.Tensor:
    x = c.args[0]
    pos = torch.isposinf(x) if c.attr("detect_positive", True) else torch.zeros_like(x, dtype=torch.bool)
    neg = torch.isneginf(x) if c.attr("detect_negative", True) else torch.zeros_like(x, dtype=torch.bool)
    return pos | neg


def _div(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.is_floating_point():
        return x / y
    return torch.div(x, y, rounding_mode="trunc")


_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "nnef.add": torch.add, "nnef.sub": torch.sub, "nnef.mul": torch.mul, "nnef.div": _div, "nnef.pow": torch.pow,
    "nnef.min": torch.minimum, "nnef.max": torch.maximum, "nnef.and": torch.logical_and,
    "nnef.or": torch.logical_or, "nnef.eq": torch.eq, "nnef.ne": torch.ne, "nnef.lt": torch.lt, "nnef.gt": torch.gt,
    "nnef.le": torch.le, "nnef.ge": torch.ge, "tract_core.xor": torch.logical_xor,
    "tract_core.bitand": torch.bitwise_and, "tract_core.bitor": torch.bitwise_or,
    "tract_core.bitxor": torch.bitwise_xor,
}
for _name, _fn in _BINARY.items():
    reference_op(_name)(lambda c, fn=_fn: fn(*left_aligned(*c.args)))


@reference_op("nnef.select")
def select(c: Call) -> torch.Tensor:
    cond, a, b = left_aligned(*c.args)
    return torch.where(cond, a, b)


@reference_op("nnef.clamp")
def clamp(c: Call) -> torch.Tensor:
    x, lo, hi = left_aligned(*c.args)
    return torch.minimum(torch.maximum(x, lo), hi)


@reference_op("tract_core.cast")
def cast(c: Call) -> torch.Tensor:
    return c.args[0].to(c.dtype())


# ---- linear algebra, convolution, pooling ----------------------------------------------------

@reference_op("nnef.matmul")
def matmul(c: Call) -> torch.Tensor:
    a, b = c.args
    if c.attr("transposeA", False):
        a = a.transpose(-1, -2)
    if c.attr("transposeB", False):
        b = b.transpose(-1, -2)
    return torch.matmul(a, b)


@reference_op("tract_core.einsum")
def einsum(c: Call) -> torch.Tensor:
    acc = DType(c.attr("acc") or c.out[0].dtype.value).torch
    return torch.einsum(c.attr("expr"), *(x.to(acc) for x in c.args[0])).to(c.dtype())


def _pairs(padding: list, n: int) -> list[tuple[int, int]]:
    return [tuple(p) for p in padding] if padding else [(0, 0)] * n


def _torch_pad(pairs: list[tuple[int, int]]) -> list[int]:
    """NNEF (before, after) per axis, first axis first -> F.pad's last-axis-first flat list."""
    return [v for before, after in reversed(pairs) for v in (before, after)]


def _bias(c: Call, y: torch.Tensor):
    """NNEF's bias: [1, C] along the channel axis, or a scalar."""
    if len(c.args) < 3:
        return 0.0
    b = c.args[2].to(y.dtype)
    return b.reshape(1, -1, *[1] * (y.dim() - 2)) if b.dim() else b


@reference_op("nnef.conv")
def conv(c: Call) -> torch.Tensor:
    x, w = c.args[0], c.args[1]
    n = x.dim() - 2
    pairs = _pairs(c.attr("padding", []), n)
    x = F.pad(x, _torch_pad(pairs))
    groups = c.attr("groups", 1) or x.shape[1]
    conv_fn = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    y = conv_fn(x, w, stride=c.attr("stride") or 1, dilation=c.attr("dilation") or 1, groups=groups)
    return y + _bias(c, y)


@reference_op("nnef.deconv")
def deconv(c: Call) -> torch.Tensor:
    """Filter [Cout, Cin/g, *k] (tract's layout); padding crops the full transposed output."""
    x, w = c.args[0], c.args[1]
    n = x.dim() - 2
    groups = c.attr("groups", 1) or x.shape[1]
    cout, cin_g, *k = w.shape
    torch_w = w.reshape(groups, cout // groups, cin_g, *k).transpose(1, 2).reshape(groups * cin_g, cout // groups, *k)
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    y = fn(x, torch_w, stride=c.attr("stride") or 1, dilation=c.attr("dilation") or 1, groups=groups)
    pairs = _pairs(c.attr("padding", []), n)
    y = F.pad(y, _torch_pad([(0, 0), (0, 0)] + [(-b, -a) for b, a in pairs]))
    return y + _bias(c, y)


def _windows(c: Call, x: torch.Tensor, fill: float) -> torch.Tensor:
    """Every pooling window as trailing axes: [*out, *size] (padding filled with `fill`)."""
    rank = x.dim()
    size = c.attr("size")
    stride = c.attr("stride") or [1] * rank
    dilation = c.attr("dilation") or [1] * rank
    x = F.pad(x, _torch_pad(_pairs(c.attr("padding", []), rank)), value=fill)
    for axis in range(rank):
        span = dilation[axis] * (size[axis] - 1) + 1
        x = x.unfold(axis, span, stride[axis])[..., ::dilation[axis]]
    return x


def _pool_reduce(c: Call, x: torch.Tensor, kind: str):
    rank = x.dim()
    ignore = c.attr("border", "constant") == "ignore"
    fill = -math.inf if kind == "max" and ignore else 0.0
    win = _windows(c, x, fill)
    axes = tuple(range(rank, 2 * rank))
    if kind == "max":
        return win.amax(axes)
    total = win.sum(axes)
    if kind == "sum" and not c.attr("normalize", False):
        return total
    if ignore:
        count = _windows(c, torch.ones_like(x), 0.0).sum(axes)
    else:
        count = math.prod(c.attr("size"))
    return total / count


reference_op("nnef.max_pool")(lambda c: _pool_reduce(c, c.args[0], "max"))
reference_op("nnef.avg_pool")(lambda c: _pool_reduce(c, c.args[0], "avg"))
reference_op("nnef.box")(lambda c: _pool_reduce(c, c.args[0], "sum"))


@reference_op("nnef.max_pool_with_index")
def max_pool_with_index(c: Call):
    """Values and, like torch, the index of each maximum flattened over the spatial axes."""
    x = c.args[0]
    rank = x.dim()
    spatial = math.prod(x.shape[2:])
    flat_index = torch.arange(spatial, dtype=torch.float64).reshape(1, 1, *x.shape[2:]).expand(x.shape)
    win = _windows(c, x, -math.inf).flatten(rank)
    idx = _windows(c, flat_index.to(torch.float64), -1.0).flatten(rank)
    values, where = win.max(-1)
    return values, idx.gather(-1, where.unsqueeze(-1)).squeeze(-1).to(c.dtype(1))


@reference_op("nnef.batch_normalization")
def batch_norm(c: Call) -> torch.Tensor:
    x, mean, var, offset, scale = left_aligned(*c.args)
    return (x - mean) / torch.sqrt(var + c.attr("epsilon", 0.0)) * scale + offset


# ---- shapes --------------------------------------------------------------------------------

@reference_op("nnef.reshape")
def reshape(c: Call) -> torch.Tensor:
    x = c.args[0]
    start = c.attr("axis_start", 0)
    count = c.attr("axis_count", -1)
    end = x.dim() if count == -1 else start + count
    part = [x.shape[start + i] if d == 0 else d for i, d in enumerate(c.attr("shape"))]
    return x.reshape(*x.shape[:start], *part, *x.shape[end:])


@reference_op("nnef.transpose")
def transpose(c: Call) -> torch.Tensor:
    x = c.args[0]
    axes = list(c.attr("axes"))
    return x.permute(*axes, *range(len(axes), x.dim()))


@reference_op("nnef.squeeze")
def squeeze(c: Call) -> torch.Tensor:
    x = c.args[0]
    return x.reshape([d for i, d in enumerate(x.shape) if i not in set(c.attr("axes"))])


@reference_op("nnef.unsqueeze")
def unsqueeze(c: Call) -> torch.Tensor:
    x = c.args[0]
    for a in sorted(c.attr("axes")):
        x = x.unsqueeze(a)
    return x


@reference_op("nnef.slice")
def slice_(c: Call) -> torch.Tensor:
    x = c.args[0]
    index = [slice(None)] * x.dim()
    strides = c.attr("stride") or [1] * len(c.attr("axes"))
    for axis, b, e, s in zip(c.attr("axes"), c.attr("begin"), c.attr("end"), strides):
        size = x.shape[axis]
        b, e = (v + size if v < 0 else v for v in (b, e))
        index[axis] = slice(min(max(b, 0), size), min(max(e, 0), size), s)
    return x[tuple(index)]


@reference_op("tract_core.dyn_slice")
def dyn_slice(c: Call) -> torch.Tensor:
    x, start, end = c.args
    return x.narrow(c.attr("axis"), int(start), int(end) - int(start))


reference_op("nnef.concat")(lambda c: torch.cat([x.to(c.dtype()) for x in c.args[0]], c.attr("axis")))
reference_op("nnef.stack")(lambda c: torch.stack(c.args[0], c.attr("axis")))
reference_op("nnef.tile")(lambda c: c.args[0].repeat(*c.attr("repeats")))


@reference_op("tract_core.broadcast")
def broadcast(c: Call) -> torch.Tensor:
    x = c.args[0]
    shape = list(c.attr("shape"))
    return x.reshape((1,) * (len(shape) - x.dim()) + tuple(x.shape)).expand(shape).to(c.dtype())


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicated": "replicate", "edge": "replicate"}


@reference_op("nnef.pad")
def pad(c: Call) -> torch.Tensor:
    x = c.args[0]
    mode = _PAD_MODES[c.attr("border", "constant")]
    pairs = _pairs(c.attr("padding"), x.dim())
    if mode == "constant":
        return F.pad(x, _torch_pad(pairs), value=c.attr("value", 0.0))
    lead = next((i for i, p in enumerate(pairs) if tuple(p) != (0, 0)), x.dim())
    # torch pads the trailing axes of a [N, C, ...] tensor in these modes: fold the others into C
    y = x.reshape(1, -1, *x.shape[lead:])
    y = F.pad(y, _torch_pad(pairs[lead:]), mode=mode)
    return y.reshape(*x.shape[:lead], *y.shape[2:])


@reference_op("tract_core.trilu")
def trilu(c: Call) -> torch.Tensor:
    x, k = c.args
    return (torch.triu if c.attr("upper") else torch.tril)(x, int(k))


@reference_op("tract_core.range")
def range_(c: Call) -> torch.Tensor:
    start, end, step = (float(v) if c.out[0].dtype.is_float else int(v) for v in c.args)
    return torch.arange(start, end, step, dtype=c.dtype())


# ---- gather / scatter ----------------------------------------------------------------------

@reference_op("tract_core.gather")
def gather(c: Call) -> torch.Tensor:
    x, idx = c.args
    axis = c.attr("axis", 0) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx).long()
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]).to(c.dtype())


@reference_op("tract_core.gather_elements")
def gather_elements(c: Call) -> torch.Tensor:
    x, idx = c.args
    axis = c.attr("axis", 0)
    return torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx).long())


@reference_op("tract_core.gather_nd")
def gather_nd(c: Call) -> torch.Tensor:
    """ONNX GatherND (batch_dims = 0): the last axis of `indices` indexes x's leading axes."""
    x, idx = c.args
    if c.attr("batch_dims", 0):
        raise NotImplementedError("tract_core.gather_nd with batch_dims > 0")
    k = idx.shape[-1]
    flat = idx.reshape(-1, k).long()
    picked = x[tuple(flat[:, i] for i in range(k))]
    return picked.reshape(*idx.shape[:-1], *x.shape[k:])


@reference_op("tract_core.scatter_elements")
def scatter_elements(c: Call) -> torch.Tensor:
    x, idx, updates = c.args
    reduction = c.attr("reduction", "none")
    axis = c.attr("axis", 0)
    if reduction in (None, "none"):
        return x.scatter(axis, idx.long(), updates)
    return x.scatter_reduce(axis, idx.long(), updates, {"add": "sum", "mul": "prod"}.get(reduction, reduction))


@reference_op("tract_core.scatter_nd")
def scatter_nd(c: Call) -> torch.Tensor:
    """ONNX ScatterND: the last axis of `indices` addresses x's leading axes, `updates` has
    indices.shape[:-1] + x.shape[k:]; `add` (and mul/min/max) combine repeated places."""
    x, idx, updates = c.args
    k = idx.shape[-1]
    lead = x.shape[:k]
    flat_idx = idx.reshape(-1, k).long()
    place = sum(flat_idx[:, i] * math.prod(lead[i + 1:]) for i in range(k))
    out = x.reshape(math.prod(lead), *x.shape[k:]).clone()
    rows = updates.reshape(-1, *x.shape[k:]).to(x.dtype)
    reduction = c.attr("reduction", "none")
    if reduction == "none":
        out.index_copy_(0, place, rows)
    elif reduction == "add":
        out.index_add_(0, place, rows)
    else:
        out.index_reduce_(0, place, rows, {"mul": "prod", "min": "amin", "max": "amax"}[reduction])
    return out.reshape(x.shape)


# ---- reductions ----------------------------------------------------------------------------

def _reduce(fn: Callable[[torch.Tensor, list[int]], torch.Tensor]) -> ReferenceFn:
    """An NNEF reduction: over `axes`, keeping them (no axes: the input as it is)."""
    def run(c: Call) -> torch.Tensor:
        x = c.args[0]
        axes = _axes(c, x)
        return (fn(x, axes) if axes else x).to(c.dtype())

    return run


def _any(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    return x.bool().sum(axes, keepdim=True) > 0


def _all(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    return (~x.bool()).sum(axes, keepdim=True) == 0


reference_op("nnef.sum_reduce")(lambda c: _sum_reduce(c))
reference_op("nnef.mean_reduce")(_reduce(lambda x, a: x.mean(a, keepdim=True)))
reference_op("nnef.max_reduce")(_reduce(lambda x, a: x.amax(a, keepdim=True)))
reference_op("nnef.min_reduce")(_reduce(lambda x, a: x.amin(a, keepdim=True)))
reference_op("nnef.any_reduce")(_reduce(_any))
reference_op("nnef.all_reduce")(_reduce(_all))


def _prod(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    for a in axes:
        x = x.prod(a, keepdim=True)
    return x


reference_op("tract_core.product_reduce")(_reduce(_prod))


def _sum_reduce(c: Call) -> torch.Tensor:
    x = c.args[0]
    axes = _axes(c, x)
    if not axes:
        return x.to(c.dtype())
    y = x.sum(axes, keepdim=True, dtype=c.dtype())
    return y / math.prod(x.shape[a] for a in axes) if c.attr("normalize", False) else y


@reference_op("nnef.moments")
def moments(c: Call):
    x = c.args[0]
    axes = _axes(c, x)
    mean = x.mean(axes, keepdim=True)
    return mean, ((x - mean) ** 2).mean(axes, keepdim=True)


def _arg_reduce(largest: bool, last: bool) -> ReferenceFn:
    def fn(c: Call) -> torch.Tensor:
        x = c.args[0]
        axes = _axes(c, x)
        if len(axes) != 1:
            raise NotImplementedError(f"{c.op} over several axes")
        a = axes[0]
        y = x.flip(a) if last else x
        i = (y.argmax if largest else y.argmin)(a, keepdim=True)
        return (x.shape[a] - 1 - i if last else i).to(c.dtype())

    return fn


reference_op("nnef.argmax_reduce")(_arg_reduce(True, False))
reference_op("nnef.argmin_reduce")(_arg_reduce(False, False))
reference_op("tract_core.argmax_reduce_last")(_arg_reduce(True, True))
reference_op("tract_core.argmin_reduce_last")(_arg_reduce(False, True))


@reference_op("nnef.softmax")
def softmax(c: Call) -> torch.Tensor:
    x = c.args[0]
    axes = _axes(c, x)
    e = torch.exp(x - x.amax(axes, keepdim=True))
    return e / e.sum(axes, keepdim=True)


@reference_op("tract_core.log_softmax")
def log_softmax(c: Call) -> torch.Tensor:
    x = c.args[0]
    axes = _axes(c, x)
    shifted = x - x.amax(axes, keepdim=True)
    return shifted - torch.log(torch.exp(shifted).sum(axes, keepdim=True))


@reference_op("tract_core.fft")
def fft(c: Call) -> torch.Tensor:
    from t2ir.ops.fft import fft as pairs_fft

    return pairs_fft(c.args[0], c.attr("axis"), bool(c.attr("inverse")))


@reference_op("tract_core.cumsum")
def cumsum(c: Call) -> torch.Tensor:
    x = c.args[0]
    axis = c.attr("axis")
    y = x.flip(axis) if c.attr("reverse", False) else x
    s = y.cumsum(axis, dtype=c.dtype())
    if c.attr("exclusive", False):
        s = s - y.to(s.dtype)
    return s.flip(axis) if c.attr("reverse", False) else s


@reference_op("tract_core.topk")
def topk(c: Call):
    """k is a literal or, for a symbolic k, a one-element tensor read at run time."""
    x, k = c.args
    values, indices = torch.topk(x, int(k.reshape(-1)[0]), c.attr("axis"), largest=c.attr("largest", True))
    return values, indices.to(c.dtype(1))


reference_op("fragment.t2ir_shape_of_i64")(lambda c: torch.tensor(c.args[0].shape, dtype=torch.int64))


# ---- transformer ops -----------------------------------------------------------------------

def _rms_norm(x: torch.Tensor, axis: int, eps: float) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(axis, keepdim=True) + eps)).to(x.dtype)


@reference_op("tract_core.rms_norm", "tract_transformers.rms_norm")
def rms_norm(c: Call) -> torch.Tensor:
    return _rms_norm(c.args[0], c.attr("axis"), c.attr("eps"))


@reference_op("tract_core.scaled_rms_norm")
def scaled_rms_norm(c: Call) -> torch.Tensor:
    x, scale = c.args
    return _rms_norm(x, c.attr("axis"), c.attr("eps")) * scale


@reference_op("t2ir.rms_norm")
def t2ir_rms_norm(c: Call) -> torch.Tensor:
    x, *weight = c.args
    axis = c.attr("axis") % x.dim()
    y = _rms_norm(x.to(c.dtype()), axis, c.attr("eps", 1e-6))
    if weight:
        shape = [d if i == axis else 1 for i, d in enumerate(x.shape)]
        y = y * weight[0].to(y.dtype).reshape(shape)
    return y


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], -1)


@reference_op("t2ir.rope", "tract_transformers.apply_rope")
def rope(c: Call) -> torch.Tensor:
    x, cos, sin = (t.to(c.dtype()) for t in c.args)
    return x * cos + _rotate_half(x) * sin


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], *, scale: Optional[float],
              causal: bool, softcap: Optional[float] = None) -> torch.Tensor:
    """softmax(q k^T * scale [softcap] + mask) v in f32, heads grouped natively (GQA), the causal
    mask aligned bottom-right (query i sees keys j <= i + Skv - Sq)."""
    q32, k32, v32 = q.float(), k.float(), v.float()
    if q.dim() >= 3 and q.shape[-3] != k.shape[-3]:
        group = q.shape[-3] // k.shape[-3]
        k32, v32 = k32.repeat_interleave(group, -3), v32.repeat_interleave(group, -3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q32, k32.transpose(-1, -2)) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    sq, skv = scores.shape[-2], scores.shape[-1]
    if causal:
        allowed = torch.arange(skv)[None, :] <= torch.arange(sq)[:, None] + (skv - sq)
        scores = scores.masked_fill(~allowed, -math.inf)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask.float()
    return torch.matmul(torch.softmax(scores, -1), v32).to(q.dtype)


@reference_op("t2ir.sdpa")
def t2ir_sdpa(c: Call) -> torch.Tensor:
    q, k, v, *mask = c.args
    return attention(q, k, v, mask[0] if mask else None, scale=c.attr("scale"), causal=c.attr("causal", False),
                     softcap=c.attr("softcap")).to(c.dtype())


@reference_op("tract_transformers.sdpa")
def tract_sdpa(c: Call) -> torch.Tensor:
    q, k, v, *mask = c.args
    return attention(q, k, v, mask[0] if mask else None, scale=c.attr("scale"),
                     causal=c.attr("is_causal", False)).to(c.dtype())


# ---- resize --------------------------------------------------------------------------------

_COORDS: dict[str, Callable] = {  # output index -> input coordinate, in f32 as tract computes it
    "asymmetric": lambda x, s, n_in: x / s,
    "half_pixel": lambda x, s, n_in: (x + 0.5) / s - 0.5,
    "align_corners": lambda x, s, n_in: (x * (n_in - 1) / (s * n_in - 1) if s * n_in != 1 else x * 0),
}


def _cubic(t: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    t = t.abs()
    near = (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
    far = a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t <= 2, far, torch.zeros_like(t)))


def _resize_plan(c: Call, scale: float, n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """tract's plan for one axis: each output reads `window` clamped input taps around its
    source coordinate (2 for nearest / linear, 4 for cubic), with these weights."""
    s = torch.tensor(scale, dtype=torch.float32)
    x = _COORDS[c.attr("coord_transformer", "half_pixel")](torch.arange(n_out, dtype=torch.float32), s, n_in)
    cell = torch.ceil(x) - 1
    r = (x - cell)[:, None]  # in (0, 1]
    kind = c.attr("interpolator", "linear")
    window = 4 if kind == "cubic" else 2
    k = torch.arange(window, dtype=torch.float32)
    taps = (cell[:, None] + 1 - window // 2 + k).long().clamp(0, n_in - 1)
    offset = 1 - window // 2 + k - r
    if kind == "cubic":
        weights = _cubic(offset)
    elif kind == "linear":
        weights = (1 - offset.abs()).clamp(0, 1)
    else:
        right = (r == 1) | ((r >= 0.5) if c.attr("nearest_mode", "floor") == "round_prefer_ceil" else False)
        weights = torch.cat([~right, right], 1).float()
    return taps, weights


@reference_op("tract_core.resize")
def resize(c: Call) -> torch.Tensor:
    """tract's resize: one axis at a time in f32, each output a weighted sum of input taps. An
    integer scale multiplies the size, another truncates in_size * scale."""
    x = c.args[0]
    y = x.float()
    scales, sizes = c.attr("scales"), c.attr("sizes")
    for axis, n_in in enumerate(x.shape):
        if scales:
            scale = float(torch.tensor(scales[axis], dtype=torch.float32))
            n_out = n_in * int(scale) if scale == round(scale) else int(torch.tensor(float(n_in)) * scale)
        else:
            n_out, scale = sizes[axis], sizes[axis] / n_in
        if n_out == n_in and scale == 1.0:
            continue
        taps, weights = _resize_plan(c, scale, n_in, n_out)
        trailing = (1,) * (x.dim() - axis - 1)
        y = sum(y.index_select(axis, taps[:, k]) * weights[:, k].reshape(-1, *trailing)
                for k in range(taps.shape[1]))
    return y.to(x.dtype)


# ---- recurrent layers ----------------------------------------------------------------------

@reference_op("t2ir.lstm", "t2ir.gru", "t2ir.rnn_tanh", "t2ir.rnn_relu")
def rnn(c: Call):
    """t2ir's recurrent operators (nn.LSTM / GRU / RNN traced whole) run aten's kernels, as the
    modules do: inputs are the sequence, the initial state(s) (two for LSTM), then the weights."""
    cell = c.op.split(".")[1]
    x, *rest = c.args
    n_states = 2 if cell == "lstm" else 1
    hx = rest[:n_states] if cell == "lstm" else rest[0]
    flags = (c.attr(k) for k in ("has_biases", "num_layers", "dropout", "train", "bidirectional", "batch_first"))
    return getattr(torch.ops.aten, cell).input(x, hx, rest[n_states:], *flags)


def _fragment_io(name: str) -> tuple[list[str], list[str]]:
    """The parameter and result names of a registered NNEF fragment, from its definition."""
    from t2ir.ops.registry import REGISTRY

    entry = REGISTRY.lookup(name)
    text = entry.signature.fragment if entry and entry.signature else None
    m = re.search(r"\((.*?)\)\s*->\s*\((.*?)\)", text or "", re.S)
    if m is None:
        raise NotImplementedError(f"{name} is not a fragment with a definition")
    return [re.findall(r"(\w+)\s*:", part) for part in m.groups()]


@reference_op("tract_core.scan")
def scan(c: Call):
    """tract's loop: the body fragment (through its reference implementation) runs once per
    chunk of the `scan` inputs (chunk < 0: from the end), with the `full` inputs whole and the
    `state` inputs carried from one iteration's results to the next. A `full` output stacks the
    iterations' results in sequence order, a `last` output is the final iteration's."""
    if c.attr("skip", 0):
        raise NotImplementedError("tract_core.scan with skip > 0")
    body = c.attr("body")
    step = scan_step(body)
    if step is not None:  # a step lifted from torch's scan: its graph is the reference
        from t2ir.interpret.engine import Interpreter

        params, results = [v.name for v in step.graph.inputs], [v.name for v in step.graph.outputs]
        run = Interpreter(step.graph).outputs
        reference = lambda call: run(call.args)  # noqa: E731
    elif body in REFERENCE:
        params, results = _fragment_io(body)
        reference = REFERENCE[body]
    else:
        raise NotImplementedError(f"the scan body {body} has no reference implementation")
    scanned = c.attr("scan")
    steps = c.args[scanned[0][1]].shape[scanned[0][2]] // abs(scanned[0][3])
    if steps == 0:
        raise NotImplementedError("tract_core.scan over an empty sequence")
    bound = {name: c.args[i] for name, i in c.attr("full", [])}
    state = {name: (c.args[i], result) for name, i, result in c.attr("state", [])}
    outputs = c.attr("output")
    collected: list[list[torch.Tensor]] = [[] for _ in outputs]
    for step in range(steps):
        for name, i, axis, chunk in scanned:
            at = step if chunk > 0 else steps - 1 - step
            bound[name] = c.args[i].narrow(axis, at * abs(chunk), abs(chunk))
        bound.update({name: value for name, (value, _) in state.items()})
        got = reference(Call(body, [bound[p] for p in params], {}, []))
        got = dict(zip(results, got if isinstance(got, (tuple, list)) else [got]))
        state = {name: (got[result], result) for name, (_, result) in state.items()}
        for out, (result, _, _, _) in zip(collected, outputs):
            out.append(got[result])
    return [out[-1] if kind == "last" else torch.cat(out[::-1] if chunk < 0 else out, axis)
            for out, (_, kind, axis, chunk) in zip(collected, outputs)]


# The cells `t2ir.ops.aten.rnn` scans: gx is one step's input projection [1, B, G*H] (gates in
# torch's order), h and c the states [B, H], w_hh [G*H, H]; results (y = h_next as [1, B, H], states).

@reference_op("fragment.t2ir_lstm_step", "fragment.t2ir_lstm_proj_step")
def lstm_step(c: Call):
    """Gates i, f, g, o; with proj_size, w_hr [P, H] projects the new h."""
    gx, h, cell, w_hh, *w_hr = c.args
    i, f, g, o = (gx[0] + h @ w_hh.T).chunk(4, -1)
    c_next = f.sigmoid() * cell + i.sigmoid() * g.tanh()
    h_next = o.sigmoid() * c_next.tanh()
    if w_hr:
        h_next = h_next @ w_hr[0].T
    return h_next.unsqueeze(0), h_next, c_next


@reference_op("fragment.t2ir_gru_step")
def gru_step(c: Call):
    """Gates r, z, n; b_hh [1, 3H] stays inside the new gate: n = tanh(x_n + r * (W_hn h + b_hn))."""
    gx, h, w_hh, b_hh = c.args
    x_r, x_z, x_n = gx[0].chunk(3, -1)
    h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, -1)
    r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
    h_next = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
    return h_next.unsqueeze(0), h_next


reference_op("fragment.t2ir_rnn_tanh_step")(lambda c: _elman_step(c, torch.tanh))
reference_op("fragment.t2ir_rnn_relu_step")(lambda c: _elman_step(c, torch.relu))


def _elman_step(c: Call, act: Callable[[torch.Tensor], torch.Tensor]):
    gx, h, w_hh = c.args
    h_next = act(gx[0] + h @ w_hh.T)
    return h_next.unsqueeze(0), h_next
