"""Guards torch could not prove, kept as assertions and checked on many sizes.

torch.export refuses a dynamic axis when the model's code makes a guard it cannot prove for
every size in the axis's range, even a true one (Llama 4's chunked attention asks for
`S * min(64, 64 * S) == 64 * S`, which holds for every S >= 1). Traced again with the guards
deferred to runtime assertions, the program carries them as `_assert_scalar` nodes; tract has
no runtime assertions, so each is checked here on a grid of sizes in the axes' ranges (small
sizes, around powers of two, large ones). One that fails anywhere is a real restriction: the
export is refused with it.
"""

from __future__ import annotations

import itertools

import sympy
import torch

from t2ir.errors import T2IRError

_SAMPLES = (*range(0, 10), 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096)
_MAX_POINTS = 4096


class UnprovenGuardError(T2IRError):
    """A guard the model's code makes fails for some sizes of a dynamic axis; `sizes` is the
    first failing point found, axis name -> size."""

    def __init__(self, message: str, sizes: dict[str, int]):
        super().__init__(message)
        self.sizes = sizes


def deferred_conditions(ep: torch.export.ExportedProgram) -> list[sympy.Basic]:
    """The conditions of the program's runtime assertions (on sizes)."""
    found = []
    for node in ep.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten._assert_scalar.default:
            cond = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
            if isinstance(cond, torch.SymBool):
                found.append(cond.node.expr)
    return found


def check_deferred_asserts(ep: torch.export.ExportedProgram, names: dict[str, str] | None = None) -> None:
    """Raise UnprovenGuardError for an assertion that fails on a sample of sizes within range."""
    ranges = {str(s): r for s, r in ep.range_constraints.items()}
    names = names or {}
    for cond in dict.fromkeys(deferred_conditions(ep)):
        symbols = sorted(cond.free_symbols, key=str)
        samples = [_in_range(ranges.get(str(s))) for s in symbols]
        for point in itertools.islice(itertools.product(*samples), _MAX_POINTS):
            value = cond.xreplace({s: sympy.Integer(v) for s, v in zip(symbols, point)})
            if value is sympy.false:
                where = ", ".join(f"{names.get(str(s), str(s))} = {v}" for s, v in zip(symbols, point))
                shown = cond.xreplace({s: sympy.Symbol(names[str(s)]) for s in symbols if str(s) in names})
                raise UnprovenGuardError(
                    f"the model only runs for some sizes of its dynamic axes: {shown} fails at {where}; "
                    "export with that axis static, or bound its range",
                    {names.get(str(s), str(s)): v for s, v in zip(symbols, point)})


def _in_range(bounds) -> list[int]:
    lo = _finite(bounds.lower) if bounds is not None else None
    hi = _finite(bounds.upper) if bounds is not None else None
    lo = 0 if lo is None else lo
    return [v for v in dict.fromkeys((lo, *_SAMPLES)) if v >= lo and (hi is None or v <= hi)]


def _finite(bound) -> int | None:
    from torch.utils._sympy.numbers import int_oo

    return None if bound in (int_oo, -int_oo, sympy.oo, -sympy.oo) else int(bound)
