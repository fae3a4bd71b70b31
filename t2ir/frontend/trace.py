"""Tracing a module with torch.export: example inputs, dynamic axes (torch.onnx style) and the
errors torch raises, turned into problems that name the input, the axis and the user's line."""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import torch

from t2ir.errors import ExportError, Problem
from t2ir.frontend.torch_output import torch_output_held


def forward_arg_names(module: torch.nn.Module, n: int, kwargs: Mapping[str, Any]) -> list[str]:
    check_call_fits(module, n, kwargs)
    params = list(inspect.signature(module.forward).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < n:
        positional += [f"input_{i}" for i in range(len(positional), n)]
    return positional[:n] + list(kwargs)


def check_call_fits(module: torch.nn.Module, n: int, kwargs: Mapping[str, Any]) -> None:
    """`n` positional examples and `kwargs` must be a valid call of forward (torch.export's own
    error for a wrong count points into inspect.py)."""
    signature = inspect.signature(module.forward)
    try:
        signature.bind(*range(n), **kwargs)
    except TypeError as e:
        given = f"{n} positional" + (f" and {', '.join(kwargs)} by keyword" if kwargs else "")
        raise ExportError(f"the example inputs do not fit {type(module).__name__}.forward{signature}:", [
            Problem(f"{e} ({given} given)", hint="pass one example per argument of forward, in order "
                    "(args=(...) positional, kwargs={...} by name)")]) from None


def normalize_dynamic_axes(dynamic_axes, names: Sequence[str], examples: Sequence[torch.Tensor]) -> dict[tuple[int, int], str]:
    """torch.onnx style `{"x": {0: "batch"}}` / `{"x": [0]}` -> {(input index, axis): symbol}."""
    out: dict[tuple[int, int], str] = {}
    problems = []
    for name, axes in (dynamic_axes or {}).items():
        if name not in names:
            problems.append(Problem(f"dynamic_axes names {name!r}, which is not an input",
                                    hint=f"inputs are: {', '.join(names)}"))
            continue
        i = list(names).index(name)
        if isinstance(axes, (list, tuple)):
            axes = {a: f"{name}_dim{a}" for a in axes}
        t = examples[i]
        for axis, sym in axes.items():
            if not isinstance(t, torch.Tensor) or not -t.dim() <= axis < t.dim():
                problems.append(Problem(f"dynamic axis {axis} of input {name!r} does not exist"))
                continue
            axis %= t.dim()
            if t.shape[axis] < 2:
                problems.append(Problem(
                    f"input {name!r} has size {t.shape[axis]} on dynamic axis {axis} ({sym})",
                    hint="trace with an example size of at least 2 on every dynamic axis "
                         "(torch.export specialises sizes 0 and 1); the export still runs with any size"))
            if not str(sym).isidentifier():
                problems.append(Problem(f"symbol name {sym!r} is not an identifier", hint="use names like 'batch' or 'S'"))
            out[(i, axis)] = str(sym)
    if problems:
        raise ExportError("invalid dynamic_axes:", problems)
    return out


def trace_with_torch_export(module, args, kwargs, names, dims) -> torch.export.ExportedProgram:
    """Trace with every dynamic axis marked `Dim.DYNAMIC` (like torch.onnx): torch may then
    refine an axis's range (`L >= 3` after a conv) instead of refusing the export; an axis it
    had to specialise to a constant is reported by `check_still_dynamic`."""
    shapes: dict[str, Any] = {}
    examples = list(args) + list(kwargs.values())
    for i, name in enumerate(names):
        spec = {axis: torch.export.Dim.DYNAMIC for (j, axis), sym in dims.items() if j == i}
        shapes[name] = spec or None if isinstance(examples[i], torch.Tensor) else None
    shapes = _grouped_by_parameter(module, shapes, len(args))
    try:
        with torch_output_held():  # torch's partial-graph dump on failure would bury our error
            ep = torch.export.export(module, tuple(args), kwargs=dict(kwargs), dynamic_shapes=shapes, strict=False)
    except Exception as e:  # torch's own messages are long: keep what, where and what to do
        from t2ir.frontend.fx import trace_error_problems

        raise ExportError("torch.export could not trace the model:", trace_error_problems(e)) from None
    check_still_dynamic(ep, names, dims)
    return ep


def _grouped_by_parameter(module, shapes: dict[str, Any], n_args: int) -> dict[str, Any]:
    """torch.export keys dynamic shapes by forward's parameters: the positional arguments a
    `*args` parameter collects go in one tuple under its name."""
    params = list(inspect.signature(module.forward).parameters.values())
    var = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
    if var is None:
        return shapes
    specs = list(shapes.values())
    named = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:n_args]
    out = dict(zip(named, specs))
    out[var] = tuple(specs[len(named):n_args])
    out.update(zip(list(shapes)[n_args:], specs[n_args:]))  # keyword arguments
    return out


def check_still_dynamic(ep: torch.export.ExportedProgram, names: Sequence[str], dims) -> None:
    """Every axis the user declared dynamic must still be symbolic after tracing."""
    from torch.export.graph_signature import InputKind

    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    vals = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    problems = []
    for (i, axis), sym in dims.items():
        val = vals.get(user[i]) if i < len(user) else None
        if isinstance(val, torch.Tensor) and isinstance(val.shape[axis], int):
            problems.append(Problem(
                f"dynamic axis {axis} ({sym}) of input {names[i]!r} was specialised to {val.shape[axis]} "
                "by the model's code", hint="the model only works for that size on this axis "
                "(e.g. a reshape to a fixed size); make the axis static or change the model"))
    if problems:
        raise ExportError("torch.export could not keep every dynamic axis symbolic:", problems)
