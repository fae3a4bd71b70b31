"""Tracing a module with torch.export: example inputs, dynamic axes (torch.onnx style) and the
errors torch raises, turned into problems that name the input, the axis and the user's line."""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Mapping, Sequence

import torch

from t2ir.errors import ExportError, Problem
from t2ir.frontend.pinned_axes import pinning_sites_of
from t2ir.frontend.scan import fresh_compile_caches
from t2ir.frontend.torch_output import torch_output_held


def forward_arg_names(module: torch.nn.Module, n: int, kwargs: Mapping[str, Any]) -> list[str]:
    check_call_fits(module, n, kwargs)
    if isinstance(module, torch.jit.ScriptModule):  # no Python signature: TorchScript's schema
        from t2ir.frontend.jit import script_arg_names

        positional = script_arg_names(module)
    else:
        params = list(inspect.signature(module.forward).parameters.values())
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < n:
        positional += [f"input_{i}" for i in range(len(positional), n)]
    return positional[:n] + list(kwargs)


def check_call_fits(module: torch.nn.Module, n: int, kwargs: Mapping[str, Any]) -> None:
    """`n` positional examples and `kwargs` must be a valid call of forward (torch.export's own
    error for a wrong count points into inspect.py)."""
    if isinstance(module, torch.jit.ScriptModule):
        return  # TorchScript checks its own calls
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
    from t2ir.ops import rnn_hooks  # noqa: F401  (registers the built-in hooks)
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


def expand_sizes_of_one(examples: Sequence, dims: Mapping[tuple[int, int], str]) -> list:
    """The examples with each size-1 dynamic axis repeated to size 2. torch.export specialises
    a size-1 axis (it may broadcast), so a batch-1 example is traced at batch 2; the graph
    holds for any size, and check_io still runs the user's own example."""
    out = list(examples)
    for i, axis in size_one_axes(examples, dims):
        out[i] = torch.cat([out[i], out[i]], dim=axis)
    return out


def size_one_problem(examples: Sequence, names: Sequence[str], dims) -> list[Problem]:
    """Says that a trace ran at size 2 where the example had size 1 (when that trace failed)."""
    axes = size_one_axes(examples, dims)
    if not axes:
        return []
    where = ", ".join(f"axis {a} of {names[i]!r}" for i, a in axes)
    return [Problem(f"the example has size 1 on dynamic {where}: t2ir traced the model with size 2 there "
                    "(torch.export specialises size 1), and the model failed at that size", "dynamic_axes",
                    hint="if the model only works with size 1 there, make that axis static")]


def trace_with_torch_export(module, args, kwargs, names, dims) -> torch.export.ExportedProgram:
    """Trace with every dynamic axis marked `Dim.DYNAMIC` (like torch.onnx): torch may then
    refine an axis's range (`L >= 3` after a conv) instead of refusing the export; an axis it
    had to specialise to a constant is reported by `check_still_dynamic`. Examples of size 1
    on dynamic axes are fine (see `expand_sizes_of_one`)."""
    examples = list(args) + list(kwargs.values())
    traced = expand_sizes_of_one(examples, dims)
    specs = [({axis: torch.export.Dim.DYNAMIC for (j, axis) in dims if j == i} or None)
             if isinstance(x, torch.Tensor) else None for i, x in enumerate(examples)]
    shapes = _dynamic_shapes(module, len(args), list(kwargs), specs)
    t_args, t_kwargs = tuple(traced[:len(args)]), dict(zip(kwargs, traced[len(args):]))
    def trace(strict: bool = False):
        with torch_output_held(), module_hooks(module):  # torch's partial-graph dump would bury our error
            fresh_compile_caches()
            return torch.export.export(module, t_args, kwargs=t_kwargs, dynamic_shapes=shapes, strict=strict)

    try:
        ep = trace()
    except Exception as e:  # torch's own messages are long: keep what, where and what to do
        from t2ir.frontend.fx import trace_error_problems

        pins = pinning_sites_of(trace, e)
        if (ep := _traced_by_bytecode(trace, dims) if pins.by_python_int else None) is None:
            size_one = size_one_problem(examples, names, dims)
            if size_one and not (_fails_eagerly(module, t_args, t_kwargs) and not _fails_eagerly(module, args, kwargs)):
                size_one = []  # the expanded example is not what broke the trace
            raise ExportError("torch.export could not trace the model:",
                              size_one + trace_error_problems(e, pins.sites)) from None
    if _pinned_axes(ep, dims):
        ep = _traced_by_bytecode(trace, dims) or ep
    check_still_dynamic(ep, names, dims)
    check_pinned_broadcasts(ep, dims)
    return ep


def _traced_by_bytecode(trace, dims) -> torch.export.ExportedProgram | None:
    """torch.export's strict mode (TorchDynamo), tried when the default mode pinned a dynamic axis
    by turning a size into a Python int (or pinned one without saying so). The default mode runs
    the model's Python, where `len(x)` must become a plain int; Dynamo reads the bytecode and keeps
    such sizes symbolic (RT-DETR's `batch_size = len(features)`). A view to a fixed size pins in
    both modes, so it is not retried. None when strict mode fails too or pins the axis as well:
    the caller reports the default mode's error."""
    try:
        ep = trace(strict=True)
    except Exception:
        return None
    return None if _pinned_axes(ep, dims) else ep


def _pinned_axes(ep: torch.export.ExportedProgram, dims) -> bool:
    return any(isinstance(size, int) for _, _, size in _traced_sizes(ep, dims))


def _fails_eagerly(module, args: tuple, kwargs: dict) -> bool:
    try:
        with torch.no_grad():
            module(*args, **kwargs)
        return False
    except Exception:
        return True


def _traced_sizes(ep: torch.export.ExportedProgram, dims):
    """((input index, axis), the user's name for it, its size as traced: int or SymInt) for
    each declared dynamic axis of a user input the program kept."""
    from torch.export.graph_signature import InputKind

    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    vals = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    for (i, axis), name in dims.items():
        val = vals.get(user[i]) if i < len(user) else None
        if isinstance(val, torch.Tensor):
            yield (i, axis), name, val.shape[axis]


def check_still_dynamic(ep: torch.export.ExportedProgram, names: Sequence[str], dims) -> None:
    """Every axis the user declared dynamic must still be symbolic after tracing."""
    problems = []
    for (i, axis), sym, size in _traced_sizes(ep, dims):
        if isinstance(size, int):
            problems.append(Problem(
                f"dynamic axis {axis} ({sym}) of input {names[i]!r} was specialised to {size} "
                "by the model's code", hint="the model only works for that size on this axis "
                "(e.g. a reshape to a fixed size); make the axis static or change the model"))
    if problems:
        raise ExportError("torch.export could not keep every dynamic axis symbolic:", problems)


def check_pinned_broadcasts(ep: torch.export.ExportedProgram, dims) -> None:
    """A pointwise op that meets a static size n (not 1) and a symbolic one on the same axis
    runs only when the two are equal. torch 2.13 traces it without a guard (a timm PiT adds its
    [1, 64, 27, 27] position table to a [B, 64, H/8 - 1, W/8 - 1] map), and tract then fails to
    load the graph over the broadcast, or it would fail at other sizes: refused here, with the
    op's line and the size the model pins. The ops are those torch tags `pointwise`."""
    from t2ir.frontend.fx import plain_sympy, node_loc

    symbols = _user_symbols(ep, dims)
    seen, problems = set(), []
    for node in ep.graph.nodes:
        target = node.target
        if node.op != "call_function" or torch.Tag.pointwise not in getattr(target, "tags", ()):
            continue
        out = node.meta.get("val")
        if not isinstance(out, torch.Tensor):
            continue
        for arg in node.args:
            val = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
            if not isinstance(val, torch.Tensor):
                continue
            for k in range(1, min(val.dim(), out.dim()) + 1):
                size, result = val.shape[-k], out.shape[-k]
                if isinstance(size, int) and size != 1 and isinstance(result, torch.SymInt):
                    expr = str(plain_sympy(result.node.expr).xreplace(symbols))
                    if (size, expr) not in seen:
                        seen.add((size, expr))
                        problems.append(Problem(
                            f"a size-{size} axis meets one of size {expr}: the model runs only where {expr} = {size}",
                            op=target.overloadpacket.__name__,
                            loc=node_loc(node),
                            hint="the model pins this size (a table or weight of fixed size); make that axis static"))
    if problems:
        raise ExportError("the model pins the size of dynamic axes:", problems)


def _user_symbols(ep: torch.export.ExportedProgram, dims) -> dict:
    """torch's size symbols (s53) -> sympy symbols named as the user named the axes (H)."""
    import sympy

    out = {}
    for _, name, size in _traced_sizes(ep, dims):
        if isinstance(size, torch.SymInt) and isinstance(size.node.expr, sympy.Symbol):
            out[size.node.expr] = sympy.Symbol(str(name), integer=True, positive=True)
    return out
