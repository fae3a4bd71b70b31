"""Element types, symbolic dimensions and tensor types of the t2ir IR."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Union

import sympy


class DType(str, enum.Enum):
    """Element types the IR knows; the value is the spelling in IR text and in tract."""

    f64 = "f64"
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    i64 = "i64"
    i32 = "i32"
    i16 = "i16"
    i8 = "i8"
    u8 = "u8"
    bool = "bool"

    def __str__(self) -> str:
        return self.value

    @property
    def is_float(self) -> bool:
        return self in (DType.f64, DType.f32, DType.f16, DType.bf16)

    @property
    def is_int(self) -> bool:
        return self in (DType.i64, DType.i32, DType.i16, DType.i8, DType.u8)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def numpy(self):
        """The numpy dtype (bf16 has none: callers convert first)."""
        import numpy as np

        if self is DType.bf16:
            raise TypeError("bf16 has no numpy dtype; convert to f16 or f32 first")
        return np.dtype(_NUMPY[self])

    @property
    def torch(self):
        import torch

        return getattr(torch, _TORCH[self])

    @staticmethod
    def from_torch(dtype) -> "DType":
        name = str(dtype).removeprefix("torch.")
        for d, tname in _TORCH.items():
            if tname == name:
                return d
        raise UnsupportedDType(name)

    @staticmethod
    def from_numpy(dtype) -> "DType":
        import numpy as np

        name = np.dtype(dtype).name
        for d, nname in _NUMPY.items():
            if nname == name:
                return d
        raise UnsupportedDType(name)


class UnsupportedDType(TypeError):
    """A torch/numpy element type with no IR counterpart (complex, quantized, ...)."""

    def __init__(self, name: str):
        super().__init__(
            f"element type {name!r} is not supported by t2ir/tract "
            f"(supported: {', '.join(d.value for d in DType)})"
        )
        self.dtype_name = name


_ITEMSIZE = {
    DType.f64: 8, DType.f32: 4, DType.f16: 2, DType.bf16: 2, DType.i64: 8, DType.i32: 4,
    DType.i16: 2, DType.i8: 1, DType.u8: 1, DType.bool: 1,
}
_NUMPY = {
    DType.f64: "float64", DType.f32: "float32", DType.f16: "float16", DType.i64: "int64",
    DType.i32: "int32", DType.i16: "int16", DType.i8: "int8", DType.u8: "uint8", DType.bool: "bool",
}
_TORCH = {
    DType.f64: "float64", DType.f32: "float32", DType.f16: "float16", DType.bf16: "bfloat16",
    DType.i64: "int64", DType.i32: "int32", DType.i16: "int16", DType.i8: "int8", DType.u8: "uint8",
    DType.bool: "bool",
}

# A dimension is a plain int or a sympy expression over named symbols (S, P, batch, S + P, ...).
Dim = Union[int, sympy.Expr]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOLS: dict[str, sympy.Symbol] = {}


def symbol(name: str) -> sympy.Symbol:
    """The one sympy symbol for a dimension name (integer, positive: sizes are never negative)."""
    if not _IDENT.fullmatch(name):
        raise ValueError(f"invalid symbol name {name!r}: use letters, digits and '_'")
    if name not in _SYMBOLS:
        _SYMBOLS[name] = sympy.Symbol(name, integer=True, nonnegative=True)
    return _SYMBOLS[name]


def simplify_dim(d: Dim) -> Dim:
    """Normalise a dim: sympy integers become ints so that `3` and `Integer(3)` compare equal."""
    if isinstance(d, bool):
        raise TypeError("a dimension cannot be a bool")
    if isinstance(d, int):
        return d
    d = sympy.expand(d)
    if d.is_Integer:
        return int(d)
    return d


def format_dim(d: Dim) -> str:
    d = simplify_dim(d)
    if isinstance(d, int):
        return str(d)
    return sympy.sstr(d).replace("floor(", "floor(")


_DIM_FUNCS = {"floor": sympy.floor, "ceiling": sympy.ceiling, "Max": sympy.Max, "Min": sympy.Min, "Mod": sympy.Mod}


def parse_dim(text: str) -> Dim:
    """Read a dim written by `format_dim` (an int or an expression of symbols)."""
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    names = {n: symbol(n) for n in _IDENT.findall(text) if n not in _DIM_FUNCS}
    expr = sympy.parse_expr(text, local_dict={**names, **_DIM_FUNCS}, evaluate=True)
    return simplify_dim(expr)


def dims_equal(a: Dim, b: Dim) -> bool:
    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0


def is_static(shape: tuple[Dim, ...]) -> bool:
    return all(isinstance(d, int) for d in shape)


@dataclass(frozen=True)
class TensorType:
    """dtype + shape of a value; a rank-0 shape is a scalar."""

    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self):
        object.__setattr__(self, "dtype", DType(self.dtype))
        object.__setattr__(self, "shape", tuple(simplify_dim(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(dtype, self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def numel(self) -> Dim:
        n: Dim = 1
        for d in self.shape:
            n = n * d
        return simplify_dim(n)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(format_dim(d) for d in self.shape)}]"


def free_symbols(shape: tuple[Dim, ...]) -> set[str]:
    out: set[str] = set()
    for d in shape:
        if not isinstance(d, int):
            out |= {s.name for s in d.free_symbols}
    return out
