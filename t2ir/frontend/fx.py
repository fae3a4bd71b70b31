"""Lifts a torch.export ExportedProgram into the t2ir IR.

High-level aten ops (linear, conv2d, layer_norm, scaled_dot_product_attention, ...) are kept as
they are. Parameters and buffers become lazy constants. Symbolic integers (`x.size(0)`, `s0 + 1`)
do not become nodes: they are folded into dimension expressions in the attributes of the ops
that use them, so shape arithmetic is gone before the first pass runs.
"""

from __future__ import annotations

import math
import operator
import os
import re
import traceback
from typing import Any, Callable, Optional

import sympy
import torch
import torch.fx

from t2ir.errors import ExportError, Problem
from t2ir.frontend.complex_to_real import lower_complex
from t2ir.frontend.scan import SCAN, lift_scan
from t2ir.ir import Graph, InMemory, Loc, TensorSource, Value
from t2ir.ops.aliases import RESHAPES
from t2ir.ops.registry import canonical_op_name
from t2ir.paths import portable_source_path
from t2ir.types import DType, TensorType, UnsupportedDType, free_symbols, simplify_dim, symbol

WeightSource = Callable[[str, torch.Tensor], Optional[TensorSource]]

_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
DROPPED_OPS = {
    "aten._assert_scalar", "aten._assert_tensor_metadata", "aten.sym_constrain_range_for_size",
    "aten._assert_async.msg", "aten.sym_constrain_range",
}


def node_loc(node: torch.fx.Node) -> Loc:
    """Module path (from nn_module_stack) and the innermost source line outside torch itself."""
    stack = node.meta.get("nn_module_stack") or {}
    module = ""
    if stack:
        module = str(list(stack.values())[-1][0])
        module = re.sub(r"^L\['self'\]\.?|^L__self___?", "", module)
    file, line = "", 0
    frames = _FRAME.findall(node.meta.get("stack_trace") or "")
    for f, ln in reversed(frames):
        if not f.startswith(_TORCH_DIR):
            file, line = f, int(ln)
            break
    return Loc(module, portable_source_path(file), line)


_T2IR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DATA_DEPENDENT = ("GuardOnDataDependentSymNode", "DataDependentOutputException", "DynamicOutputShapeException",
                   "data-dependent")


# L['x'].size()[0], or L['inputs'][0].size()[0] for a forward(*inputs) (the TorchScript frontend's)
_SPECIALISED = re.compile(r"marked L\['(?P<input>\w+)'\](?P<index>\[\d+\])?\.size\(\)\[(?P<axis>\d+)\] as dynamic but your code "
                         r"specialized it to be a constant \((?P<size>\d+)\)")


def trace_error_problems(e: BaseException, pinned: Optional[dict] = None,
                         names: Optional[dict[str, str]] = None) -> list[Problem]:
    """A torch.export failure as problems: what / where (the user's line) / what to do.
    `pinned` (t2ir.frontend.pinned_axes) says which line fixed a dynamic axis; `names` gives the
    user's names of torch's inputs (`inputs[0]` -> `x`) where they differ."""
    inputs = [(m, m["input"] + (m["index"] or "")) for m in _SPECIALISED.finditer(str(e))]
    fixed = [Problem(f"dynamic axis {m['axis']} of input {(names or {}).get(key, key)!r} was "
                     f"specialised to {m['size']} by the model's code", "dynamic_axes",
                     _pinning_loc(pinned, key, int(m["axis"])),
                     hint="the model only works for that size on this axis (e.g. `len(x)` or `x.size(0)` used as a "
                     "Python number, or a view or reshape to a fixed size); make the axis static or change the model")
             for m, key in inputs]
    return fixed or [_trace_error_problem(e)]


def _pinning_loc(pinned: Optional[dict], name: str, axis: int) -> Loc:
    site = (pinned or {}).get((name, axis))
    return Loc("", site[0], site[1]) if site else Loc()


def _trace_error_problem(e: BaseException) -> Problem:
    text = str(e).strip()
    lines = [l for l in text.splitlines() if l.strip()]
    what = lines[0][:400] if lines else type(e).__name__
    frames = [(f, int(ln)) for f, ln in _FRAME.findall(text.split("The following call raised this error:", 1)[-1])]
    frames += [(fs.filename, fs.lineno) for fs in reversed(traceback.extract_tb(e.__traceback__))]
    user = [(f, ln) for f, ln in frames if not f.startswith((_TORCH_DIR, _T2IR_DIR)) and os.path.isfile(f)]
    loc = Loc("", portable_source_path(user[0][0]), user[0][1]) if user else Loc()
    if any(k in type(e).__name__ or k in text for k in _DATA_DEPENDENT):
        hint = ("a shape or a branch depends on tensor values (int(tensor), `if tensor`, nonzero, "
                "boolean indexing), which an NNEF graph cannot express: keep shapes data-independent "
                "(torch.where, masked_fill)")
    else:
        hint = "torch.export must be able to trace the model; see the torch.export docs"
    return Problem(what, type(e).__name__, loc, hint)


def mutated_argument(target) -> Optional[int]:
    """The position of the argument an in-place op writes to (`relu_`: 0), or None."""
    for i, a in enumerate(target._schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            return i
    return None


def functional_twin(target):
    """`aten.relu_.default` -> `aten.relu.default` (None when there is none)."""
    packet = target._schema.name.split("::", 1)[1]
    if not packet.endswith("_") or packet.startswith("_"):
        return None
    ns = getattr(torch.ops, target.namespace)
    twin = getattr(ns, packet[:-1], None)
    return getattr(twin, target._overloadname, None) if twin is not None else None


def local_mutation(node: torch.fx.Node) -> bool:
    """An in-place op the lifter can make functional by itself: it writes to a tensor computed
    in the graph by an op that returns a new tensor (not an input, a weight or a view, whose
    writes would reach another tensor)."""
    i = mutated_argument(node.target)
    base = node.args[i] if i is not None and i < len(node.args) else None
    while isinstance(base, torch.fx.Node) and base.op == "call_function" and isinstance(
            base.target, torch._ops.OpOverload) and mutated_argument(base.target) is not None:
        j = mutated_argument(base.target)  # the result of an in-place op is its input again
        base = base.args[j] if j < len(base.args) else None
    if not (isinstance(base, torch.fx.Node) and base.op == "call_function"
            and isinstance(base.target, torch._ops.OpOverload)):
        return False
    returns = base.target._schema.returns
    return functional_twin(node.target) is not None and not any(r.alias_info is not None for r in returns)


def lifted_target(node: torch.fx.Node):
    """The op the lifter makes of a call: an in-place op it functionalizes by itself becomes
    its functional twin."""
    if mutated_argument(node.target) is not None and local_mutation(node):
        return functional_twin(node.target)
    return node.target


def op_name(target) -> str:
    ns = target.namespace
    packet = target._schema.name.split("::", 1)[1]
    return canonical_op_name(f"{ns}.{packet}.{target._overloadname}")


class SymbolTable:
    """Maps torch's shape symbols (s0, s77, ...) to the user's names (batch, S, P)."""

    def __init__(self, multiples: Optional[dict] = None):
        self.names: dict[sympy.Symbol, sympy.Expr] = {}
        self.multiples = dict(multiples or {})  # torch symbol -> k: the size is k times the named symbol

    def bind(self, torch_sym: sympy.Symbol, name: str) -> None:
        self.names[torch_sym] = self.multiples.get(torch_sym, 1) * symbol(name)

    def to_dim(self, x) -> Any:
        """A torch SymInt / sympy expression / int as an IR dimension."""
        if isinstance(x, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            expr = x.node.expr
        elif isinstance(x, sympy.Basic):
            expr = x
        else:
            return x
        expr = plain_sympy(expr)
        for s in expr.free_symbols:
            if s not in self.names:
                self.bind(s, str(s))
        out = expr.xreplace(self.names)
        if isinstance(x, torch.SymFloat):
            return float(out) if out.is_number else out
        if isinstance(x, torch.SymBool):
            return bool(out) if out in (sympy.true, sympy.false) else out
        return simplify_dim(out)


def required_multiples(ep: torch.export.ExportedProgram) -> dict:
    """Dynamic sizes a reshape divides exactly: `x.view(b, T // 2, 2)` keeps the number of
    elements only when T is even, which torch assumes and tract cannot prove. Such a symbol is
    made a multiple, T = 2 * T' (the input's shape reads [b, 2 * T]), so every size is exact."""
    multiples: dict = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if op_name(node.target) not in RESHAPES or not isinstance(node.args[0], torch.fx.Node):
            continue
        src, out = node.args[0].meta.get("val"), node.meta.get("val")
        if not (isinstance(src, torch.Tensor) and isinstance(out, torch.Tensor)):
            continue
        size = node.args[1] if len(node.args) > 1 and isinstance(node.args[1], (list, tuple)) else out.shape
        size = [d.meta.get("val") if isinstance(d, torch.fx.Node) else d for d in size]
        if any(isinstance(d, int) and d < 0 for d in size):
            size = out.shape
        numel_in, numel_out = (_numel(shape) for shape in (src.shape, size))
        if numel_in is None or numel_out is None or sympy.simplify(numel_in - numel_out) == 0:
            continue
        candidates = {}
        for f in numel_out.atoms(sympy.floor):
            num, den = f.args[0].as_numer_denom()
            if num.is_Symbol and den.is_Integer and den > 1:
                candidates[num] = int(den)
        sub = {sym: k * sym for sym, k in candidates.items()}  # every halved axis at once (H and W)
        if candidates and sympy.simplify(numel_in.xreplace(sub) - numel_out.xreplace(sub)) == 0:
            for sym, k in candidates.items():
                multiples[sym] = math.lcm(k, multiples.get(sym, 1))
    return multiples


def _numel(shape) -> Optional[sympy.Expr]:
    n = sympy.Integer(1)
    for d in shape:
        if isinstance(d, torch.SymInt):
            n = n * plain_sympy(d.node.expr)
        elif isinstance(d, int):
            n = n * d
        else:
            return None
    return sympy.expand(n)


def plain_sympy(expr: sympy.Basic) -> sympy.Basic:
    """Rewrite torch's own sympy functions (FloorDiv, ToFloat, its Max, ...) as plain sympy
    ones, and integral floats (2.0 * H) as integers, so dims compare and print as expected."""
    from torch.utils._sympy import functions as F

    rules = [  # CleanDiv before FloorDiv: it is a subclass
        (F.CleanDiv, lambda a, b: a / b),
        (F.FloorDiv, lambda a, b: sympy.floor(a / b)),
        (F.CeilDiv, lambda a, b: sympy.ceiling(a / b)),
        (F.ModularIndexing, lambda base, div, mod: sympy.Mod(sympy.floor(base / div), mod)),
        (F.Mod, sympy.Mod),
        (F.PythonMod, sympy.Mod),
        (F.CeilToInt, sympy.ceiling),
        (F.FloorToInt, sympy.floor),
        (F.TruncToInt, sympy.floor),  # sizes are never negative
        (F.TruncToFloat, sympy.floor),
        (F.RoundToInt, lambda a: sympy.floor(a + sympy.Rational(1, 2))),
        (F.Max, sympy.Max),
        (F.Min, sympy.Min),
        (F.PowByNatural, lambda a, b: a ** b),
        (F.FloatPow, lambda a, b: a ** b),
        (F.FloatTrueDiv, lambda a, b: a / b),
        (F.IntTrueDiv, lambda a, b: a / b),
        (F.ToFloat, lambda a: a),
        (F.Identity, lambda a: a),
    ]
    for fn, repl in rules:
        expr = expr.replace(fn, repl)
    integral = {f: sympy.Integer(int(f)) for f in expr.atoms(sympy.Float) if float(f).is_integer()}
    if integral:
        expr = sympy.simplify(expr.xreplace(integral))
    # a mod n as a - n * floor(a / n), floor(-a / n) as -ceiling(a / n): padding to a multiple
    # (H + (7 - H % 7) % 7) becomes 7 * ceiling(H / 7), which tract can match with a view's
    # ceiling(H / 7) * 7 when it checks that a reshape keeps the number of elements
    expr = expr.replace(lambda e: isinstance(e, sympy.Mod) and e.args[1].is_Integer and e.args[1] > 0,
                        lambda e: e.args[0] - e.args[1] * sympy.floor(e.args[0] / e.args[1]))
    return expr.replace(lambda e: isinstance(e, sympy.floor) and e.args[0].could_extract_minus_sign(),
                        lambda e: -sympy.ceiling(-e.args[0]))


def tensor_type(val, where: str, problems: list[Problem], loc: Loc = Loc(),
                symbols: Optional[SymbolTable] = None, complex_gap: Optional[str] = None) -> TensorType:
    """`complex_gap`: why the graph's complex values could not be carried as real pairs."""
    symbols = symbols or SymbolTable()
    try:
        dtype = DType.from_torch(val.dtype)
    except UnsupportedDType as e:
        hint = ("tract has no complex numbers and t2ir carries them as real pairs only inside a graph"
                + (f" (here it meets {complex_gap})" if complex_gap else "")
                + ": return or take real and imaginary parts as real tensors (torch.view_as_real)"
                if e.dtype_name.startswith("complex") else "cast to a supported type in the model (e.g. .float())")
        problems.append(Problem(str(e), where, loc, hint))
        dtype = DType.f32
    return TensorType(dtype, tuple(symbols.to_dim(d) for d in val.shape))


def _is_tensor(val) -> bool:
    return isinstance(val, torch.Tensor)


class FxLifter:
    """One ExportedProgram -> one Graph; collects every problem before raising."""

    def __init__(self, ep: torch.export.ExportedProgram, *, input_names=None, output_names=None,
                 dim_names: Optional[dict[tuple[int, int], str]] = None,
                 weight_source: Optional[WeightSource] = None, name: str = "main"):
        self.ep = ep
        # the nodes lifted: ep's, complex values as real pairs (or why they cannot be)
        self.graph, self.complex_gap = lower_complex(ep.graph)
        self.input_names = list(input_names or [])
        self.output_names = list(output_names or [])
        self.dim_names = dict(dim_names or {})
        self.weight_source = weight_source
        self.g = Graph(name)
        self.symbols = SymbolTable(required_multiples(ep))
        self.env: dict[torch.fx.Node, Any] = {}
        self.problems: list[Problem] = []
        self.data_dependent: set[torch.fx.Node] = set()
        self._weights_by_id: dict[int, Value] = {}

    @classmethod
    def for_subgraph(cls, parent: "FxLifter", graph: torch.fx.Graph, into: Graph) -> "FxLifter":
        """A lifter for a higher-order op's subgraph (a scan's step) into `into`: the parent's
        symbols, and problems reported with the parent's; the caller binds the placeholders."""
        sub = cls.__new__(cls)
        sub.ep, sub.graph, sub.complex_gap = parent.ep, graph, parent.complex_gap
        sub.input_names, sub.output_names, sub.dim_names = [], [], {}
        sub.weight_source, sub.g, sub.symbols = None, into, parent.symbols
        sub.env, sub.problems, sub.data_dependent, sub._weights_by_id = {}, parent.problems, set(), {}
        return sub

    # ---- placeholders ------------------------------------------------------------------------
    def _lift_placeholders(self) -> None:
        from torch.export.graph_signature import InputKind

        specs = {s.arg.name: s for s in self.ep.graph_signature.input_specs}
        user_index = 0
        for node in self.graph.nodes:
            if node.op != "placeholder":
                continue
            spec = specs[node.name]
            val = node.meta.get("val")
            if spec.kind == InputKind.USER_INPUT:
                if _is_tensor(val):
                    self._lift_user_input(node, val, user_index)
                else:
                    self.env[node] = val
                user_index += 1
            else:
                self._lift_weight(node, spec.target, spec.kind == InputKind.CONSTANT_TENSOR)

    def _lift_user_input(self, node, val, index: int) -> None:
        for axis, d in enumerate(val.shape):
            name = self.dim_names.get((index, axis))
            if isinstance(d, torch.SymInt) and name is not None:
                expr = d.node.expr
                if isinstance(expr, sympy.Symbol) and expr not in self.symbols.names:
                    self.symbols.bind(expr, name)
        name = self.input_names[index] if index < len(self.input_names) else node.name
        if any(isinstance(d, int) and d == 0 for d in val.shape):
            self.problems.append(Problem(
                f"input {name!r} is empty (shape {list(val.shape)}): tract's operators do not run on empty tensors",
                "input", hint="export with an example that has at least one element on every axis"))
        t = tensor_type(val, f"input {name!r}", self.problems, symbols=self.symbols)
        v = self.g.add_input(name, t)
        if v.name != name:
            self.problems.append(Problem(f"input name {name!r} is used twice or is invalid",
                                         hint="give each input a distinct identifier"))
        for s in sorted(free_symbols(t.shape)):
            self.g.declare_symbol(s)
        self.env[node] = v

    def _lift_weight(self, node, target: str, is_constant: bool) -> None:
        tensor = self.ep.constants.get(target) if is_constant else None
        if tensor is None:
            tensor = self.ep.state_dict.get(target)
        if tensor is None:
            tensor = self.ep.constants.get(target)
        if isinstance(tensor, torch.ScriptObject) or tensor is None:
            self.problems.append(Problem(f"constant {target!r} is not a tensor", "placeholder"))
            return
        if id(tensor) in self._weights_by_id:  # tied weights (lm_head = embeddings): one constant
            self.env[node] = self._weights_by_id[id(tensor)]
            return
        source = self.weight_source(target, tensor) if self.weight_source else None
        if source is None:
            if tensor.device.type == "meta":
                self.problems.append(Problem(
                    f"weight {target!r} is on the meta device and no weight source provides it",
                    hint="load real weights or pass a safetensors weight source"))
                return
            source = InMemory(tensor.detach())
        t = tensor_type(tensor, f"weight {target!r}", self.problems)
        self.env[node] = self._weights_by_id[id(tensor)] = self.g.add_const(target, t, source, label=target)

    # ---- nodes --------------------------------------------------------------------------------
    def _resolve(self, a):
        """An FX argument as IR data: Value, dim expression, literal, or list of those."""
        if isinstance(a, torch.fx.Node):
            return self.env.get(a)
        if isinstance(a, (list, tuple)):
            return [self._resolve(x) for x in a]
        if isinstance(a, torch.dtype):
            try:
                return DType.from_torch(a)
            except UnsupportedDType as e:
                raise _DTypeArg(str(e)) from None
        if isinstance(a, (torch.device, torch.layout, torch.memory_format)):
            return str(a)
        if isinstance(a, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return self.symbols.to_dim(a)
        if isinstance(a, torch.Tensor):
            return self.g.add_const("lifted_tensor", TensorType(DType.from_torch(a.dtype), tuple(a.shape)),
                                    InMemory(a.detach()))
        return a

    def _lift_call(self, node: torch.fx.Node) -> None:
        target, val, loc = node.target, node.meta.get("val"), node_loc(node)
        if target is operator.getitem:
            src = self.env.get(node.args[0])
            self.env[node] = src[node.args[1]] if isinstance(src, (list, tuple)) else None
            return
        if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float, bool)) and not _is_tensor(val):
            self.env[node] = self.symbols.to_dim(val)
            return
        if target is SCAN:
            self.env[node] = lift_scan(self, node)
            return
        if not isinstance(target, torch._ops.OpOverload):
            name = getattr(target, "__name__", str(target))
            self.problems.append(Problem(
                "is not an ATen/custom operator call (higher-order ops and Python functions "
                "cannot be exported)", name, loc,
                "rewrite the model so this part traces to plain operators"))
            return
        mutated = None
        if lifted_target(node) is not target:  # x.relu_(): relu(x), and later reads of x see it
            mutated = node.args[mutated_argument(target)]
            target = lifted_target(node)
        name = op_name(target)
        if name in DROPPED_OPS or val is None:
            return
        if self._data_dependent(node, name, val, loc):
            return
        try:
            inputs, attrs = self._split_args(node, target)
        except _DTypeArg as e:
            self.problems.append(Problem(str(e), name, loc, "use a dtype tract supports"))
            return
        vals = list(val) if isinstance(val, (list, tuple)) else [val]
        types = [tensor_type(v, name, self.problems, loc, self.symbols, self.complex_gap) for v in vals if _is_tensor(v)]
        if len(types) != len(vals):
            self.problems.append(Problem("returns non-tensor values", name, loc))
            return
        if name in RESHAPES:
            types = [_requested_shape(types[0], attrs)]
        with self.g.inserting_before(None):
            out = self.g.add_node(name, inputs, types, attrs, name=node.name, loc=loc)
        self.env[node] = out.outputs if isinstance(val, (list, tuple)) else out.outputs[0]
        if mutated is not None:
            self._rebind(mutated, self.env[node])

    def _rebind(self, mutated: torch.fx.Node, value: Value) -> None:
        """After an in-place op, the tensor it wrote to (and the in-place ops that returned it)
        read as the new value."""
        while True:
            self.env[mutated] = value
            j = mutated_argument(mutated.target) if mutated.op == "call_function" and isinstance(
                mutated.target, torch._ops.OpOverload) else None
            if j is None:
                return
            mutated = mutated.args[j]

    def _data_dependent(self, node: torch.fx.Node, name: str, val, loc: Loc) -> bool:
        """An output whose size torch only knows at run time (nonzero, boolean indexing): report
        the op that creates it, not each op downstream."""
        from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

        vals = val if isinstance(val, (list, tuple)) else [val]
        if not any(_is_tensor(v) and free_unbacked_symbols(v) for v in vals):
            return False
        if not any(a in self.data_dependent for a in node.all_input_nodes):
            self.problems.append(Problem(
                "its output shape depends on the values in the tensor (a data-dependent shape), which an "
                "NNEF graph cannot express", name, loc,
                "keep shapes independent of the data: torch.where(mask, x, other) or masked_fill instead of "
                "x[mask] / nonzero / masked_select"))
        self.data_dependent.add(node)
        return True

    def _split_args(self, node, target) -> tuple[list[Value], dict[str, Any]]:
        """Tensor arguments become inputs; everything else becomes a named attribute."""
        inputs: list[Value] = []
        attrs: dict[str, Any] = {}
        schema = target._schema
        given = dict(zip((a.name for a in schema.arguments), node.args))
        given.update(node.kwargs)
        several_lists = sum(str(a.type).startswith("List[") and "Tensor" in str(a.type) for a in schema.arguments) > 1
        for a in schema.arguments:
            if a.name not in given:
                continue
            v = self._resolve(given[a.name])
            if isinstance(v, Value):
                inputs.append(v)
            elif isinstance(v, list) and v and all(isinstance(x, Value) for x in v) and not several_lists:
                inputs.extend(v)
            elif isinstance(v, list) and any(isinstance(x, Value) for x in v):
                inputs.extend(x for x in v if isinstance(x, Value))
                attrs[a.name] = ["*" if isinstance(x, Value) else x for x in v]
            else:
                attrs[a.name] = v
        return inputs, attrs

    def _lift_outputs(self, node: torch.fx.Node) -> None:
        from torch.export.graph_signature import OutputKind

        flat = torch.utils._pytree.tree_leaves(node.args[0])
        kinds = [s.kind for s in self.ep.graph_signature.output_specs]
        if len(kinds) == len(flat):  # buffers the model updates (batch norm statistics) are no outputs
            flat = [a for a, k in zip(flat, kinds) if k == OutputKind.USER_OUTPUT]
        outs: list[Value] = []
        for i, a in enumerate(flat):
            v = self.env.get(a) if isinstance(a, torch.fx.Node) else None
            if a in self.data_dependent:
                return  # already reported where the shape became data-dependent
            if not isinstance(v, Value):
                self.problems.append(Problem(f"output {i} is not a tensor ({a!r})", "output",
                                             hint="return only tensors from forward()"))
                continue
            outs.append(v)
        names = self.output_names or (["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))])
        if len(names) != len(outs):
            self.problems.append(Problem(f"{len(names)} output names given for {len(outs)} outputs",
                                         hint="pass one name per output tensor"))
            return
        final = []
        for v, name in zip(outs, names):
            if v.producer is None or v in final:
                v = self.g.op("aten.clone", [v], v.type, name=name)
            self.g.rename(v, name) if name not in self.g._names else None
            if v.name != name:
                self.problems.append(Problem(f"output name {name!r} clashes with another value",
                                             hint="choose distinct input and output names"))
            final.append(v)
        self.g.set_outputs(final)

    def lift_nodes(self) -> Optional[list[Value]]:
        """Lift every call; the values the graph's output node returns (None where one is not a
        tensor: a problem says why)."""
        returned = None
        for node in self.graph.nodes:
            if node.op == "call_function":
                self._lift_call(node)
            elif node.op == "get_attr":  # a higher-order op's subgraph
                self.env[node] = getattr(self.ep.graph_module, node.target, None)
            elif node.op == "output":
                returned = [self.env.get(a) for a in torch.utils._pytree.tree_leaves(node.args[0])]
            elif node.op not in ("placeholder",):
                self.problems.append(Problem(f"unexpected FX node kind {node.op!r}", str(node.target)))
        if returned is None or not all(isinstance(v, Value) for v in returned):
            return None
        return returned

    def lift(self) -> Graph:
        self._lift_placeholders()
        self.lift_nodes()
        output = next(n for n in self.graph.nodes if n.op == "output")
        self._lift_outputs(output)
        if self.problems:
            raise ExportError("the model could not be lifted into the t2ir IR:", self.problems)
        for s in sorted({s.name for e in self.symbols.names.values() for s in e.free_symbols}):
            self.g.declare_symbol(s)
        return self.g


def _requested_shape(t: TensorType, attrs: dict) -> TensorType:
    """A view's shape as the model asked for it: torch's own output shape may hold an
    expression it could not simplify (`x.view(b, T // 2, 2)` gives `floor(T / floor(T / 2))`
    for the last axis, which tract cannot write)."""
    size = attrs.get("size", attrs.get("shape"))
    if not isinstance(size, list) or len(size) != t.rank or any(isinstance(d, int) and d < 0 for d in size):
        return t
    return t.with_shape(size)


class _DTypeArg(Exception):
    pass


def lift_exported_program(ep, **kwargs) -> Graph:
    """ExportedProgram -> IR graph. See `FxLifter` for the options."""
    return FxLifter(ep, **kwargs).lift()
