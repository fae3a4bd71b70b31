"""How constants are stored on disk: "plain" tensors, and packed encodings such as Q4_0.

An encoding turns one loaded weight into the bytes of its .dat file. The writer looks the
constant's `encoding` up here, so a new storage format is one `register_encoding` call. A writer
may return a dict of what it measured (e.g. {"rel_error": 0.1}) for the quantization report.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional

import numpy as np
import torch

from t2ir.compression.q4_0 import CHUNK_BYTES, dequantize_q4_0, quantize_q4_0
from t2ir.emitters.dat import write_dat, write_q4_0_dat
from t2ir.ir import Value

WriteFn = Callable[[BinaryIO, torch.Tensor, Value], Optional[dict]]


@dataclass(frozen=True)
class Encoding:
    name: str
    write: WriteFn
    bits_per_weight: float


ENCODINGS: dict[str, Encoding] = {}


def register_encoding(name: str, write: WriteFn, bits_per_weight: float, *, override: bool = False) -> None:
    if name in ENCODINGS and not override:
        raise ValueError(f"encoding {name!r} is already registered")
    ENCODINGS[name] = Encoding(name, write, bits_per_weight)


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


F16_MAX = 65504.0


def to_ir_dtype(tensor: torch.Tensor, v: Value) -> torch.Tensor:
    """The tensor in the dtype the IR says the constant has (bf16 -> f16 and so on)."""
    target = v.dtype.torch
    if tensor.dtype != target:
        if target == torch.float16 and tensor.is_floating_point() and tensor.numel():
            peak = float(tensor.abs().max())
            if peak > F16_MAX and peak != float("inf"):
                warnings.warn(f"constant {v.const.label!r} has values up to {peak:.3g}, beyond f16's range "
                              f"({F16_MAX}); they become inf. Export with f32 (bf16_as=f32 / --dtype f32) "
                              "to keep them.", stacklevel=2)
        tensor = tensor.to(target)
    return tensor


def write_plain(f: BinaryIO, tensor: torch.Tensor, v: Value) -> None:
    checked_shape(tensor, v)
    write_dat(f, to_ir_dtype(tensor, v).detach().contiguous().cpu().numpy())


def static_shape(v: Value) -> tuple[int, ...]:
    dims = tuple(v.shape)
    if not all(isinstance(d, int) for d in dims):
        raise ValueError(f"constant {v.const.label!r} has a symbolic shape {list(dims)}")
    return dims


def checked_shape(tensor: torch.Tensor, v: Value) -> tuple[int, ...]:
    """The constant's shape, which the data read for it must have (graph.nnef declares it)."""
    shape = static_shape(v)
    if tuple(tensor.shape) != shape:
        raise ValueError(f"constant {v.const.label!r}: data has shape {list(tensor.shape)}, IR says {list(shape)}")
    return shape


def write_q4_0(f: BinaryIO, tensor: torch.Tensor, v: Value, percentile: float = 1.0) -> dict:
    """Quantize `tensor` (any float dtype, taken in f32) to a Q4_0 .dat; returns {"rel_error": ...}.

    The error is measured row chunk by row chunk, so the extra memory stays a few MiB beyond the
    tensor and its 4.5-bit payload.
    """
    shape = checked_shape(tensor, v)
    w = tensor.detach().cpu().reshape(shape[0], -1)
    try:
        payload = quantize_q4_0(w, percentile=percentile)
    except ValueError as e:
        raise ValueError(f"constant {v.const.label!r}: {e}") from None
    err = RelativeError()
    step = max(1, CHUNK_BYTES // (4 * w.shape[1]))
    for r0 in range(0, w.shape[0], step):
        rows = w[r0:r0 + step].to(torch.float32).numpy()
        err.add(rows, dequantize_q4_0(payload[r0:r0 + step], rows.shape))
    write_q4_0_dat(f, shape, payload)
    return {"rel_error": err.value}


register_encoding("plain", write_plain, bits_per_weight=0)
register_encoding("q4_0", write_q4_0, bits_per_weight=4.5)
# Q4_0 blocks scaled by the 0.99 quantile of |w| (torch_to_nnef's min_max_q4_0_with_embeddings_99)
register_encoding("q4_0_p99", functools.partial(write_q4_0, percentile=0.99), bits_per_weight=4.5)
