"""counted-means: a mean over axes of symbolic size is a sum divided by a count read from the data.

tract writes `mean_reduce` over a symbolic axis as a sum times 1 / (the axis' size expression), and
its optimizer then spends time that grows steeply with depth reasoning over those expressions: a
dynamic-image RegNetY-400MF (a global mean in every squeeze-excitation block) took 304 s to load,
its first three stages 30 s, and 0.7 s with this pass. Dividing by the size read from
`tract_core_shape_of` does not help (tract folds it back into the same expression); a count it
cannot fold does: the sum over the reduced axes of `pow(probe, 0)`, where the probe is the input
cut to one element along every other axis (so the count costs one pass over the reduced extent
only, and `pow(v, 0)` is 1 for every v, NaN and infinities included). The division runs in f32:
an f16 count overflows from 65504 elements on.
"""

from __future__ import annotations

from typing import Optional

from t2ir.ir import Value
from t2ir.passes.pattern import op
from t2ir.passes.rewrite import Match, RewritePass, rule
from t2ir.types import DType


@rule(op("nnef.mean_reduce"))
def counted_mean(m: Match) -> Optional[Value]:
    """mean_reduce(x, axes) over a symbolic axis -> sum_reduce(x, axes) / sum_reduce(pow(probe, 0), axes)"""
    x = m.root.inputs[0]
    axes = [a % x.rank for a in m.root.attrs["axes"]]
    if all(isinstance(x.shape[a], int) for a in axes) or not x.dtype.is_float:
        return None
    work = x.dtype if x.dtype in (DType.f32, DType.f64) else DType.f32
    wide = _cast(m, x, work)
    total = m.op("nnef.sum_reduce", [wide], m.out.with_dtype(work), name="mean_sum", axes=axes)
    kept = [a for a in range(x.rank) if a not in axes and x.shape[a] != 1]
    probe = wide
    if kept:
        probe_shape = tuple(1 if a in kept else d for a, d in enumerate(x.shape))
        probe = m.op("nnef.slice", [wide], wide.type.with_shape(probe_shape), name="mean_probe", axes=kept,
                     begin=[0] * len(kept), end=[1] * len(kept), stride=[1] * len(kept))
    ones = m.op("nnef.pow", [probe], probe.type, name="mean_ones", y=0.0)
    count_shape = tuple(1 for _ in range(x.rank))
    count = m.op("nnef.sum_reduce", [ones], ones.type.with_shape(count_shape), name="mean_count", axes=axes)
    mean = m.op("nnef.div", [total, count], total.type, name="mean")
    return _cast(m, mean, x.dtype)


def _cast(m: Match, v: Value, dtype: DType) -> Value:
    return v if v.dtype == dtype else m.op("tract_core.cast", [v], v.type.with_dtype(dtype), name=f"{v.name}_{dtype.value}",
                                           to=dtype.value)


CountedMeans = RewritePass("counted-means", [counted_mean])
