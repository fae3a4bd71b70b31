"""Property tests of the Q4_0 codec against gguf-py, on random tensors that mix ordinary values
with the awkward ones: zeros, whole all-zero blocks, subnormals, huge values, NaN and inf.

A tensor with only finite values packs to exactly gguf's bytes; one with NaN or inf anywhere is
refused with an error naming its shape (gguf would pack garbage). Any 18-byte blocks unpack to
gguf's values, NaN and inf scales included.
"""

from __future__ import annotations

import gguf
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import pytest

from t2ir.compression.q4_0 import BLOCK, BYTES_PER_BLOCK, dequantize_q4_0, quantize_q4_0
from tests.fuzzing import examples

Q4_0 = gguf.GGMLQuantizationType.Q4_0

# Values by kind: a block drawn from one kind at a time makes ties, tiny scales and clamping
# common instead of one in a million.
TINY = float(np.finfo(np.float32).smallest_normal)
HUGE = float(np.finfo(np.float32).max)
KINDS = {
    "normal": st.floats(-4.0, 4.0, width=32),
    "integers": st.integers(-8, 8).map(float),
    "subnormal": st.floats(-TINY, TINY, width=32, allow_subnormal=True),
    "huge": st.floats(-HUGE, HUGE, width=32),
    "zero": st.sampled_from([0.0, -0.0]),
}
NON_FINITE = st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def tensors(draw) -> np.ndarray:
    """(rows, blocks * 32) in f32 or f16: each block from one kind, some all zero, maybe a
    NaN or inf dropped in."""
    rows, blocks = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    w = np.empty((rows, blocks * BLOCK), np.float32)
    for r in range(rows):
        for b in range(blocks):
            kind = draw(st.sampled_from(sorted(KINDS)))
            w[r, b * BLOCK:(b + 1) * BLOCK] = draw(hnp.arrays(np.float32, BLOCK, elements=KINDS[kind]))
    if draw(st.booleans()) and draw(st.integers(0, 3)) == 0:
        w.flat[draw(st.integers(0, w.size - 1))] = draw(NON_FINITE)
    with np.errstate(over="ignore"):
        return w.astype(dtype)


def gguf_bytes(w: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):  # gguf-py's float math warns on subnormal scales
        return gguf.quants.quantize(w, Q4_0)


@examples(200)
@given(w=tensors())
def test_packing_matches_gguf_or_refuses_non_finite(w: np.ndarray, property_cases) -> None:
    property_cases["q4_0: pack random tensors vs gguf"] += 1
    if not np.isfinite(w).all():
        with pytest.raises(ValueError, match=rf"shape \[{w.shape[0]}, {w.shape[1]}\].*inf or nan"):
            quantize_q4_0(w)
        return
    ours, ref = quantize_q4_0(w), gguf_bytes(w)
    assert ours.shape == ref.shape
    differ = (ours.reshape(-1, BYTES_PER_BLOCK) != ref.reshape(-1, BYTES_PER_BLOCK)).any(axis=1)
    assert not differ.any(), f"blocks {np.flatnonzero(differ)[:5]} differ from gguf"


@examples(150)
@given(raw=st.binary(min_size=BYTES_PER_BLOCK, max_size=8 * BYTES_PER_BLOCK).filter(
    lambda b: len(b) % BYTES_PER_BLOCK == 0))
def test_unpacking_any_bytes_matches_gguf(raw: bytes, property_cases) -> None:
    property_cases["q4_0: unpack random bytes vs gguf"] += 1
    n = len(raw) // BYTES_PER_BLOCK
    ours = dequantize_q4_0(raw, (n * BLOCK,))
    with np.errstate(all="ignore"):
        ref = gguf.quants.dequantize(np.frombuffer(raw, np.uint8), Q4_0).reshape(-1)
    np.testing.assert_array_equal(ours, ref)  # NaN == NaN here, and -0.0 == 0.0
