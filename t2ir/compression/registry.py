"""How constants are stored on disk: "plain" tensors, and packed encodings such as Q4_0.

An encoding turns one loaded weight into the bytes of its .dat file. The emitter looks the
constant's `encoding` up here, so a new storage format is one `register_encoding` call. A writer
may return a dict of what it measured (e.g. {"rel_error": 0.1}) for the quantization report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional

import torch

from t2ir.compression.encodings import write_q4_0
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
    from t2ir.emitters.dat import write_dat

    write_dat(f, to_ir_dtype(tensor, v).detach().contiguous().cpu().numpy())


register_encoding("plain", write_plain, bits_per_weight=0)

register_encoding("q4_0", write_q4_0, bits_per_weight=4.5)
