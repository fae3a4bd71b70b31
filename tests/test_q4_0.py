"""Q4_0 codec and .dat files: bytes identical to gguf-py, files loaded by the real tract engine."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import tract
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from t2ir.compression import q4_0
from t2ir.compression.q4_0 import (
    BLOCK,
    BYTES_PER_BLOCK,
    dequantize_q4_0,
    packed_nbytes,
    quantize_q4_0,
)
from t2ir.emitters import dat
from t2ir.emitters.dat import (
    DAT_KINDS,
    HEADER_SIZE,
    Q4_0_KIND,
    dat_header,
    read_dat,
    read_dat_header,
    read_q4_0_dat,
    write_dat,
    write_q4_0_dat,
)

Q4_0 = gguf.GGMLQuantizationType.Q4_0
RNG = np.random.default_rng(20240607)


def reference(w: np.ndarray) -> np.ndarray:
    """gguf-py's Q4_0 bytes; its float math warns on subnormal scales, which we test on purpose."""
    with np.errstate(all="ignore"):
        return gguf_quantize(w, Q4_0)


def assert_same_bytes(w: np.ndarray, **kwargs: int) -> None:
    ours, ref = quantize_q4_0(w, **kwargs), reference(w)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    differ = ours.reshape(-1, BYTES_PER_BLOCK) != ref.reshape(-1, BYTES_PER_BLOCK)
    bad = np.flatnonzero(differ.any(axis=1))
    assert bad.size == 0, f"{bad.size} blocks differ, first {bad[:5]}"


def blocks_to_rows(*blocks: list[float]) -> np.ndarray:
    """One 32-value row per block: unspecified positions are small filler values."""
    rows = np.tile(np.linspace(-0.01, 0.01, BLOCK, dtype=np.float32), (len(blocks), 1))
    for row, values in zip(rows, blocks):
        row[: len(values)] = values
    return rows


# --- Q4_0 codec -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 32), (8, 64), (33, 96), (4, 3, 64), (7, 4096)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("scale", [1.0, 1e-3, 300.0])
def test_random_matches_gguf(shape: tuple[int, ...], dtype: type, scale: float) -> None:
    w = (RNG.standard_normal(shape) * scale).astype(dtype)
    assert_same_bytes(w)


def test_integer_valued_blocks_exercise_ties_and_exact_halves() -> None:
    # Values in -8..8 make sign ties (+a and -a), repeated maxima and exact .5 roundings common.
    w = RNG.integers(-8, 9, size=(512, 64)).astype(np.float32)
    w[:, 1::7] += 0.5
    assert_same_bytes(w)


@pytest.mark.parametrize("chunk_bytes", [1, 1000, 4096 * 3])
def test_chunking_does_not_change_bytes(chunk_bytes: int) -> None:
    w = RNG.standard_normal((37, 256)).astype(np.float32)
    assert_same_bytes(w, chunk_bytes=chunk_bytes)


SPECIAL_BLOCKS = {
    "zeros": [0.0] * 32,
    "negative zero first": [-0.0] + [0.0] * 31,
    "largest magnitude negative": [0.5, -3.0, 2.9, 1.0],
    "tie, positive first": [2.0, -2.0, 1.0],
    "tie, negative first": [-2.0, 2.0, 1.0],
    "repeated maximum": [4.0, 1.0, 4.0, -3.0],
    "exact halves": [-8.0] + [k + 0.5 for k in range(-8, 8)] + [-7.5, -7.49, 7.49, 7.51],
    "clamped at 15": [8.0, -8.0, -7.5, -7.49, 7.5],
    "large 1e4": [1e4, -9999.0, 5000.0],
    "large 6e4": [-6e4, 6e4 - 1, 1.0],
    "f16-max scale": [-65504.0 * 8, 1.0],
    "f16 overflow scale": [1e6, -1.0],
    "tiny 1e-8": [1e-8, -5e-9, 3e-9],
    "f16-subnormal scale": [1e-6, -3e-7],
    "f32 subnormal": [1e-40, -3e-41, 0.0],
    "smallest scale with finite 1/d": [np.float32(2.0**-124), 1e-39],
    "mixed magnitudes": [1e-8, 1e4, -1e-3, 3.0],
}


@pytest.mark.parametrize("name", sorted(SPECIAL_BLOCKS))
def test_special_blocks_match_gguf(name: str) -> None:
    assert_same_bytes(blocks_to_rows(SPECIAL_BLOCKS[name]))


def test_all_zero_block_bytes() -> None:
    # d = 0 / -8 = -0.0 (f16 bytes 00 80); 1/d is taken as 0 so every nibble is 8.
    assert quantize_q4_0(np.zeros((1, 32), np.float32)).tobytes() == b"\x00\x80" + b"\x88" * 16


def test_torch_inputs_match_numpy() -> None:
    w = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    expected = reference(w.numpy())
    assert np.array_equal(quantize_q4_0(w), expected)
    assert np.array_equal(quantize_q4_0(w.clone().requires_grad_()), expected)
    assert np.array_equal(quantize_q4_0(w.t().contiguous().t()), expected)  # non-contiguous
    bf16 = w.to(torch.bfloat16)
    assert np.array_equal(quantize_q4_0(bf16), reference(bf16.float().numpy()))
    f16 = w.half()
    assert np.array_equal(quantize_q4_0(f16), reference(f16.numpy()))


def test_other_numpy_layouts_match() -> None:
    w = RNG.standard_normal((96, 64))
    assert_same_bytes(w)  # float64, rounded to f32 first like gguf
    t = np.asfortranarray(w.astype(np.float32))
    assert np.array_equal(quantize_q4_0(t), reference(np.ascontiguousarray(t)))
    ro = w.astype(np.float32)
    ro.setflags(write=False)
    assert_same_bytes(ro)


def test_f16_scale_rounding_matches_numpy() -> None:
    # The scale goes through torch's f32 -> f16; it must round exactly like numpy's astype.
    bits = RNG.integers(0, 2**32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    edges = np.float32([65504, 65519.996, 65520, 6e-8, 3e-8, 2.98e-8])
    x = np.concatenate([x[np.isfinite(x)], edges, -edges])
    ours = q4_0._to_f16(x).view(np.uint16)
    with np.errstate(over="ignore"):
        assert np.array_equal(ours, x.astype(np.float16).view(np.uint16))


def test_dequantize_matches_gguf() -> None:
    w = (RNG.standard_normal((24, 128)) * 5).astype(np.float32)
    ref = reference(w)
    ours = dequantize_q4_0(quantize_q4_0(w), w.shape)
    assert ours.dtype == np.float32 and ours.shape == w.shape
    assert np.array_equal(ours, gguf_dequantize(ref, Q4_0))
    assert np.array_equal(dequantize_q4_0(ref.tobytes(), w.shape), ours)


def test_packed_nbytes_and_empty() -> None:
    assert packed_nbytes((8, 64)) == 8 * 2 * 18
    assert packed_nbytes((2, 3, 32)) == 6 * 18
    assert quantize_q4_0(np.zeros((0, 64), np.float32)).shape == (0, 36)


@pytest.mark.parametrize("shape", [(4, 48), (32, 33), ()])
def test_bad_last_dim_names_the_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"multiple of 32.*{list(shape)}".replace("[", r"\[")):
        quantize_q4_0(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        packed_nbytes(shape)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_is_rejected(bad: float) -> None:
    w = np.ones((3, 64), np.float32)
    w[2, 40] = bad
    with pytest.raises(ValueError, match=r"shape \[3, 64\].*inf or nan"):
        quantize_q4_0(w)


def test_dequantize_checks_payload_size() -> None:
    with pytest.raises(ValueError, match="must be 36 bytes"):
        dequantize_q4_0(bytes(35), (1, 64))


# --- .dat files -------------------------------------------------------------------------------


def test_header_layout() -> None:
    raw = dat_header((2, 3), 24, item_type=0, bits=32)
    assert len(raw) == HEADER_SIZE
    assert raw[:4] == b"\x4e\xef\x01\x00"
    assert struct.unpack_from("<II", raw, 4) == (24, 2)
    assert struct.unpack_from("<8I", raw, 12) == (2, 3, 0, 0, 0, 0, 0, 0)
    assert struct.unpack_from("<IHH", raw, 44) == (32, 0, 0)
    assert raw[52:] == bytes(76)
    q = dat_header((8, 64), 288, Q4_0_KIND.item_type, Q4_0_KIND.bits, Q4_0_KIND.vendor)
    assert q[44:52] == b"\xff\xff\xff\xff\x40\x30RT"  # bits n/a, item 0x3040, vendor 0x5452


def test_header_rejects_rank_above_8() -> None:
    with pytest.raises(ValueError, match="rank <= 8"):
        dat_header((1,) * 9, 4, 0, 32)


@pytest.mark.parametrize("dtype", sorted(DAT_KINDS, key=str))
def test_plain_round_trip(tmp_path: Path, dtype: np.dtype) -> None:
    a = (RNG.standard_normal((3, 5, 4)) * 50).astype(dtype)
    big_endian = a.astype(dtype.newbyteorder(">"))
    for i, array in enumerate([a, a.transpose(2, 0, 1), big_endian, a[0, 0, 0]]):
        path = tmp_path / f"t{i}.dat"
        write_dat(path, array)
        back = read_dat(path)
        assert back.dtype == dtype and back.shape == array.shape
        assert np.array_equal(back, array)
        header = read_dat_header(path)
        assert header.kind == DAT_KINDS[dtype] and not header.is_q4_0
        assert path.stat().st_size == HEADER_SIZE + array.nbytes


def test_reads_codes_other_writers_use(tmp_path: Path) -> None:
    # tract's own writer spells signed ints as code 3 ("quantized" signed); bools may be bit-packed.
    ints = np.array([[-1, 2, 3]], dtype="<i4")
    (tmp_path / "i.dat").write_bytes(dat_header(ints.shape, 12, 3, 32) + ints.tobytes())
    assert np.array_equal(read_dat(tmp_path / "i.dat"), ints)
    flags = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1, 1], dtype=bool)
    packed = np.packbits(flags).tobytes()  # most significant bit first
    (tmp_path / "b.dat").write_bytes(dat_header((2, 5), len(packed), 5, 1) + packed)
    assert np.array_equal(read_dat(tmp_path / "b.dat"), flags.reshape(2, 5))


def test_streamed_write_is_plain_little_endian(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dat, "WRITE_CHUNK_BYTES", 64)  # many pieces
    a = np.arange(40 * 6, dtype=">i4").reshape(40, 6).T
    f = io.BytesIO()
    write_dat(f, a)
    assert f.getvalue()[HEADER_SIZE:] == np.ascontiguousarray(a, dtype="<i4").tobytes()


def test_unsupported_dtype_is_named() -> None:
    with pytest.raises(ValueError, match="complex64"):
        write_dat(io.BytesIO(), np.zeros(3, np.complex64))


def test_q4_0_dat_round_trip(tmp_path: Path) -> None:
    w = RNG.standard_normal((8, 64)).astype(np.float32)
    payload = quantize_q4_0(w)
    path = tmp_path / "sub" / "w.dat"
    write_q4_0_dat(path, w.shape, payload)
    raw = path.read_bytes()
    assert raw[50:52] == b"RT"  # vendor 0x5452 ("TR"), little-endian
    assert raw[HEADER_SIZE:] == payload.tobytes()
    header = read_dat_header(path)
    assert header.is_q4_0 and header.shape == (8, 64) and header.nbytes == 288
    stored = read_q4_0_dat(path)
    assert np.array_equal(stored.dequantize(), dequantize_q4_0(payload, w.shape))
    with pytest.raises(ValueError, match="Q4_0"):
        read_dat(path)


def test_q4_0_dat_checks_shape_and_size() -> None:
    with pytest.raises(ValueError, match="must be 288 bytes"):
        write_q4_0_dat(io.BytesIO(), (8, 64), bytes(287))
    with pytest.raises(ValueError, match="rank >= 2"):
        write_q4_0_dat(io.BytesIO(), (64,), bytes(36))


# --- tract loads what we write ----------------------------------------------------------------


def run_tract(folder: Path, graph_body: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    text = "version 1.0;\nextension tract_registry tract_core;\n" + graph_body
    (folder / "graph.nnef").write_text(text)
    model = tract.nnef().load(str(folder)).into_runnable()
    return [t.to_numpy() for t in model.run(inputs)]


def test_tract_q4_0_matmul(tmp_path: Path) -> None:
    w = RNG.standard_normal((8, 64)).astype(np.float32)
    payload = quantize_q4_0(w)
    write_q4_0_dat(tmp_path / "w.dat", w.shape, payload)
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    (y,) = run_tract(
        tmp_path,
        """graph g(x) -> (y) {
  x = external<scalar>(shape = [3, 64]);
  w = variable<scalar>(label = "w", shape = [8, 64]);
  y = matmul(x, w, transposeB = true);
}""",
        [x],
    )
    np.testing.assert_allclose(y, x @ dequantize_q4_0(payload, w.shape).T, atol=1e-4)


def test_tract_q4_0_gather(tmp_path: Path) -> None:
    e = RNG.standard_normal((16, 64)).astype(np.float32)
    payload = quantize_q4_0(e)
    write_q4_0_dat(tmp_path / "emb" / "e.dat", e.shape, payload)
    ids = np.array([3, 0, 15, 3, 7], dtype=np.int64)
    (y,) = run_tract(
        tmp_path,
        """graph g(ids) -> (y) {
  ids = external<integer>(shape = [5]);
  e = variable<scalar>(label = "emb/e", shape = [16, 64]);
  y = tract_core_gather(e, ids, axis = 0, datum_type = "f32");
}""",
        [ids],
    )
    assert np.array_equal(y, dequantize_q4_0(payload, e.shape)[ids])


def test_tract_plain_variables(tmp_path: Path) -> None:
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    b = RNG.standard_normal((2, 3)).astype(np.float16)
    c = RNG.integers(-(2**40), 2**40, size=(2, 3))
    m = np.array([[True, False, True], [False, False, True]])
    for name, value in dict(a=a, b=b, c=c, m=m).items():
        write_dat(tmp_path / f"{name}.dat", value)
    x, i = RNG.standard_normal((2, 3)).astype(np.float32), np.arange(6).reshape(2, 3)
    ya, yb, yc, ym = run_tract(
        tmp_path,
        """graph g(x, i) -> (ya, yb, yc, ym) {
  x = external<scalar>(shape = [2, 3]);
  i = external<integer>(shape = [2, 3]);
  a = variable<scalar>(label = "a", shape = [2, 3]);
  b = variable<scalar>(label = "b", shape = [2, 3]);
  c = variable<integer>(label = "c", shape = [2, 3]);
  m = variable<logical>(label = "m", shape = [2, 3]);
  ya = add(x, a);
  yb = add(b, b);
  yc = add(i, c);
  ym = select(m, x, a);
}""",
        [x, i],
    )
    assert np.array_equal(ya, x + a)
    assert yb.dtype == np.float16 and np.array_equal(yb, b + b)
    assert yc.dtype == np.int64 and np.array_equal(yc, i + c)
    assert np.array_equal(ym, np.where(m, x, a))
