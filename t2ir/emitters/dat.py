"""Read and write tract's ``.dat`` tensor files: a 128-byte header, then little-endian data.

Header layout (all little-endian)::

    0  magic 4E EF | 2 version 1.0 | 4 payload bytes u32 | 8 rank u32 | 12 dims 8 x u32
    44 bits per item u32 | 48 item type u16 | 50 item-type vendor u16 | 52 zeros (76 bytes)

Plain numpy dtypes use the Khronos codes (vendor 0). Q4_0 weights use tract's own code
(vendor "TR" = 0x5452, item type 0x3040, bits 0xFFFFFFFF) and a GGML ``block_q4_0`` payload.

Example::

    write_dat(folder / "w.dat", np.ones((2, 3), np.float32))
    read_dat_header(folder / "w.dat").shape            # (2, 3)
    write_q4_0_dat(folder / "q.dat", w.shape, quantize_q4_0(w))
    read_q4_0_dat(folder / "q.dat").dequantize()       # float32, w.shape
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import BinaryIO

import numpy as np

from t2ir.compression.q4_0 import check_payload_size, dequantize_q4_0

MAGIC = b"\x4e\xef"
VERSION = (1, 0)
HEADER_SIZE = 128
MAX_RANK = 8
VENDOR_KHRONOS = 0
VENDOR_TRACT = 0x5452  # "TR"; on disk the bytes 52 54
BITS_NOT_APPLICABLE = 0xFFFFFFFF
U32_MAX = 0xFFFFFFFF

# magic, major, minor, payload bytes, rank, 8 dims, bits, item type, vendor, 32 + 44 zero bytes
_HEADER = struct.Struct("<2sBBII8IIHH32s44s")
assert _HEADER.size == HEADER_SIZE

# Payloads are written this many bytes at a time when they must be converted first, so a
# non-contiguous or big-endian array never needs a second full-size copy.
WRITE_CHUNK_BYTES = 16 << 20

PathOrFile = str | os.PathLike[str] | BinaryIO


class ItemType(IntEnum):
    """Item-type codes: Khronos NNEF codes (vendor 0) and the tract-vendor codes we use."""

    FLOAT = 0
    UINT = 1
    QUANTIZED_UINT = 2
    QUANTIZED_INT = 3
    INT = 4
    BOOL = 5
    TRACT_Q4_0 = 0x3040


@dataclass(frozen=True)
class DatKind:
    """How one element type is spelled in the header."""

    item_type: int
    bits: int
    vendor: int = VENDOR_KHRONOS


def _plain(item_type: ItemType, *dtypes: type) -> dict[np.dtype, DatKind]:
    return {np.dtype(t): DatKind(int(item_type), np.dtype(t).itemsize * 8) for t in dtypes}


# bool is stored one byte per value (bits = 8), which is numpy's own layout.
DAT_KINDS: dict[np.dtype, DatKind] = {
    **_plain(ItemType.FLOAT, np.float16, np.float32, np.float64),
    **_plain(ItemType.INT, np.int8, np.int16, np.int32, np.int64),
    **_plain(ItemType.UINT, np.uint8, np.uint16, np.uint32, np.uint64),
    **_plain(ItemType.BOOL, np.bool_),
}
Q4_0_KIND = DatKind(int(ItemType.TRACT_Q4_0), BITS_NOT_APPLICABLE, VENDOR_TRACT)

_SIGNED = (ItemType.INT, ItemType.QUANTIZED_INT)
_UNSIGNED = (ItemType.UINT, ItemType.QUANTIZED_UINT)


def dat_kind(dtype: np.dtype | type) -> DatKind:
    """Header codes for a numpy dtype; bf16 and other unsupported types get a clear error."""
    dtype = np.dtype(dtype)
    kind = DAT_KINDS.get(dtype.newbyteorder("="))
    if kind is None:
        supported = ", ".join(sorted(d.name for d in DAT_KINDS))
        raise ValueError(f"dtype {dtype} has no .dat item type; supported: {supported}")
    return kind


@dataclass(frozen=True)
class DatHeader:
    """The decoded header of a .dat file."""

    shape: tuple[int, ...]
    item_type: int
    vendor: int
    bits: int
    nbytes: int

    @property
    def kind(self) -> DatKind:
        return DatKind(self.item_type, self.bits, self.vendor)

    @property
    def is_q4_0(self) -> bool:
        return self.kind == Q4_0_KIND

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of a plain tensor (Q4_0 and other tract-vendor types raise)."""
        return _dtype_of(self)


@dataclass(frozen=True)
class Q4_0Dat:
    """A Q4_0 tensor as stored: its header and the raw GGML block bytes."""

    header: DatHeader
    payload: bytes

    def dequantize(self) -> np.ndarray:
        return dequantize_q4_0(self.payload, self.header.shape)


def dat_header(
    shape: Sequence[int], nbytes: int, item_type: int, bits: int, vendor: int = VENDOR_KHRONOS
) -> bytes:
    """The 128 header bytes for a tensor of ``shape`` with an ``nbytes`` payload."""
    shape = tuple(int(s) for s in shape)
    if len(shape) > MAX_RANK:
        raise ValueError(f".dat tensors have rank <= {MAX_RANK}; got shape {list(shape)}")
    if any(not 0 <= s <= U32_MAX for s in shape):
        raise ValueError(f".dat dimensions must fit in a u32; got shape {list(shape)}")
    if not 0 <= nbytes <= U32_MAX:
        raise ValueError(
            f".dat payloads are limited to 4 GiB (u32 length); "
            f"shape {list(shape)} needs {nbytes} bytes"
        )
    dims = shape + (0,) * (MAX_RANK - len(shape))
    return _HEADER.pack(
        MAGIC, *VERSION, nbytes, len(shape), *dims, bits, item_type, vendor, bytes(32), bytes(44)
    )


def parse_dat_header(raw: bytes) -> DatHeader:
    """Decode and sanity-check a 128-byte header (the checks tract itself makes)."""
    if len(raw) < HEADER_SIZE:
        raise ValueError(f".dat header is {HEADER_SIZE} bytes; got {len(raw)}")
    magic, major, _minor, nbytes, rank, *rest = _HEADER.unpack(raw[:HEADER_SIZE])
    dims, (bits, item_type, vendor) = rest[:MAX_RANK], rest[MAX_RANK : MAX_RANK + 3]
    if magic != MAGIC:
        raise ValueError(f"not a .dat file: magic {magic.hex()} instead of {MAGIC.hex()}")
    if major != VERSION[0]:
        raise ValueError(f"unsupported .dat version {major}")
    if rank > MAX_RANK:
        raise ValueError(f".dat rank {rank} exceeds {MAX_RANK}")
    if vendor not in (VENDOR_KHRONOS, VENDOR_TRACT):
        raise ValueError(f"unknown .dat item-type vendor {vendor:#06x}")
    return DatHeader(tuple(dims[:rank]), item_type, vendor, bits, nbytes)


def read_dat_header(path: str | os.PathLike[str]) -> DatHeader:
    """The header of the .dat file at ``path`` (reads only its first 128 bytes)."""
    with open(path, "rb") as f:
        return parse_dat_header(f.read(HEADER_SIZE))


def write_dat(target: PathOrFile, array: np.ndarray) -> None:
    """Write ``array`` as a plain .dat tensor to a path or a binary file object.

    The payload is streamed: a little-endian C-contiguous array is written straight from its
    memory; anything else is converted ``WRITE_CHUNK_BYTES`` at a time.
    """
    array = np.asarray(array)
    kind = dat_kind(array.dtype)
    header = dat_header(array.shape, array.nbytes, kind.item_type, kind.bits, kind.vendor)
    with _open_for_write(target) as f:
        f.write(header)
        for piece in _little_endian_pieces(array):
            f.write(piece)


def write_q4_0_dat(
    target: PathOrFile, shape: Sequence[int], payload: bytes | memoryview | np.ndarray
) -> None:
    """Write Q4_0 block bytes (e.g. from ``quantize_q4_0`` or a GGUF file) for a float ``shape``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"tract reads Q4_0 tensors of rank >= 2; got shape {list(shape)}")
    data = memoryview(payload).cast("B")
    check_payload_size(shape, data.nbytes)
    header = dat_header(shape, data.nbytes, Q4_0_KIND.item_type, Q4_0_KIND.bits, Q4_0_KIND.vendor)
    with _open_for_write(target) as f:
        f.write(header)
        f.write(data)


def read_dat(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a plain .dat tensor as a native-endian numpy array (see ``read_q4_0_dat`` for Q4_0)."""
    header = read_dat_header(path)
    if header.is_q4_0:
        raise ValueError(f"{path} holds a Q4_0 tensor; use read_q4_0_dat(path).dequantize()")
    if header.item_type == ItemType.BOOL and header.bits == 1:
        return _read_packed_bools(path, header)
    dtype = header.dtype
    count = math.prod(header.shape)
    if count * dtype.itemsize != header.nbytes:
        raise ValueError(
            f"{path}: shape {list(header.shape)} of {dtype} needs {count * dtype.itemsize} bytes, "
            f"header says {header.nbytes}"
        )
    stored = np.uint8 if dtype == np.bool_ else dtype.newbyteorder("<")
    array = np.fromfile(path, dtype=stored, count=count, offset=HEADER_SIZE)
    if array.size != count:
        raise ValueError(f"{path}: payload holds {array.size} items, header says {count}")
    if dtype == np.bool_:
        array = array != 0  # any nonzero byte is true
    return array.astype(dtype, copy=False).reshape(header.shape)


def read_q4_0_dat(path: str | os.PathLike[str]) -> Q4_0Dat:
    """Load a Q4_0 .dat tensor: header and raw block bytes (``.dequantize()`` for floats)."""
    header = read_dat_header(path)
    if not header.is_q4_0:
        raise ValueError(f"{path} is not a Q4_0 tensor (item type {header.item_type:#x})")
    check_payload_size(header.shape, header.nbytes)
    return Q4_0Dat(header, _read_payload(path, header.nbytes))


def _dtype_of(header: DatHeader) -> np.dtype:
    """Map (item type, bits) back to numpy, accepting every Khronos alias tract accepts."""
    if header.vendor == VENDOR_KHRONOS and header.bits in (8, 16, 32, 64):
        size = header.bits // 8
        if header.item_type == ItemType.FLOAT and size >= 2:
            return np.dtype(f"f{size}")
        if header.item_type in _SIGNED:
            return np.dtype(f"i{size}")
        if header.item_type in _UNSIGNED:
            return np.dtype(f"u{size}")
        if header.item_type == ItemType.BOOL and size == 1:
            return np.dtype(np.bool_)
    raise ValueError(
        f"no numpy dtype for .dat item type {header.item_type:#x} "
        f"(vendor {header.vendor:#x}, {header.bits} bits)"
    )


@contextlib.contextmanager
def _open_for_write(target: PathOrFile) -> Iterator[BinaryIO]:
    """Use a caller's file object as is (left open), or create the file and its folders."""
    if hasattr(target, "write"):
        yield target  # type: ignore[misc]
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        yield f


def _little_endian_pieces(array: np.ndarray) -> Iterator[memoryview]:
    """The array's bytes in C order and little-endian, without a full extra copy."""
    le = array.dtype.newbyteorder("<") if array.dtype.byteorder != "|" else array.dtype
    if array.flags.c_contiguous and array.dtype == le:
        yield memoryview(array.reshape(-1).view(np.uint8))
        return
    if array.ndim == 0:
        yield memoryview(np.ascontiguousarray(array, dtype=le).reshape(-1).view(np.uint8))
        return
    row_bytes = array.itemsize * math.prod(array.shape[1:])
    step = max(1, WRITE_CHUNK_BYTES // max(1, row_bytes))
    for start in range(0, array.shape[0], step):
        piece = np.ascontiguousarray(array[start : start + step], dtype=le)
        yield memoryview(piece.reshape(-1).view(np.uint8))


def _read_payload(path: str | os.PathLike[str], nbytes: int) -> bytes:
    """The ``nbytes`` after the header; a short file is an error, not silent garbage."""
    with open(path, "rb") as f:
        f.seek(HEADER_SIZE)
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise ValueError(f"{path}: payload is {len(data)} bytes, header says {nbytes}")
    return data


def _read_packed_bools(path: str | os.PathLike[str], header: DatHeader) -> np.ndarray:
    """bits = 1 booleans: packed 8 per byte, most significant bit first."""
    count = math.prod(header.shape)
    if header.nbytes != (count + 7) // 8:
        raise ValueError(f"{path}: {count} packed bools need {(count + 7) // 8} bytes")
    bits = np.unpackbits(np.frombuffer(_read_payload(path, header.nbytes), np.uint8), count=count)
    return bits.astype(np.bool_).reshape(header.shape)
