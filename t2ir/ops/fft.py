"""`t2ir::fft`: a discrete Fourier transform of complex numbers carried as real pairs, as a torch
op (t2ir.frontend.complex_to_real writes torch's FFTs with it) and its translation to tract's
`tract_core_fft`, which takes the same [.., 2] layout."""

from __future__ import annotations

import torch

from t2ir.ir import Node, Value
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import builtin


@torch.library.custom_op("t2ir::fft", mutates_args=())
def fft(x: torch.Tensor, axis: int, inverse: bool) -> torch.Tensor:
    """The DFT of the complex numbers x[..., 0] + i x[..., 1] along `axis` (of x without its
    pair axis), unnormalised both ways as tract computes it: the inverse is n * ifft."""
    c = torch.view_as_complex(x.contiguous())
    y = torch.fft.ifft(c, dim=axis, norm="forward") if inverse else torch.fft.fft(c, dim=axis)
    return torch.view_as_real(y).contiguous()


@fft.register_fake
def _(x, axis, inverse):
    return torch.empty_like(x)


@builtin("t2ir.fft")
def lower_fft(node: Node, ctx: LowerContext) -> Value:
    axis = int(ctx.args["axis"])
    x = ctx.args["x"]
    return ctx.emit("tract_core.fft", [x], ctx.out, axis=axis % (x.rank - 1), inverse=bool(ctx.args["inverse"]))
