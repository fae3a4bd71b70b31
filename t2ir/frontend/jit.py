"""TorchScript frontend: a torch.jit module (traced, scripted or from `torch.jit.load`), lifted
through torch.export.

The TorchScript graph is replayed by a small interpreter module that calls the same aten
operators; torch.export traces that interpreter with symbolic shapes, and the FX lifter does the
rest. So both frontends share one lifting path and one set of translations, and size arithmetic
recorded by the tracer (`aten::size`, `prim::NumToTensor`, `aten::Int`) becomes symbolic.

Control flow is run while tracing: a `prim::If` on sizes or constants takes its branch (torch
records a guard, and an axis the branch pins is reported like any other specialised axis), a
`prim::Loop` with a known trip count is unrolled. A branch or loop on tensor values cannot be
exported and is reported with its TorchScript source line.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import torch

from t2ir.errors import ExportError, Problem
from t2ir.paths import portable_source_path


def _scalar_div(a, b, rounding_mode=None):
    """aten::div on sizes: the tracer records `div(size, n, "floor"/"trunc")` for shape math."""
    return a / b if rounding_mode is None else a // b


# TorchScript ops on Python scalars (sizes, flags, lists): run as Python operators.
_SCALAR_OPS = {
    "aten::add": operator.add, "aten::sub": operator.sub, "aten::mul": operator.mul,
    "aten::floordiv": operator.floordiv, "aten::floor_divide": operator.floordiv,
    "aten::div": _scalar_div, "aten::neg": operator.neg, "aten::remainder": operator.mod,
    "aten::eq": operator.eq, "aten::ne": operator.ne, "aten::lt": operator.lt, "aten::gt": operator.gt,
    "aten::le": operator.le, "aten::ge": operator.ge, "aten::__not__": operator.not_,
    "aten::__and__": operator.and_, "aten::__or__": operator.or_, "aten::__is__": operator.is_,
    "aten::__isnot__": operator.is_not, "aten::len": len,
    "prim::min": min, "prim::max": max, "aten::Bool": bool, "aten::str": str, "aten::format": str.format,
}
_PASS_THROUGH = {"prim::NumToTensor", "aten::Int", "aten::Float", "aten::ScalarImplicit", "aten::IntImplicit",
                 "aten::FloatImplicit", "prim::device", "prim::unchecked_cast"}


def jit_graph(module: torch.nn.Module, args: tuple) -> tuple[torch.jit.ScriptModule, torch._C.Graph]:
    """The TorchScript graph of `module` (traced unless it is already a ScriptModule), inlined."""
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.trace(
        module, args, check_trace=False, strict=False)
    graph = scripted.graph.copy()
    torch._C._jit_pass_inline(graph)
    return scripted, graph


def script_arg_names(module: torch.jit.ScriptModule) -> list[str]:
    """The names of forward()'s parameters (after `self`), from the TorchScript schema."""
    return [a.name for a in module.forward.schema.arguments[1:]]


# a scripted node's range: `File "m.py", line 12` then the code; a traced one's: the Python stack
# at tracing time, innermost first, `m.py(12): forward`
_WHERE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_TRACED_AT = re.compile(r"^(?P<file>[^\n]+?)\((?P<line>\d+)\): \w+$")


def _source_file_line(node: torch._C.Node) -> tuple[str, int] | None:
    """(file, line) of a node's source, from TorchScript's source range text."""
    lines = node.sourceRange().splitlines()
    where = (_WHERE.search(lines[0]) or _TRACED_AT.match(lines[0])) if lines else None
    return (portable_source_path(where["file"]), int(where["line"])) if where else None


def _source_line(node: torch._C.Node) -> str:
    """`file.py:12: if x.sum() > 0:` from TorchScript's source range text (`file.py:12` when
    the graph was traced: no code is kept)."""
    lines = node.sourceRange().splitlines()
    where = _WHERE.search(lines[0]) if lines else None
    marker = next((i for i, line in enumerate(lines) if "<--- HERE" in line), None)
    if where is None or marker is None or marker < 2:  # the range text holds the code, then a marker line
        traced = _source_file_line(node)
        return f"{traced[0]}:{traced[1]}" if traced else " ".join(line.strip() for line in lines[1:2])[:160]
    return f"{where['file']}:{where['line']}: {lines[marker - 1].strip()}"[:200]  # the line above the marker


class _Unsupported(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.what)
        self.problem = problem


class _Mirror(torch.nn.Module):
    """A plain module with a TorchScript module's parameters (as `nn.Parameter`) and buffers
    under the same names, which torch.export can trace; any other attribute is read from the
    TorchScript module. (A module from `torch.jit.load` holds plain tensors, which torch.export
    refuses as parameters.)"""

    def __init__(self, scripted: torch.nn.Module):
        super().__init__()
        for name, child in scripted.named_children():
            self.add_module(name, _Mirror(child))
        for name, p in scripted.named_parameters(recurse=False):
            self.register_parameter(name, torch.nn.Parameter(p.detach(), requires_grad=False))
        for name, b in scripted.named_buffers(recurse=False):
            self.register_buffer(name, b.detach())
        object.__setattr__(self, "_scripted", scripted)  # last: until then no attribute falls through

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            scripted = self.__dict__.get("_scripted")
            if scripted is None:
                raise
            return getattr(scripted, name)


class JitInterpreter(torch.nn.Module):
    """Replays a TorchScript graph with torch.ops calls, so torch.export can trace it."""

    def __init__(self, root: torch.nn.Module, graph: torch._C.Graph):
        super().__init__()
        self.root = root
        self._graph = graph
        self._current: torch._C.Node | None = None

    def source_of_current(self) -> tuple[str, int] | None:
        """(file, line) of the model's source for the node being replayed, when TorchScript kept it."""
        return _source_file_line(self._current) if self._current is not None else None

    def forward(self, *inputs):
        graph_inputs = list(self._graph.inputs())
        env: dict[Any, Any] = {graph_inputs[0]: self.root}
        for v, x in zip(graph_inputs[1:], inputs):
            env[v] = x
        outs = self._run_block(self._graph, env)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _run_block(self, block, env: dict) -> list:
        for node in block.nodes():
            self._run(node, env)
        return [env[v] for v in block.outputs()]

    def _run(self, node: torch._C.Node, env: dict) -> None:
        self._current = node
        kind = node.kind()
        ins = [env[v] for v in node.inputs()]
        outs = list(node.outputs())
        if kind == "prim::If":
            block = list(node.blocks())[0 if self._static_bool(ins[0], node, "if") else 1]
            results = self._run_block(block, env)
        elif kind == "prim::Loop":
            results = self._loop(node, ins, env)
        elif kind == "prim::Constant":
            results = [node.output().toIValue() if node.hasAttributes() else None]
        elif kind == "prim::GetAttr":
            results = [getattr(ins[0], node.s("name"))]
        elif kind in ("prim::ListConstruct", "prim::TupleConstruct"):
            results = [list(ins)]
        elif kind in ("prim::ListUnpack", "prim::TupleUnpack"):
            results = list(ins[0])
        elif kind in ("prim::TupleIndex", "aten::__getitem__"):
            results = [ins[0][ins[1]]]
        elif kind == "prim::Uninitialized":
            results = [None]
        elif kind == "prim::RaiseException":
            raise _Unsupported(Problem(f"the model raises an exception here: {ins[0]}", kind,
                                       hint=f"TorchScript source: {_source_line(node)}"))
        elif kind in ("aten::Bool", "aten::Int", "aten::Float") and isinstance(ins[0], torch.Tensor):
            raise _Unsupported(Problem(
                f"a tensor's value used as a Python {kind[6:].lower()} (data-dependent control flow or shapes) "
                "cannot be exported", kind, hint=f"TorchScript source: {_source_line(node)}; keep conditions and "
                "sizes on shapes or constants (torch.where for value-dependent choices)"))
        elif kind in _PASS_THROUGH:
            results = [ins[0]]
        elif kind == "aten::size":  # symbolic sizes, not the op (whose result would pin them)
            results = [ins[0].size(ins[1]) if len(ins) == 2 else list(ins[0].shape)]
        elif kind == "aten::numel" and isinstance(ins[0], torch.Tensor):
            results = [ins[0].numel()]
        elif kind == "aten::dim" and isinstance(ins[0], torch.Tensor):
            results = [ins[0].dim()]
        elif kind in _SCALAR_OPS and not any(isinstance(x, torch.Tensor) for x in ins):
            results = [_SCALAR_OPS[kind](*ins)]
        elif "::" in kind and not kind.startswith("prim::"):
            results = self._call_op(node, kind, ins, len(outs))
        else:
            raise _Unsupported(Problem("this TorchScript node cannot be replayed", kind,
                                       hint=f"TorchScript source: {_source_line(node)}"))
        for o, x in zip(outs, results):
            env[o] = x

    @staticmethod
    def _call_op(node: torch._C.Node, kind: str, ins: list, n_outs: int) -> list:
        ns, name = kind.split("::", 1)
        args, kwargs = _split_kwarg_only(node, ins)
        result = getattr(getattr(torch.ops, ns), name)(*args, **kwargs)
        return [result] if n_outs == 1 else list(result)

    @staticmethod
    def _static_bool(cond, node: torch._C.Node, what: str) -> bool:
        """A condition known while tracing (a constant, a size comparison); a tensor's value is not."""
        if isinstance(cond, torch.Tensor):
            raise _Unsupported(Problem(
                f"an `{what}` on a tensor's value (data-dependent control flow) cannot be exported", node.kind(),
                hint=f"TorchScript source: {_source_line(node)}; compute both branches and pick with torch.where, "
                     "or make the condition depend on shapes or constants only"))
        return bool(cond)

    def _loop(self, node: torch._C.Node, ins: list, env: dict) -> list:
        """Unroll: (max trip count, initial condition, *carried) -> carried after the loop."""
        trip, cond, *carried = ins
        block = next(node.blocks())
        params = list(block.inputs())
        i = 0
        while i < trip and self._static_bool(cond, node, "loop"):
            env[params[0]] = i
            for p, v in zip(params[1:], carried):
                env[p] = v
            cond, *carried = self._run_block(block, env)
            i += 1
        return carried


def _split_kwarg_only(node: torch._C.Node, ins: list) -> tuple[list, dict]:
    """TorchScript passes keyword-only arguments positionally; torch.ops wants them by name."""
    try:
        schema = torch._C.parse_schema(node.schema())
    except Exception:
        return ins, {}
    args, kwargs = [], {}
    for a, x in zip(schema.arguments, ins):
        if a.kwarg_only:
            kwargs[a.name] = x
        else:
            args.append(x)
    return args, kwargs


def export_via_jit(module: torch.nn.Module, args: tuple, kwargs: dict, dims: dict[tuple[int, int], str],
                   input_names: list[str]) -> torch.export.ExportedProgram:
    """Trace with torch.jit (unless `module` is TorchScript already), then replay the graph
    under torch.export with the requested symbols."""
    from t2ir.frontend.trace import check_pinned_broadcasts, check_still_dynamic, expand_sizes_of_one, size_one_problem

    scripted, graph = jit_graph(module, args)
    names = script_arg_names(scripted)
    if kwargs:  # TorchScript graphs take every argument positionally
        args = tuple(args) + tuple(kwargs[n] for n in names[len(args):] if n in kwargs)
    interp = JitInterpreter(_Mirror(scripted) if isinstance(module, torch.jit.ScriptModule) else module, graph)
    shapes = tuple({axis: torch.export.Dim.DYNAMIC for (j, axis) in dims if j == i} or None
                   for i in range(len(args)))

    def replay():
        return torch.export.export(interp, tuple(expand_sizes_of_one(args, dims)), dynamic_shapes={"inputs": shapes},
                                   strict=False)

    try:
        ep = replay()
    except _Unsupported as e:
        raise ExportError("the TorchScript graph cannot be exported:", [e.problem]) from None
    except Exception as e:
        from t2ir.frontend.fx import trace_error_problems
        from t2ir.frontend.pinned_axes import pinning_sites_of

        names = {f"inputs[{i}]": name for i, name in enumerate(input_names)}
        raise ExportError("torch.export could not replay the TorchScript graph:",
                          size_one_problem(args, input_names, dims) +
                          trace_error_problems(e, pinning_sites_of(replay, e, interp.source_of_current).sites, names)) from None
    check_still_dynamic(ep, input_names, dims)
    check_pinned_broadcasts(ep, dims)
    return _strip_root_prefix(ep)


def _strip_root_prefix(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Weights keep their names from the user's module (`fc.weight`, not `root.fc.weight`)."""
    for spec in ep.graph_signature.input_specs:
        if spec.target and spec.target.startswith("root."):
            new = spec.target[len("root."):]
            for table in (ep._state_dict, ep._constants):
                if spec.target in table:
                    table[new] = table.pop(spec.target)
            spec.target = new
    return ep
