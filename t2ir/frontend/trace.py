"""Tracing a module with torch.export: example inputs, dynamic axes (torch.onnx style) and the
errors torch raises, turned into problems that name the input, the axis and the user's line."""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Mapping, Sequence

import torch

from t2ir.errors import ExportError, Problem


def forward_arg_names(module: torch.nn.Module, n: int, kwargs: Mapping[str, Any]) -> list[str]:
    if isinstance(module, torch.jit.ScriptModule):  # no Python signature: TorchScript's schema
        from t2ir.frontend.jit import script_arg_names

        positional = script_arg_names(module)
    else:
        params = list(inspect.signature(module.forward).parameters.values())
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < n:
        positional += [f"input_{i}" for i in range(len(positional), n)]
    return positional[:n] + list(kwargs)


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
            if t.shape[axis] == 0:
                problems.append(Problem(
                    f"input {name!r} is empty on dynamic axis {axis} ({sym})",
                    hint="trace with an example of size 1 or more on every dynamic axis; the export "
                         "still runs with any size"))
            if not str(sym).isidentifier():
                problems.append(Problem(f"symbol name {sym!r} is not an identifier", hint="use names like 'batch' or 'S'"))
            out[(i, axis)] = str(sym)
    if problems:
        raise ExportError("invalid dynamic_axes:", problems)
    return out


def _dynamic_shapes(module, n_args: int, kwarg_names: list[str], specs: list) -> dict[str, Any]:
    """Per-input specs laid out as torch.export wants them: by forward()'s parameter names,
    with the inputs a `*args` parameter collects as one tuple."""
    params = list(inspect.signature(module.forward).parameters.values())
    shapes: dict[str, Any] = {}
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for p, spec in zip(positional, specs[:n_args]):
        shapes[p.name] = spec
    rest = specs[len(positional):n_args]
    var = next((p for p in params if p.kind == p.VAR_POSITIONAL), None)
    if var is not None and rest:
        shapes[var.name] = tuple(rest)
    var_kw = next((p for p in params if p.kind == p.VAR_KEYWORD), None)
    for name, spec in zip(kwarg_names, specs[n_args:]):
        if any(p.name == name for p in params) or var_kw is None:
            shapes[name] = spec
        else:
            shapes.setdefault(var_kw.name, {})[name] = spec
    return shapes


@contextlib.contextmanager
def module_hooks(root: torch.nn.Module):
    """While tracing, modules with a registered hook (`t2ir.register_module`) run the hook in
    place of their `forward`; the modules are restored afterwards, even on errors."""
    from t2ir.frontend import rnn  # noqa: F401  (registers the built-in hooks)
    from t2ir.ops.registry import REGISTRY

    patched = []
    for m in root.modules():
        hook = REGISTRY.module_hook(m)
        if hook is not None and "forward" not in m.__dict__:
            m.forward = functools.partial(hook.trace, m)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def size_one_axes(examples: Sequence, dims: Mapping[tuple[int, int], str]) -> list[tuple[int, int]]:
    return [(i, axis) for (i, axis) in dims if isinstance(examples[i], torch.Tensor) and examples[i].shape[axis] == 1]


def tracing_sizes_of_one(examples: Sequence, dims: Mapping[tuple[int, int], str]):
    """torch.export specialises an axis whose example size is 1 (it assumes a size-1 axis
    broadcasts). With an example of size 1 on a dynamic axis, trace *size-obliviously*: torch
    then reasons as if the size were unknown (and >= 2) and keeps the axis symbolic."""
    if not size_one_axes(examples, dims):
        return contextlib.nullcontext()
    import torch.fx.experimental._config as shape_config

    return shape_config.patch(backed_size_oblivious=True)


def trace_with_torch_export(module, args, kwargs, names, dims) -> torch.export.ExportedProgram:
    """Trace with every dynamic axis marked `Dim.DYNAMIC` (like torch.onnx): torch may then
    refine an axis's range (`L >= 3` after a conv) instead of refusing the export; an axis it
    had to specialise to a constant is reported by `check_still_dynamic`. Examples of size 1
    on dynamic axes are fine (see `tracing_sizes_of_one`)."""
    examples = list(args) + list(kwargs.values())
    specs = [({axis: torch.export.Dim.DYNAMIC for (j, axis) in dims if j == i} or None)
             if isinstance(x, torch.Tensor) else None for i, x in enumerate(examples)]
    shapes = _dynamic_shapes(module, len(args), list(kwargs), specs)
    try:
        with tracing_sizes_of_one(examples, dims), module_hooks(module):
            ep = torch.export.export(module, tuple(args), kwargs=dict(kwargs), dynamic_shapes=shapes, strict=False)
    except Exception as e:  # torch's own messages are long: keep what, where and what to do
        from t2ir.frontend.fx import trace_error_problems

        raise ExportError("torch.export could not trace the model:", trace_error_problems(e)) from None
    check_still_dynamic(ep, names, dims, examples)
    return ep


def check_still_dynamic(ep: torch.export.ExportedProgram, names: Sequence[str], dims, examples: Sequence = ()) -> None:
    """Every axis the user declared dynamic must still be symbolic after tracing. An axis
    traced size-obliviously from a size-1 example that the model's code pins to that size
    (`x.view(1, -1)`, `if x.shape[0] == 1`) is kept symbolic by torch but bounded to [1, 2]:
    that is reported as a specialisation too."""
    from torch.export.graph_signature import InputKind

    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    vals = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    problems = []
    for (i, axis), sym in dims.items():
        val = vals.get(user[i]) if i < len(user) else None
        if not isinstance(val, torch.Tensor):
            continue
        size = val.shape[axis]
        pinned = isinstance(size, int) or (
            (i, axis) in size_one_axes(examples, dims) and _upper_bound(ep, size) <= 2)
        if pinned:
            problems.append(Problem(
                f"dynamic axis {axis} ({sym}) of input {names[i]!r} was specialised to "
                f"{size if isinstance(size, int) else 1} by the model's code", hint="the model only works for "
                "that size on this axis (e.g. a reshape to a fixed size, or a branch on the size); make the "
                "axis static or change the model"))
    if problems:
        raise ExportError("torch.export could not keep every dynamic axis symbolic:", problems)


def _upper_bound(ep: torch.export.ExportedProgram, size) -> float:
    """The largest value torch allows for a symbolic size (inf when unbounded)."""
    expr = size.node.expr
    bounds = ep.range_constraints.get(expr)
    upper = None if bounds is None else bounds.upper
    return int(upper) if upper is not None and getattr(upper, "is_Integer", False) else float("inf")
