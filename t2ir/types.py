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
    d = sympy.expand(_whole_floors(d))
    if d.is_Integer:
        return int(d)
    return d


def _whole_floors(d):
    """floor(x) and ceiling(x) of an x that cancels to an integer expression are x: a size that
    torch divides and multiplies back (`4*B*(n + 1) / (4*(n + 1))`) is B, not a floor of a
    fraction over symbols, which tract cannot write."""
    if not isinstance(d, sympy.Basic) or not d.has(sympy.floor, sympy.ceiling):
        return d
    d = d.func(*(_whole_floors(a) for a in d.args)) if d.args else d  # inner floors first, re-evaluated
    if isinstance(d, (sympy.floor, sympy.ceiling)):
        arg = sympy.cancel(sympy.together(d.args[0]))
        return sympy.expand(arg) if _integer_valued(arg) else d
    return d


def _integer_valued(expr) -> bool:
    """A sum of integer multiples of products of sizes (symbols) and integer functions of them."""
    integer_atoms = (sympy.Symbol, sympy.floor, sympy.ceiling, sympy.Mod, sympy.Min, sympy.Max)
    for term, coeff in sympy.expand(expr).as_coefficients_dict().items():
        if not coeff.is_Integer:
            return False
        factors = sympy.Mul.make_args(term)
        if not all(f == 1 or isinstance(f, integer_atoms)
                   or (f.is_Pow and isinstance(f.base, integer_atoms) and f.exp.is_Integer and f.exp > 0)
                   for f in factors):
            return False
    return True


def format_dim(d: Dim) -> str:
    d = simplify_dim(d)
    if isinstance(d, int):
        return str(d)
    return sympy.sstr(d).replace("floor(", "floor(")


_DIM_FUNCS = {"floor": sympy.floor, "ceiling": sympy.ceiling, "Max": sympy.Max, "Min": sympy.Min, "Mod": sympy.Mod}


def parse_dim(text: str) -> Dim:
    """Read a dim written by `format_dim` (an int or an expression of symbols).

    A small parser of its own, not `sympy.parse_expr`: that one evaluates the text as Python,
    and IR text may come from a file someone sent."""
    parser = _DimParser(text)
    expr = parser.expr()
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()!r} in dimension {text!r}")
    return simplify_dim(expr)


class _DimParser:
    """expr := term (+|- term)* ; term := unary (*|/ unary)* ; unary := -unary | atom [** unary] ;
    atom := int | symbol | func(expr, ...) | (expr)."""

    _TOKEN = re.compile(r"\s*(\d+|[A-Za-z_][A-Za-z0-9_]*|\*\*|[-+*/(),])")
    MAX_DIGITS = 19  # an int64
    MAX_EXPONENT = 64

    def __init__(self, text: str):
        self.text, self.tokens = text, []
        pos = 0
        while pos < len(text.rstrip()):
            m = self._TOKEN.match(text, pos)
            if not m:
                raise ValueError(f"unexpected {text[pos:].strip()[:1]!r} in dimension {text!r}")
            self.tokens.append(m.group(1))
            pos = m.end()
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise ValueError(f"expected {expected or 'a value'} in dimension {self.text!r}")
        self.i += 1
        return tok

    def expr(self) -> sympy.Expr:
        out = self.term()
        while self.peek() in ("+", "-"):
            out = out + self.term() if self.take() == "+" else out - self.term()
        return out

    def term(self) -> sympy.Expr:
        out = self.unary()
        while self.peek() in ("*", "/"):
            out = out * self.unary() if self.take() == "*" else out / self.unary()
        return out

    def unary(self) -> sympy.Expr:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        exponent = self.unary()
        if not exponent.is_Integer or abs(int(exponent)) > self.MAX_EXPONENT:
            raise ValueError(f"exponent {exponent} is not a small integer in dimension {self.text!r}")
        if base.is_Integer and int(base).bit_length() * abs(int(exponent)) > 64 * self.MAX_EXPONENT:
            raise ValueError(f"power {base}**{exponent} is too large in dimension {self.text!r}")
        return base ** exponent

    def atom(self) -> sympy.Expr:
        tok = self.take()
        if tok.isdigit():
            if len(tok) > self.MAX_DIGITS:
                raise ValueError(f"number {tok[:8]}... is too large in dimension {self.text!r}")
            return sympy.Integer(int(tok))
        if tok == "(":
            out = self.expr()
            self.take(")")
            return out
        if tok in _DIM_FUNCS:
            self.take("(")
            args = [self.expr()]
            while self.peek() == ",":
                self.take()
                args.append(self.expr())
            self.take(")")
            return _DIM_FUNCS[tok](*args)
        if _IDENT.fullmatch(tok):
            return symbol(tok)
        raise ValueError(f"unexpected {tok!r} in dimension {self.text!r}")


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
