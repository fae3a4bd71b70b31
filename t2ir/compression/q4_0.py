"""Q4_0 block quantization, byte-identical with GGML / gguf-py (tract's 0x3040 item type).

A Q4_0 block covers 32 consecutive values of the LAST axis and takes 18 bytes: the scale ``d``
as a little-endian f16, then 16 bytes whose byte ``j`` holds value ``j`` in its low nibble and
value ``j + 16`` in its high nibble. ``d`` is the block's value of largest magnitude (the first
one on ties, sign kept) divided by -8, and each value is stored as
``clamp(trunc(v * (1/d) + 8.5), 0, 15)``, every step rounded to float32 as gguf-py does.

Example::

    >>> w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    >>> buf = quantize_q4_0(w)
    >>> buf.shape, float(np.abs(dequantize_q4_0(buf, w.shape) - w).max()) < 0.07
    ((1, 36), True)
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 32
BYTES_PER_BLOCK = 18

# f32 input handled per step. Small enough that the scratch buffers stay in cache and the extra
# memory is ~1.5x this whatever the matrix size; large enough to amortise per-call overhead
# (2-4 MiB measured fastest on a 1 MiB-L2 / 32 MiB-L3 CPU, see bench/bench_q4_0.py).
CHUNK_BYTES = 4 << 20

# One GGML ``block_q4_0``. The nibbles are one opaque 16-byte field so that a whole column of
# them is stored with a single strided copy instead of a Python-visible loop over rows.
BLOCK_RECORD = np.dtype([("d", "<f2"), ("qs", "V16")])
assert BLOCK_RECORD.itemsize == BYTES_PER_BLOCK

_FOUR = np.uint64(4)

ArrayLike = np.ndarray | torch.Tensor


class _NonFiniteError(ValueError):
    """A block holds inf or nan; re-raised with the tensor's shape by the public entry point."""


def packed_nbytes(shape: Sequence[int]) -> int:
    """Size of the Q4_0 payload of a float tensor of ``shape`` (blocks along the last axis)."""
    shape = _check_shape(shape)
    return math.prod(shape) // BLOCK * BYTES_PER_BLOCK


def check_payload_size(shape: Sequence[int], nbytes: int) -> None:
    """Refuse a buffer that cannot be the Q4_0 form of ``shape`` (truncated or foreign)."""
    expected = packed_nbytes(shape)
    if nbytes != expected:
        raise ValueError(
            f"Q4_0 payload for shape {list(shape)} must be {expected} bytes, got {nbytes}"
        )


def quantize_q4_0(w: ArrayLike, *, percentile: float = 1.0, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """Quantize ``w`` (numpy or torch, any float dtype) to GGML Q4_0 bytes.

    Returns a uint8 array of shape ``(*w.shape[:-1], w.shape[-1] // 32 * 18)``, the same layout
    as ``gguf.quants.quantize(w, GGMLQuantizationType.Q4_0)`` (bit-identical with the default
    ``percentile=1``). With ``percentile < 1`` each block's scale is that quantile of its |values|
    over -8 instead (torch_to_nnef's `_99` calibration): outliers are clipped to the range, the
    rest get a finer grid. Rows are processed ``chunk_bytes`` of f32 at a time, so extra memory
    stays bounded for large matrices.
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}")
    shape = _check_shape(tuple(w.shape))
    k = shape[-1]
    out_shape = (*shape[:-1], k // BLOCK * BYTES_PER_BLOCK)
    if math.prod(shape) == 0:
        return np.empty(out_shape, dtype=np.uint8)
    rows = w.reshape(-1, k)
    out = np.empty(rows.shape[0] * (k // BLOCK), dtype=BLOCK_RECORD)
    step = max(1, chunk_bytes // (4 * k))
    scratch = _Scratch.for_blocks(min(step, rows.shape[0]) * k // BLOCK)
    with _single_threaded_torch():
        for r0 in range(0, rows.shape[0], step):
            blocks = _f32_rows(rows, r0, r0 + step).reshape(-1, BLOCK)
            b0 = r0 * (k // BLOCK)
            try:
                _quantize_blocks(blocks, out[b0 : b0 + blocks.shape[0]], scratch, percentile)
            except _NonFiniteError as err:
                msg = f"cannot quantize tensor of shape {list(shape)} to Q4_0: {err}"
                raise ValueError(msg) from None
    return out.view(np.uint8).reshape(out_shape)


def dequantize_q4_0(buf: bytes | memoryview | np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Expand Q4_0 bytes back to a float32 array of ``shape`` (same values as gguf-py)."""
    shape = _check_shape(shape)
    raw = np.frombuffer(buf, dtype=np.uint8)
    check_payload_size(shape, raw.size)
    records = raw.reshape(-1, BYTES_PER_BLOCK)
    out = np.empty((records.shape[0], BLOCK), dtype=np.float32)
    step = max(1, CHUNK_BYTES // (4 * BLOCK))
    for b0 in range(0, records.shape[0], step):
        _dequantize_blocks(records[b0 : b0 + step], out[b0 : b0 + step])
    return out.reshape(shape)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Blocks run along the last axis, so it must exist and be a whole number of blocks."""
    shape = tuple(int(s) for s in shape)
    if not shape or shape[-1] % BLOCK:
        raise ValueError(
            f"Q4_0 needs the last dimension to be a multiple of {BLOCK}; got shape {list(shape)}"
        )
    return shape


@dataclass
class _Scratch:
    """Buffers reused by every chunk, so the hot loop allocates nothing large."""

    x: np.ndarray  # (blocks, 32) float32: v * (1/d) + 8.5
    q: np.ndarray  # (blocks, 32) uint8: one nibble per byte, before packing
    t: np.ndarray  # (blocks * 4,) uint64: packed nibbles

    @classmethod
    def for_blocks(cls, n: int) -> _Scratch:
        return cls(
            x=np.empty((n, BLOCK), dtype=np.float32),
            q=np.empty((n, BLOCK), dtype=np.uint8),
            t=np.empty(n * BLOCK // 8, dtype=np.uint64),
        )


@contextlib.contextmanager
def _single_threaded_torch() -> Iterator[None]:
    """Run torch's kernels on one thread: on a few-MiB chunk interleaved with numpy work, waking
    an OpenMP team per call costs more than it saves, and stalls badly on a busy shared CPU."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _f32_rows(rows: ArrayLike, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` as a C-contiguous float32 numpy array; no copy when already one."""
    if isinstance(rows, torch.Tensor):
        return rows[r0:r1].detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    return np.ascontiguousarray(rows[r0:r1], dtype=np.float32)


def _torch_view(a: np.ndarray) -> torch.Tensor:
    """Zero-copy torch view of ``a``. torch warns on read-only arrays; we only read those."""
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def _quantize_blocks(b: np.ndarray, out: np.ndarray, scratch: _Scratch, percentile: float = 1.0) -> None:
    """Quantize ``b`` (n, 32) float32 into ``out`` (n,) BLOCK_RECORD."""
    n = b.shape[0]
    d = _block_scales(b) if percentile == 1.0 else _quantile_scales(b, percentile)
    inv, overflow = _inverse_scales(d)
    x, q = scratch.x[:n], scratch.q[:n]
    tx = torch.from_numpy(x)
    torch.mul(_torch_view(b), torch.from_numpy(inv)[:, None], out=tx)
    tx.add_(8.5).clamp_(min=0.0, max=15.0)
    # x is finite and in [0, 15] (in [0.49, 15] with max scales): the float -> uint8 cast
    # truncates exactly like gguf's np.trunc + astype, and clamping before truncating equals
    # gguf's clip after it.
    np.copyto(q, x, casting="unsafe")
    if overflow.any():
        q[overflow] = 0
    out["d"] = _to_f16(d)
    out["qs"] = _pack_nibbles(q, scratch.t[: n * BLOCK // 8])


def _block_scales(b: np.ndarray) -> np.ndarray:
    """d = (value of largest magnitude, first one on ties) / -8, in float32 like gguf."""
    tb = _torch_view(b)
    hi = torch.amax(tb, dim=1).numpy()
    lo = torch.amin(tb, dim=1).numpy()
    neg_lo = -lo
    m = np.where(hi > neg_lo, hi, lo)
    # +a and -a both present (or an all-zero block, where the sign of 0 matters for the f16
    # bytes): only the position decides, so fall back to argmax like gguf, on these few blocks.
    ties = np.flatnonzero(hi == neg_lo)
    if ties.size:
        tied = b[ties]
        m[ties] = tied[np.arange(ties.size), np.abs(tied).argmax(axis=1)]
    d = m / np.float32(-8)
    if not np.isfinite(d).all():
        raise _NonFiniteError("it contains inf or nan values")
    return d


def _quantile_scales(b: np.ndarray, percentile: float) -> np.ndarray:
    """d = the `percentile` quantile of |block| (linear interpolation, like torch.quantile) / -8."""
    q = torch.quantile(_torch_view(b).abs(), percentile, dim=1).numpy()
    d = (q / np.float32(-8)).astype(np.float32)
    if not np.isfinite(d).all():
        raise _NonFiniteError("it contains inf or nan values")
    return d


def _inverse_scales(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1/d (0 where d == 0), plus a mask of blocks where 1/d overflows float32.

    Those blocks have |d| < 2**-128, so their f16 scale is 0 and the nibbles carry no
    information; gguf's float math turns them into inf/nan, which x86 casts to nibble 0. We
    produce that 0 explicitly instead of relying on an undefined float -> int cast.
    """
    inv = np.zeros_like(d)
    with np.errstate(over="ignore"):
        np.divide(np.float32(1), d, out=inv, where=d != 0)
    overflow = np.isinf(inv)
    inv[overflow] = 0
    return inv, overflow


def _pack_nibbles(q: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pack ``q`` (n, 32) uint8 nibbles as value j | value j+16 << 4, one V16 per block.

    Works on 64-bit words, 8 nibbles at a time in contiguous loops: a block's 32 bytes are the
    words lo0 lo1 hi0 hi1, and shifting a word by 4 never carries across bytes since each is <= 15.
    Word 4i+k of ``t`` becomes lo_k | hi_k << 4 (k = 0, 1); words 4i+2, 4i+3 are scratch.
    """
    w = q.reshape(-1).view(np.uint64)
    np.left_shift(w[2:], _FOUR, out=t[:-2])
    np.bitwise_or(t[:-2], w[:-2], out=t[:-2])
    packed = t.view(np.uint8).reshape(-1, BLOCK)[:, : BLOCK // 2]
    return packed.view("V16")[:, 0]


def _to_f16(d: np.ndarray) -> np.ndarray:
    """float32 -> float16 with IEEE round-to-nearest-even, as numpy's astype does, only faster."""
    return torch.from_numpy(d).to(torch.float16).numpy()


def _dequantize_blocks(records: np.ndarray, out: np.ndarray) -> None:
    """Expand ``records`` (n, 18) uint8 into ``out`` (n, 32) float32 as (nibble - 8) * d."""
    d = records[:, :2].copy().view("<f2").astype(np.float32)
    qs = records[:, 2:]
    np.bitwise_and(qs, np.uint8(0x0F), out=out[:, : BLOCK // 2], casting="unsafe")
    np.right_shift(qs, np.uint8(4), out=out[:, BLOCK // 2 :], casting="unsafe")
    out -= np.float32(8)
    with np.errstate(invalid="ignore"):  # an inf scale times nibble 8 is NaN, as in GGML
        out *= d  # (nibble - 8) * d is exact in float32, so the order of operations cannot matter


def q4_0_reference(w: torch.Tensor, percentile: float = 1.0) -> torch.Tensor:
    """dequantize(quantize(w)) in w's dtype: the weight tract computes with once `w` is Q4_0."""
    rows = w.detach().cpu().reshape(w.shape[0], -1)
    back = dequantize_q4_0(quantize_q4_0(rows, percentile=percentile), tuple(rows.shape))
    return torch.from_numpy(back).reshape(w.shape).to(w.dtype)
