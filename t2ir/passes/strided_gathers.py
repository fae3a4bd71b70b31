"""strided-gathers: subsampling written as gathers of strided ranges, never as tract's Downsample.

tract reads a strided slice, and a convolution whose kernel is 1 wide along a strided axis, as its
`Downsample` op, which its optimizer then pulls up the graph towards the producer. Pulled up to a
reshape that merges the subsampled axis with another, tract 0.23.9 fails instead of stopping
("Pulling Downsample over Reshape: Invalid axis"): a reshape of the model's (LeViT), or the one tract
itself puts after a 1x1 convolution it runs as a matrix product (conv 1x1 -> relu -> conv 1x1
stride 2 cannot load; RegNetX, Res2NeXt). Which pulls reach such a reshape depends on tract's own
rewrites, so every such subsampling is a gather of a strided range, which tract leaves where it
is. Measured on ResNet-50 in tract: the same speed either way (its shortcut convolutions are the
1-wide strided ones).
"""

from __future__ import annotations

from typing import Optional

from t2ir.ir import Value
from t2ir.passes.pattern import op
from t2ir.passes.rewrite import Match, RewritePass, rule
from t2ir.types import DType, TensorType


def _gather_every(m: Match, x: Value, axis: int, start, end, step: int, length) -> Value:
    """x[start:end:step] along `axis` (`length` elements) as a gather of a range."""
    index = m.op("tract_core.range", [], TensorType(DType.i64, (length,)), name="subsample_index", start=start,
                 end=end, step=step)
    shape = list(x.shape)
    shape[axis] = length
    return m.op("tract_core.gather", [x, index], x.type.with_shape(tuple(shape)), name="subsample", axis=axis)


@rule(op("nnef.conv"))
def strided_one_wide_conv(m: Match) -> Optional[Value]:
    """conv(x, stride s) with a 1-wide kernel on that axis -> conv(gather(x, range(0, n, s)))"""
    node = m.root
    x, w = node.inputs[0], node.inputs[1]
    a = node.attrs
    unpadded = [not a["padding"] or list(a["padding"][i]) == [0, 0] for i in range(len(a["stride"]))]
    axes = [i for i, s in enumerate(a["stride"]) if s > 1 and w.shape[2 + i] == 1 and unpadded[i]]
    if not axes:
        return None
    for i in axes:
        x = _gather_every(m, x, 2 + i, 0, x.shape[2 + i], a["stride"][i], m.out.shape[2 + i])
    stride = [1 if i in axes else s for i, s in enumerate(a["stride"])]
    return m.op("nnef.conv", [x, *node.inputs[1:]], m.out, name="conv", **{**a, "stride": stride})


@rule(op("nnef.slice"))
def strided_slice(m: Match) -> Optional[Value]:
    """slice(x, begin b, stride s) -> gather(x, range(b, b + s * (n - 1) + 1, s)) on the strided axes"""
    node = m.root
    a = node.attrs
    strides = list(a.get("stride") or [1] * len(a["axes"]))
    cuts = list(zip(a["axes"], a["begin"], a["end"], strides))
    if all(s == 1 for *_, s in cuts) or any(s < 1 or (isinstance(b, int) and b < 0) for _, b, _, s in cuts):
        return None
    y = node.inputs[0]
    plain = [(axis, b, e) for axis, b, e, s in cuts if s == 1]
    if plain:
        shape = [m.out.shape[i] if any(i == axis for axis, _, _ in plain) else d for i, d in enumerate(y.shape)]
        y = m.op("nnef.slice", [y], y.type.with_shape(tuple(shape)), name="slice", axes=[c[0] for c in plain],
                 begin=[c[1] for c in plain], end=[c[2] for c in plain], stride=[1] * len(plain))
    for axis, b, _, s in cuts:
        if s > 1:
            n = m.out.shape[axis]  # the last index taken, plus one: `end` may lie past the axis
            y = _gather_every(m, y, axis, b, b + s * (n - 1) + 1, s, n)
    return y


StridedGathers = RewritePass("strided-gathers", [strided_one_wide_conv, strided_slice])
