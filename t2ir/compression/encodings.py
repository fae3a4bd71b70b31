"""Writers of packed encodings: each stores one loaded weight and returns what it measured (its error)."""

from __future__ import annotations

import math
from typing import BinaryIO

import numpy as np
import torch

from t2ir.compression.q4_0 import CHUNK_BYTES, dequantize_q4_0, quantize_q4_0
from t2ir.ir import Value


class RelativeError:
    """Accumulates RMSE(approx - w) / RMS(w) over chunks.

    Each chunk's sums of squares are f32 dot products (BLAS, about 4x faster than going through
    float64 arrays), added up in Python floats: plenty for a 4-digit report on chunks of ~1M values.
    """

    def __init__(self) -> None:
        self.err2 = 0.0
        self.ref2 = 0.0

    def add(self, w: np.ndarray, approx: np.ndarray) -> None:
        w = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
        diff = np.subtract(approx.reshape(-1), w, dtype=np.float32)
        self.err2 += float(np.dot(diff, diff))
        self.ref2 += float(np.dot(w, w))

    @property
    def value(self) -> float:
        if self.ref2 == 0.0:
            return 0.0 if self.err2 == 0.0 else math.inf
        return math.sqrt(self.err2 / self.ref2)


def q4_0_reference(w: torch.Tensor) -> torch.Tensor:
    """dequantize(quantize(w)) in w's dtype: the weight tract computes with once `w` is Q4_0."""
    rows = w.detach().cpu().reshape(w.shape[0], -1)
    back = dequantize_q4_0(quantize_q4_0(rows), tuple(rows.shape))
    return torch.from_numpy(back).reshape(w.shape).to(w.dtype)


def static_shape(v: Value) -> tuple[int, ...]:
    dims = tuple(v.shape)
    if not all(isinstance(d, int) for d in dims):
        raise ValueError(f"constant {v.const.label!r} has a symbolic shape {list(dims)}")
    return dims


def write_q4_0(f: BinaryIO, tensor: torch.Tensor, v: Value) -> dict:
    """Quantize `tensor` (any float dtype, taken in f32) to a Q4_0 .dat; returns {"rel_error": ...}.

    The error is measured row chunk by row chunk, so the extra memory stays a few MiB beyond the
    tensor and its 4.5-bit payload.
    """
    from t2ir.emitters.dat import write_q4_0_dat

    shape = static_shape(v)
    if tuple(tensor.shape) != shape:
        raise ValueError(f"constant {v.const.label!r}: data has shape {list(tensor.shape)}, IR says {list(shape)}")
    w = tensor.detach().cpu().reshape(shape[0], -1)
    try:
        payload = quantize_q4_0(w)
    except ValueError as e:
        raise ValueError(f"constant {v.const.label!r}: {e}") from None
    err = RelativeError()
    step = max(1, CHUNK_BYTES // (4 * w.shape[1]))
    for r0 in range(0, w.shape[0], step):
        rows = w[r0:r0 + step].to(torch.float32).numpy()
        err.add(rows, dequantize_q4_0(payload[r0:r0 + step], rows.shape))
    write_q4_0_dat(f, shape, payload)
    return {"rel_error": err.value}
