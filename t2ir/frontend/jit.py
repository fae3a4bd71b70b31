"""Legacy frontend: a torch.jit (trace or script) graph, lifted through torch.export.

The TorchScript graph is replayed by a small interpreter module that calls the same aten
operators; torch.export traces that interpreter with symbolic shapes, and the FX lifter does the
rest. So both frontends share one lifting path and one set of translations, and size arithmetic
recorded by the tracer (`aten::size`, `prim::NumToTensor`, `aten::Int`) becomes symbolic.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from t2ir.errors import ExportError, Problem

def _scalar_div(a, b, rounding_mode=None):
    """aten::div on sizes: the tracer records `div(size, n, "floor"/"trunc")` for shape math."""
    return a / b if rounding_mode is None else a // b


_SCALAR_OPS = {
    "aten::add": operator.add, "aten::sub": operator.sub, "aten::mul": operator.mul,
    "aten::floordiv": operator.floordiv, "aten::floor_divide": operator.floordiv,
    "aten::div": _scalar_div, "aten::neg": operator.neg, "aten::remainder": operator.mod,
}
_PASS_THROUGH = {"prim::NumToTensor", "aten::Int", "aten::Float", "aten::ScalarImplicit", "aten::IntImplicit",
                 "aten::FloatImplicit", "prim::device"}
_UNSUPPORTED = {"prim::If", "prim::Loop", "prim::CallMethod", "prim::CallFunction", "prim::PythonOp"}


def jit_graph(module: torch.nn.Module, args: tuple) -> tuple[torch.jit.ScriptModule, torch._C.Graph]:
    """The TorchScript graph of `module` (traced unless it is already a ScriptModule), inlined."""
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.trace(
        module, args, check_trace=False, strict=False)
    graph = scripted.graph.copy()
    torch._C._jit_pass_inline(graph)
    return scripted, graph


def _loc(node: torch._C.Node) -> str:
    rng = node.sourceRange().strip().splitlines()
    return rng[0][:120] if rng else ""


class JitInterpreter(torch.nn.Module):
    """Replays a TorchScript graph with torch.ops calls, so torch.export can trace it."""

    def __init__(self, root: torch.nn.Module, graph: torch._C.Graph):
        super().__init__()
        self.root = root
        self._graph = graph
        self._check()

    def _check(self) -> None:
        problems = []
        for node in self._graph.nodes():
            kind = node.kind()
            if kind in _UNSUPPORTED:
                problems.append(Problem("control flow and calls cannot be lifted from TorchScript", kind,
                                        hint="use torch.jit.trace or the torch.export frontend"))
        if problems:
            raise ExportError("the TorchScript graph cannot be lifted:", problems)

    def forward(self, *inputs):
        graph_inputs = list(self._graph.inputs())
        env: dict[Any, Any] = {graph_inputs[0]: self.root}
        for v, x in zip(graph_inputs[1:], inputs):
            env[v] = x
        for node in self._graph.nodes():
            self._run(node, env)
        outs = [env[v] for v in self._graph.outputs()]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _run(self, node: torch._C.Node, env: dict) -> None:
        kind = node.kind()
        ins = [env[v] for v in node.inputs()]
        outs = list(node.outputs())
        if kind == "prim::Constant":
            env[outs[0]] = node.output().toIValue() if node.hasAttributes() else None
        elif kind == "prim::GetAttr":
            env[outs[0]] = getattr(ins[0], node.s("name"))
        elif kind in ("prim::ListConstruct", "prim::TupleConstruct"):
            env[outs[0]] = list(ins)
        elif kind in ("prim::ListUnpack", "prim::TupleUnpack"):
            for o, x in zip(outs, ins[0]):
                env[o] = x
        elif kind == "prim::TupleIndex" or kind == "aten::__getitem__":
            env[outs[0]] = ins[0][ins[1]]
        elif kind in _PASS_THROUGH:
            env[outs[0]] = ins[0]
        elif kind == "aten::size" and len(ins) == 2:
            env[outs[0]] = ins[0].size(ins[1])
        elif kind in _SCALAR_OPS and not any(isinstance(x, torch.Tensor) for x in ins):
            env[outs[0]] = _SCALAR_OPS[kind](*ins)
        elif kind.startswith("aten::") or "::" in kind and not kind.startswith("prim::"):
            ns, name = kind.split("::", 1)
            args, kwargs = _split_kwarg_only(node, ins)
            result = getattr(getattr(torch.ops, ns), name)(*args, **kwargs)
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                for o, x in zip(outs, result):
                    env[o] = x
        else:
            raise ExportError("the TorchScript graph cannot be lifted:",
                              [Problem("unsupported TorchScript node", kind, hint=_loc(node))])


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


def export_via_jit(module: torch.nn.Module, args: tuple, dims: dict[tuple[int, int], str]) -> torch.export.ExportedProgram:
    """Trace with torch.jit, replay the graph under torch.export with the requested symbols."""
    scripted, graph = jit_graph(module, args)
    interp = JitInterpreter(module if not isinstance(module, torch.jit.ScriptModule) else scripted, graph)
    syms: dict[str, torch.export.Dim] = {}
    shapes = []
    for i, a in enumerate(args):
        spec = {axis: syms.setdefault(sym, torch.export.Dim(sym)) for (j, axis), sym in dims.items() if j == i}
        shapes.append(spec or None)
    try:
        ep = torch.export.export(interp, tuple(args), dynamic_shapes={"inputs": tuple(shapes)}, strict=False)
    except ExportError:
        raise
    except Exception as e:
        msg = " ".join(str(e).strip().splitlines()[:3])[:600]
        raise ExportError("torch.export could not replay the TorchScript graph:",
                          [Problem(msg, type(e).__name__)]) from None
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
