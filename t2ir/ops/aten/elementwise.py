"""Elementwise aten ops: arithmetic, comparisons, logic, activations."""

from __future__ import annotations

import math

from t2ir.ir import Node, Value
from t2ir.ops.aten._util import promote, scalar_or_value, unsqueeze_to_rank
from t2ir.ops.aliases import CASTS, DROPOUT, IDENTITY
from t2ir.ops.aten.factories import fill
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin
from t2ir.errors import TranslationError
from t2ir.types import DType, TensorType


def binary(ctx: LowerContext, op: str, a, b, dtype: DType, out: TensorType) -> Value:
    """`op(a, b)` where each side is a Value or a Python number; values are cast to `dtype`."""
    a = scalar_or_value(ctx, a, dtype)
    b = scalar_or_value(ctx, b, dtype)
    rank = out.rank
    if isinstance(a, Value) and isinstance(b, Value):
        return ctx.emit(op, [unsqueeze_to_rank(ctx, a, rank), unsqueeze_to_rank(ctx, b, rank)], out)
    if isinstance(a, Value):
        return ctx.emit(op, [a], out, y=b)
    if isinstance(b, Value):
        return ctx.emit(op, [b], out, x=a)
    raise TranslationError("an operation on two constants was left in the graph (torch.export folds these)",
                           "this is a t2ir bug; please report it")


def _operands(ctx: LowerContext) -> tuple:
    return ctx.args["self"], ctx.args["other"]


def compute_dtype(ctx: LowerContext, *operands) -> DType:
    """The dtype an op computes in: promoted among tensor operands (scalars follow tensors)."""
    tensors = [o.dtype for o in operands if isinstance(o, Value)]
    out = ctx.out.dtype
    if out.is_float or not tensors:
        return out if out != DType.bool else promote(*tensors)
    floats = [o for o in operands if isinstance(o, float)]
    return promote(*tensors) if not floats else DType.f32


_ARITH = {"add": "nnef.add", "sub": "nnef.sub", "mul": "nnef.mul", "div": "nnef.div",
          "pow": "nnef.pow", "maximum": "nnef.max", "minimum": "nnef.min",
          "fmax": "nnef.max", "fmin": "nnef.min"}


@builtin(*(f"aten.{n}.{o}" for n in ["add", "sub", "mul", "maximum", "minimum"] for o in ["Tensor", "Scalar"]),
         "aten.maximum", "aten.minimum", "aten.add", "aten.sub", "aten.mul", "aten.rsub.Scalar", "aten.rsub.Tensor",
         "aten.max.other", "aten.min.other", "aten.fmax", "aten.fmin")
def arith(node: Node, ctx: LowerContext) -> Value:
    kind = {"max": "maximum", "min": "minimum"}.get(node.op.split(".")[1], node.op.split(".")[1])
    a, b = _operands(ctx)
    dtype = ctx.out.dtype
    if kind == "rsub":
        a, b, kind = b, a, "sub"
    if dtype == DType.bool:  # mask arithmetic (mask_a * mask_b is `and`): tract has no Bool Mul or Add
        counts = binary(ctx, _ARITH[kind], a, b, DType.u8, ctx.out.with_dtype(DType.u8))
        return binary(ctx, "nnef.ne", counts, 0, DType.u8, ctx.out)
    alpha = ctx.arg("alpha", 1)
    if alpha != 1 and kind in ("add", "sub"):
        b = binary(ctx, "nnef.mul", b, alpha, dtype, ctx.out) if isinstance(b, Value) else b * alpha
    return binary(ctx, _ARITH[kind], a, b, dtype, ctx.out)


@builtin("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode", "aten.div.Scalar_mode",
         "aten.true_divide.Tensor", "aten.floor_divide", "aten.floor_divide.Scalar")
def div(node: Node, ctx: LowerContext) -> Value:
    a, b = _operands(ctx)
    mode = ctx.arg("rounding_mode") or ("floor" if "floor_divide" in node.op else None)
    out = ctx.out
    if mode is None:
        return binary(ctx, "nnef.div", a, b, out.dtype, out)
    work = out.with_dtype(DType.f32 if not out.dtype.is_float else out.dtype)
    q = binary(ctx, "nnef.div", a, b, work.dtype, work)
    q = ctx.emit("nnef.floor", [q], work) if mode == "floor" else _trunc(ctx, q)
    return ctx.cast(q, out.dtype)


def _trunc(ctx: LowerContext, q: Value) -> Value:
    """trunc(q) = sign(q) * floor(|q|)."""
    t = q.type
    mag = ctx.emit("nnef.floor", [ctx.emit("nnef.abs", [q], t)], t)
    return ctx.emit("nnef.mul", [ctx.emit("nnef.sign", [q], t), mag], t)


@builtin("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
def pow_(node: Node, ctx: LowerContext) -> Value:
    a = ctx.args.get("self")
    b = ctx.args["exponent"]
    out = ctx.out
    if isinstance(a, Value) and not isinstance(b, Value):
        if b == 2:
            return ctx.emit("nnef.square", [ctx.cast(a, out.dtype)], out)
        if b == 0.5:
            return ctx.emit("nnef.sqrt", [ctx.cast(a, out.dtype)], out)
        if b == 1:
            return ctx.cast(a, out.dtype)
    return binary(ctx, "nnef.pow", a, b, out.dtype, out)


_COMPARE = {"eq": "nnef.eq", "ne": "nnef.ne", "lt": "nnef.lt", "gt": "nnef.gt", "le": "nnef.le", "ge": "nnef.ge"}


@builtin(*(f"aten.{n}.{o}" for n in _COMPARE for o in ["Tensor", "Scalar"]))
def compare(node: Node, ctx: LowerContext) -> Value:
    a, b = _operands(ctx)
    dtype = compute_dtype(ctx, a, b)
    if dtype == DType.bool:  # tract compares numbers only (mask == 0 on a bool mask): as u8, false < true
        dtype = DType.u8
    op = _COMPARE[node.op.split(".")[1]]
    if dtype != DType.u8 and all(isinstance(v, Value) and _from_range(v) for v in (a, b)):
        # tract 0.23.9 reads a comparison of two positions tensors (a causal mask: i >= j) as a
        # symbolic condition, and a select over it then fails at run time on symbolic sizes; the
        # same comparison made against zero is computed as it is (exact: positions are small)
        diff = binary(ctx, "nnef.sub", a, b, dtype, ctx.out.with_dtype(dtype))
        return binary(ctx, op, diff, 0, dtype, ctx.out)
    return binary(ctx, op, a, b, dtype, ctx.out)


def _from_range(v: Value, budget: int = 32) -> bool:
    """Whether `v` is computed from a `tract_core.range` (looking a bounded way up)."""
    todo, seen = [v], set()
    while todo and len(seen) < budget:
        node = todo.pop().producer
        if node is None or id(node) in seen:
            continue
        if node.op == "tract_core.range":
            return True
        seen.add(id(node))
        todo += node.inputs
    return False


_LOGIC = {"and": ("nnef.and", "tract_core.bitand"), "or": ("nnef.or", "tract_core.bitor"),
          "xor": ("tract_core.xor", "tract_core.bitxor")}


@builtin(*(f"aten.{p}{k}{s}" for k in _LOGIC for p, s in [("logical_", ""), ("bitwise_", ".Tensor"),
                                                          ("bitwise_", ".Scalar"), ("__", "__.Tensor"),
                                                          ("__", "__.Scalar")]))
def logic(node: Node, ctx: LowerContext) -> Value:
    """Logical and/or/xor on bools; bitwise ones on integers (tract's bit* ops)."""
    a, b = _operands(ctx)
    kind = node.op.split(".")[1].strip("_").removeprefix("logical_").removeprefix("bitwise_")
    logical, bitwise = _LOGIC[kind]
    out = ctx.out
    if out.dtype == DType.bool:
        return binary(ctx, logical, a, b, DType.bool, out)
    if not out.dtype.is_int:
        raise TranslationError(f"bitwise {kind} on {out.dtype} is not supported", "use bool or integer tensors")
    return binary(ctx, bitwise, a, b, out.dtype, out)


@builtin("aten.logical_not", "aten.bitwise_not")
def logical_not(node: Node, ctx: LowerContext) -> Value:
    x = node.inputs[0]
    if node.op == "aten.bitwise_not" and x.dtype.is_int:
        return ctx.emit("tract_core.bitnot", [x], ctx.out)
    return ctx.emit("nnef.not", [ctx.cast(x, DType.bool)], ctx.out)


@builtin("aten.remainder.Tensor", "aten.remainder.Scalar", "aten.fmod.Tensor", "aten.fmod.Scalar")
def remainder(node: Node, ctx: LowerContext) -> Value:
    """tract has no modulo: a - floor(a / b) * b (remainder, sign of b) or with trunc (fmod,
    sign of a). Integers go through f32, exact below 2**24."""
    a, b = _operands(ctx)
    out = ctx.out
    work = out if out.dtype.is_float else out.with_dtype(DType.f32)
    q = binary(ctx, "nnef.div", a, b, work.dtype, work)
    q = ctx.emit("nnef.floor", [q], work) if node.op.startswith("aten.remainder") else _trunc(ctx, q)
    r = binary(ctx, "nnef.sub", a, binary(ctx, "nnef.mul", q, b, work.dtype, work), work.dtype, work)
    return ctx.cast(r, out.dtype)


@builtin("aten.isnan", "aten.isinf", "aten.isposinf", "aten.isneginf", "aten.isfinite")
def isnan(node: Node, ctx: LowerContext) -> Value:
    x, out = node.inputs[0], ctx.out
    kind = node.op.split(".")[1]
    if not x.dtype.is_float:
        return fill(ctx, kind == "isfinite", out)
    if kind == "isnan":
        return ctx.emit("tract_core.is_nan", [x], out)
    if kind == "isfinite":
        bad = ctx.emit("nnef.or", [ctx.emit("tract_core.is_nan", [x], out), ctx.emit("tract_core.is_inf", [x], out)],
                       out)
        return ctx.emit("nnef.not", [bad], out)
    return ctx.emit("tract_core.is_inf", [x], out, detect_positive=kind != "isneginf",
                    detect_negative=kind != "isposinf")


_UNARY = {
    "relu": "nnef.relu", "sigmoid": "nnef.sigmoid", "tanh": "nnef.tanh", "exp": "nnef.exp",
    "log": "nnef.log", "sqrt": "nnef.sqrt", "rsqrt": "nnef.rsqrt", "abs": "nnef.abs", "neg": "nnef.neg",
    "sign": "nnef.sign", "floor": "nnef.floor", "ceil": "nnef.ceil", "reciprocal": "nnef.recip",
    "sin": "nnef.sin", "cos": "nnef.cos", "tan": "nnef.tan", "erf": "tract_core.erf",
    "asin": "nnef.asin", "acos": "nnef.acos", "atan": "nnef.atan", "sinh": "nnef.sinh", "cosh": "nnef.cosh",
    "asinh": "nnef.asinh", "acosh": "nnef.acosh", "atanh": "nnef.atanh", "square": "nnef.square",
    "round": "tract_core.round_even",
}


@builtin(*(f"aten.{n}" for n in _UNARY))
def unary(node: Node, ctx: LowerContext) -> Value:
    x = ctx.cast(node.inputs[0], ctx.out.dtype)
    return ctx.emit(_UNARY[node.op.split(".")[1]], [x], ctx.out)


@builtin("aten.expm1", "aten.log1p")
def expm1_log1p(node: Node, ctx: LowerContext) -> Value:
    """exp(x) - 1 and log(1 + x) without losing small x to rounding (Kahan's trick): with
    u = exp(x) (or 1 + x), expm1 = (u - 1) * x / log(u) and log1p = log(u) * x / (u - 1), x
    itself where u rounds to 1; the plain formula where |x| >= 0.5 (nothing cancels there)."""
    x = ctx.cast(node.inputs[0], ctx.out.dtype)
    t, b = x.type, x.type.with_dtype(DType.bool)
    is_expm1 = node.op == "aten.expm1"
    u = ctx.emit("nnef.exp", [x], t) if is_expm1 else ctx.emit("nnef.add", [x], t, y=1.0)
    u_minus_1 = ctx.emit("nnef.sub", [u], t, y=1.0)
    log_u = ctx.emit("nnef.log", [u], t)
    num, den = (u_minus_1, log_u) if is_expm1 else (log_u, u_minus_1)
    kahan = ctx.emit("nnef.div", [ctx.emit("nnef.mul", [num, x], t), den], t)
    kahan = ctx.emit("nnef.select", [ctx.emit("nnef.eq", [u], b, y=1.0), x, kahan], t)
    small = ctx.emit("nnef.lt", [ctx.emit("nnef.abs", [x], t)], b, y=0.5)
    return ctx.emit("nnef.select", [small, kahan, u_minus_1 if is_expm1 else log_u], t)


@builtin("aten.round.decimals")
def round_decimals(node: Node, ctx: LowerContext) -> Value:
    """round(x * 10^d) / 10^d, halves to even like torch."""
    x = ctx.cast(node.inputs[0], ctx.out.dtype)
    scale = 10.0 ** int(ctx.arg("decimals", 0))
    scaled = ctx.emit("nnef.mul", [x], x.type, y=scale)
    return ctx.emit("nnef.div", [ctx.emit("tract_core.round_even", [scaled], x.type)], x.type, y=scale)


_LN2, _LN10 = math.log(2.0), math.log(10.0)


@builtin("aten.log2", "aten.log10", "aten.exp2", "aten.trunc", "aten.fix", "aten.erfc", "aten.signbit", "aten.frac")
def unary_composite(node: Node, ctx: LowerContext) -> Value:
    """Unary functions tract has no operator for, from those it has."""
    kind = node.op.split(".")[1]
    x = node.inputs[0]
    t = ctx.out if kind != "signbit" else x.type
    if kind == "signbit":  # x < 0, and -0.0 too (1 / -0.0 = -inf)
        neg = ctx.emit("nnef.lt", [x], ctx.out, y=0.0)
        if not x.dtype.is_float:
            return neg
        neg_zero = ctx.emit("nnef.lt", [ctx.emit("nnef.div", [x], x.type, x=1.0)], ctx.out, y=0.0)
        zero = ctx.emit("nnef.eq", [x], ctx.out, y=0.0)
        return ctx.emit("nnef.or", [neg, ctx.emit("nnef.and", [zero, neg_zero], ctx.out)], ctx.out)
    x = ctx.cast(x, t.dtype)
    if kind in ("log2", "log10"):
        return ctx.emit("nnef.div", [ctx.emit("nnef.log", [x], t)], t, y=_LN2 if kind == "log2" else _LN10)
    if kind == "exp2":
        return ctx.emit("nnef.exp", [ctx.emit("nnef.mul", [x], t, y=_LN2)], t)
    if kind == "erfc":
        return ctx.emit("nnef.sub", [ctx.emit("tract_core.erf", [x], t)], t, x=1.0)
    if not t.dtype.is_float:
        return x if kind in ("trunc", "fix") else fill(ctx, 0, t)
    truncated = _trunc(ctx, x)
    return truncated if kind in ("trunc", "fix") else ctx.emit("nnef.sub", [x, truncated], t)


@builtin("aten.hypot", "aten.atan2", "aten.copysign.Tensor", "aten.copysign.Scalar")
def binary_composite(node: Node, ctx: LowerContext) -> Value:
    """hypot, atan2 (quadrant-aware) and copysign from tract's operators."""
    kind = node.op.split(".")[1]
    out = ctx.out
    a, b = ctx.args["self"], ctx.args["other"]
    a = unsqueeze_to_rank(ctx, ctx.cast(a, out.dtype), out.rank)
    b = unsqueeze_to_rank(ctx, ctx.cast(b, out.dtype), out.rank) if isinstance(b, Value) else b
    if kind == "hypot":
        sq = [ctx.emit("nnef.square", [v], v.type) for v in (a, b)]
        return ctx.emit("nnef.sqrt", [ctx.emit("nnef.add", sq, out)], out)
    if kind == "copysign":  # |a| with b's sign bit (so -0.0 counts as negative)
        mag = ctx.emit("nnef.abs", [a], a.type)
        if not isinstance(b, Value):
            return mag if math.copysign(1.0, b) > 0 else ctx.emit("nnef.neg", [mag], a.type)
        b_neg = ctx.emit("nnef.lt", [ctx.emit("nnef.div", [b], b.type, x=1.0)], b.type.with_dtype(DType.bool), y=0.0)
        mag = broadcast_like(ctx, mag, out)
        return ctx.emit("nnef.select", [b_neg, ctx.emit("nnef.neg", [mag], out), mag], out)
    # atan2(y=a, x=b): atan(y / x), moved to the right half-plane's quadrant; the axis cases by sign
    return _atan2(ctx, a, b, out)


def broadcast_like(ctx: LowerContext, v: Value, out: TensorType) -> Value:
    from t2ir.ops.aten.shape import broadcast_to

    return v if tuple(v.shape) == tuple(out.shape) else broadcast_to(ctx, v, out)


def _atan2(ctx: LowerContext, y: Value, x: Value, out: TensorType) -> Value:
    b = out.with_dtype(DType.bool)
    y, x = broadcast_like(ctx, y, out), broadcast_like(ctx, x, out)
    base = ctx.emit("nnef.atan", [ctx.emit("nnef.div", [y, x], out)], out)
    pi = ctx.emit("nnef.mul", [ctx.emit("nnef.select", [ctx.emit("nnef.lt", [y], b, y=0.0)], out, true_value=-1.0,
                                        false_value=1.0)], out, y=math.pi)
    shifted = ctx.emit("nnef.add", [base, pi], out)  # x < 0: atan(y / x) +- pi, by the sign of y
    x_neg = ctx.emit("nnef.lt", [x], b, y=0.0)
    result = ctx.emit("nnef.select", [x_neg, shifted, base], out)
    # x == 0: +-pi/2 by the sign of y (and 0 when y is 0 too)
    half = ctx.emit("nnef.mul", [ctx.emit("nnef.sign", [y], out)], out, y=math.pi / 2)
    return ctx.emit("nnef.select", [ctx.emit("nnef.eq", [x], b, y=0.0), half, result], out)


@builtin("aten.silu")
def silu(node: Node, ctx: LowerContext) -> Value:
    x = node.inputs[0]
    return ctx.emit("nnef.mul", [x, ctx.emit("nnef.sigmoid", [x], x.type)], ctx.out)


@builtin("aten.gelu")
def gelu(node: Node, ctx: LowerContext) -> Value:
    x, t = node.inputs[0], ctx.out
    if ctx.arg("approximate", "none") == "tanh":
        return ctx.emit("tract_core.gelu_approx", [x], t, fast_impl=False)
    # 0.5 * x * (1 + erf(x / sqrt(2)))
    e = ctx.emit("tract_core.erf", [ctx.emit("nnef.mul", [x], t, y=1.0 / math.sqrt(2.0))], t)
    half_x = ctx.emit("nnef.mul", [x], t, y=0.5)
    return ctx.emit("nnef.mul", [half_x, ctx.emit("nnef.add", [e], t, y=1.0)], t)


@builtin("aten.leaky_relu")
def leaky_relu(node: Node, ctx: LowerContext) -> Value:
    return ctx.emit("nnef.leaky_relu", [node.inputs[0]], ctx.out, alpha=float(ctx.arg("negative_slope", 0.01)))


@builtin("aten.hardtanh", "aten.clamp", "aten.clamp.Tensor", "aten.clip", "aten.clip.Tensor", "aten.relu6",
         "aten.clamp_min", "aten.clamp_max", "aten.clamp_min.Tensor", "aten.clamp_max.Tensor")
def clamp(node: Node, ctx: LowerContext) -> Value:
    x, out = node.inputs[0], ctx.out
    if node.op == "aten.relu6":
        lo, hi = 0.0, 6.0
    elif node.op == "aten.hardtanh":
        lo, hi = ctx.arg("min_val", -1.0), ctx.arg("max_val", 1.0)
    elif node.op.startswith("aten.clamp_min"):
        lo, hi = ctx.args.get("min"), None
    elif node.op.startswith("aten.clamp_max"):
        lo, hi = None, ctx.args.get("max")
    else:
        lo, hi = ctx.args.get("min"), ctx.args.get("max")
    y = ctx.cast(x, out.dtype)
    if lo is not None:
        y = binary(ctx, "nnef.max", y, lo, out.dtype, out)
    if hi is not None:
        y = binary(ctx, "nnef.min", y, hi, out.dtype, out)
    return y


def select_operand(ctx: LowerContext, v, dtype: DType):
    """A branch of `select`: tract requires both branches to have the same type, and a float
    literal is f32, so literals of other types become typed scalar tensors."""
    v = scalar_or_value(ctx, v, dtype)
    if isinstance(v, Value) or dtype == DType.f32:
        return v
    return ctx.emit("tract_core.cast", [], TensorType(dtype, ()), input=v, to=dtype.value)


@builtin("aten.where.self", "aten.where.ScalarOther", "aten.where.ScalarSelf", "aten.where.Scalar")
def where(node: Node, ctx: LowerContext) -> Value:
    cond, a, b = ctx.args["condition"], ctx.args["self"], ctx.args["other"]
    out = ctx.out
    cond = unsqueeze_to_rank(ctx, ctx.cast(cond, DType.bool), out.rank)
    vals = []
    for v in (a, b):
        v = select_operand(ctx, v, out.dtype)
        vals.append(unsqueeze_to_rank(ctx, v, out.rank) if isinstance(v, Value) else v)
    inputs = [cond] + [v for v in vals if isinstance(v, Value)]
    attrs = {k: v for k, v in zip(("true_value", "false_value"), vals) if not isinstance(v, Value)}
    return ctx.emit("nnef.select", inputs, out, **attrs)


@builtin("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def masked_fill(node: Node, ctx: LowerContext) -> Value:
    x, mask, value = ctx.args["self"], ctx.args["mask"], ctx.args["value"]
    out = ctx.out
    mask = unsqueeze_to_rank(ctx, ctx.cast(mask, DType.bool), out.rank)
    x = unsqueeze_to_rank(ctx, x, out.rank)  # a mask of higher rank broadcasts x (numpy-style)
    value = select_operand(ctx, value, out.dtype)
    if isinstance(value, Value):
        return ctx.emit("nnef.select", [mask, unsqueeze_to_rank(ctx, value, out.rank), x], out)
    return ctx.emit("nnef.select", [mask, x], out, true_value=value)


@builtin(*CASTS)
def to_dtype(node: Node, ctx: LowerContext) -> Value:
    return ctx.cast(node.inputs[0], ctx.out.dtype)


@builtin(*IDENTITY)
def identity(node: Node, ctx: LowerContext) -> Value:
    return node.inputs[0]


@builtin(*DROPOUT, "aten.native_dropout")
def dropout(node: Node, ctx: LowerContext):
    """Nothing in inference (train=False or p=0); all zeros for p=1; random otherwise."""
    x, p, train = ctx.args["input"], float(ctx.arg("p", 0.5)), ctx.args.get("train")
    if not train or p == 0:
        out = x
    elif p == 1 and node.op in ("aten.dropout", "aten.feature_dropout", "aten.native_dropout"):
        out = fill(ctx, 0, ctx.out)
    else:
        raise TranslationError("dropout in training mode is random, which an exported graph cannot be",
                               "call model.eval() (or pass training=False) before exporting")
    if node.op == "aten.native_dropout":  # (output, mask)
        return [out, fill(ctx, True, node.outputs[1].type)]
    return out


@builtin("aten.fill.Scalar", "aten.fill_.Scalar", "aten.fill.Tensor", "aten.fill_.Tensor")
def fill_op(node: Node, ctx: LowerContext) -> Value:
    """x.fill_(v): a tensor of x's shape holding v (functional: x itself is not read)."""
    value = ctx.args["value"]
    if isinstance(value, Value):
        from t2ir.ops.aten.shape import broadcast_to

        return broadcast_to(ctx, ctx.cast(value, ctx.out.dtype), ctx.out)
    return fill(ctx, value, ctx.out)
