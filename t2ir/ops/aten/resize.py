"""Interpolation (F.interpolate: nearest, nearest-exact, linear/bilinear/trilinear, bicubic) as
tract's one `tract_core_resize` op; antialiased resizing (no tract op) as two matmuls when the
sizes are static."""

from __future__ import annotations

import sympy
import torch

from t2ir.errors import TranslationError
from t2ir.ir import Node, Value
from t2ir.ops.context import LowerContext, torch_op
from t2ir.ops.aten._util import unsqueeze_to_rank
from t2ir.ops.registry import builtin


def _mode(op: str) -> dict:
    """tract's interpolator, coordinate transform and rounding for one torch upsample op."""
    name = op.split(".")[1]
    if "nearest_exact" in name:  # src = floor((dst + 0.5) / scale)
        return dict(interpolator="nearest", coord_transformer="half_pixel", nearest_mode="round_prefer_ceil")
    if "nearest" in name:  # src = floor(dst / scale)
        return dict(interpolator="nearest", coord_transformer="asymmetric", nearest_mode="floor")
    return dict(interpolator="cubic" if "bicubic" in name else "linear")


def _given_scales(ctx: LowerContext) -> list[float] | None:
    """The scale factors the model passed (`scale_factor=`), None when it passed a size."""
    given = ctx.args.get("scale_factors")
    if given is None and "scale_factors" not in ctx.args:  # the non-vec overloads: scales_h, scales_w, ...
        given = [v for k, v in ctx.args.items() if k.startswith("scales")]
    if not given or any(s is None for s in given):
        return None
    return [float(s) for s in given]


def _ratios(x: Value, out) -> list[float] | None:
    """out / in per spatial axis, when it is a number (static sizes, or 2 * H from H)."""
    ratios = []
    for i, o in zip(x.shape[2:], out.shape[2:]):
        r = sympy.nsimplify(sympy.sympify(o) / sympy.sympify(i))
        if not r.is_number:
            return None
        ratios.append(float(r))
    return ratios


@builtin(*(f"aten.{op}{v}" for op in ("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
                                       "_upsample_nearest_exact1d", "_upsample_nearest_exact2d",
                                       "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
                                       "upsample_trilinear3d", "upsample_bicubic2d") for v in ("", ".vec")))
def upsample(node: Node, ctx: LowerContext) -> Value:
    """tract's resize takes per-axis scales: torch's own scale factors when the model gave them
    (its coordinates use them), else out / in. With align_corners torch uses the sizes only."""
    x = ctx.args.get("input", ctx.args.get("self"))
    out = ctx.out
    attrs = _mode(node.op)
    align = bool(ctx.arg("align_corners", False))
    if attrs["interpolator"] != "nearest":
        attrs["coord_transformer"] = "align_corners" if align else "half_pixel"
    scales = None if align else _given_scales(ctx)
    static = all(isinstance(d, int) for d in x.shape[2:])
    if scales is not None and not static and any(s != int(s) for s in scales):
        scales = None  # tract sizes a dynamic axis by an integer scale only
    scales = scales or _ratios(x, out)
    if scales is None or (not static and any(s != int(s) for s in scales)):
        raise TranslationError("resizing a dynamic spatial axis by a size that is not an integer multiple of it "
                               "is not supported by tract's resize", "use an integer scale_factor")
    return ctx.emit("tract_core.resize", [x], out, scales=[1.0, 1.0] + scales, **attrs)


@builtin(*(f"aten.{op}{v}" for op in ("_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa") for v in ("", ".vec")))
def antialiased_upsample(node: Node, ctx: LowerContext) -> Value:
    """Antialiased resizing is separable and linear: with static sizes it is `A @ x @ B`, the
    matrices read off torch's own op applied to one-hot images, so they match it exactly."""
    x = ctx.args.get("input", ctx.args.get("self"))
    out = ctx.out
    if not all(isinstance(d, int) for d in (*x.shape[2:], *out.shape[2:])):
        raise TranslationError("antialiased resizing (interpolate with antialias=True) has no tract op and is "
                               "exported only between static sizes",
                               "export with a static image size, or resize without antialias")
    op = torch_op(node.op.split(".vec")[0])  # the overload with sizes and per-axis scales
    scales = _given_scales(ctx) or [None, None]
    align = bool(ctx.arg("align_corners", False))
    (h, w), (ho, wo) = x.shape[2:], out.shape[2:]
    rows = op(_one_hot_images(h, axis=0), [ho, 2], align, scales[0], None)
    cols = op(_one_hot_images(w, axis=1), [2, wo], align, None, scales[1])
    dtype = out.dtype.torch
    left = ctx.const(f"{ctx.node.outputs[0].name}_rows", rows[:, 0, :, 0].T.contiguous().to(dtype))
    right = ctx.const(f"{ctx.node.outputs[0].name}_cols", cols[:, 0, 0, :].contiguous().to(dtype))
    x = ctx.cast(x, out.dtype)
    tall = ctx.emit("nnef.matmul", [unsqueeze_to_rank(ctx, left, x.rank), x], out.with_shape((*x.shape[:2], ho, w)))
    return ctx.emit("nnef.matmul", [tall, unsqueeze_to_rank(ctx, right, x.rank)], out)


def _one_hot_images(n: int, axis: int):
    """n images, image k one at position k along `axis` (the other axis 2 wide and kept: torch's
    kernels treat a 1-wide image differently)."""
    eye = torch.eye(n, dtype=torch.float64)
    shape = (n, 1, n, 2) if axis == 0 else (n, 1, 2, n)
    return (eye[:, None, :, None] if axis == 0 else eye[:, None, None, :]).expand(shape).contiguous()
