"""An ExportedProgram given as it is (`torch.export.export`, or `torch.export.load` of a .pt2):
its inputs' names, the symbols of its dynamic axes, and inputs to check it with."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from t2ir.errors import ExportError, Problem


def _user_inputs(ep: torch.export.ExportedProgram) -> list[tuple[str, Any]]:
    """(placeholder name, example value) of each user input, in order."""
    from torch.export.graph_signature import InputKind

    vals = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    return [(s.arg.name, vals.get(s.arg.name)) for s in ep.graph_signature.input_specs
            if s.kind == InputKind.USER_INPUT]


def program_inputs(ep: torch.export.ExportedProgram, input_names: Optional[Sequence[str]],
                   dynamic_axes: Optional[dict]) -> tuple[list[str], dict[tuple[int, int], str]]:
    """Input names (the program's own unless renamed) and a symbol name for every symbolic
    axis: the one `dynamic_axes` gives, else `<input>_dim<axis>` (torch.onnx's automatic name).
    An axis `dynamic_axes` names must be symbolic in the program already."""
    inputs = _user_inputs(ep)
    names = list(input_names or [n for n, _ in inputs])
    problems = []
    if len(names) != len(inputs):
        problems.append(Problem(f"{len(names)} input names given for {len(inputs)} inputs"))
        raise ExportError("invalid input_names:", problems)
    wanted: dict[tuple[int, int], str] = {}
    for name, axes in (dynamic_axes or {}).items():
        if name not in names:
            problems.append(Problem(f"dynamic_axes names {name!r}, which is not an input",
                                    hint=f"inputs are: {', '.join(names)}"))
            continue
        i = names.index(name)
        val = inputs[i][1]
        axes = {a: f"{name}_dim{a}" for a in axes} if isinstance(axes, (list, tuple)) else axes
        for axis, sym in axes.items():
            rank = val.dim() if isinstance(val, torch.Tensor) else 0
            if not -rank <= axis < rank:
                problems.append(Problem(f"dynamic axis {axis} of input {name!r} does not exist"))
            elif not isinstance(val.shape[axis], torch.SymInt):
                problems.append(Problem(
                    f"axis {axis} of input {name!r} is static ({val.shape[axis]}) in the exported program",
                    hint="export the program with dynamic_shapes marking that axis (torch.export.Dim)"))
            else:
                wanted[(i, axis % rank)] = str(sym)
    if problems:
        raise ExportError("invalid dynamic_axes:", problems)
    symbolic = [(i, axis, d.node.expr) for i, (_, val) in enumerate(inputs) if isinstance(val, torch.Tensor)
                for axis, d in enumerate(val.shape) if isinstance(d, torch.SymInt)]
    by_symbol = {expr: wanted[(i, axis)] for i, axis, expr in symbolic if (i, axis) in wanted}
    for i, axis, expr in symbolic:  # one name per torch symbol: an axis shared by two inputs keeps one
        by_symbol.setdefault(expr, f"{names[i]}_dim{axis}")
    return names, {(i, axis): by_symbol[expr] for i, axis, expr in symbolic}


def example_inputs(ep: torch.export.ExportedProgram, args: tuple, kwargs: Optional[dict]) -> tuple[tuple, dict]:
    """The inputs to check the export with: the given ones, else those the program was
    exported with (a .pt2 keeps them)."""
    if args or kwargs:
        return tuple(args), dict(kwargs or {})
    saved = getattr(ep, "example_inputs", None)
    if saved is None:
        raise ExportError("check_io needs example inputs:", [Problem(
            "the exported program carries no example inputs", hint="pass args to check the export with")])
    saved_args, saved_kwargs = saved
    return tuple(saved_args), dict(saved_kwargs)
