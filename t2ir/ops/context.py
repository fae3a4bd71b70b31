"""What a translator sees: the node's arguments by name, and a builder for NNEF-level nodes."""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

from t2ir.ir import Graph, Node, Value
from t2ir.options import ExportOptions
from t2ir.types import DType, TensorType


@functools.lru_cache(maxsize=None)
def torch_op(op: str):
    """The torch OpOverload behind an IR op name (`aten.add.Tensor`, `aten.linear`, `mylib.my_op`)."""
    import torch

    parts = op.split(".")
    packet = getattr(getattr(torch.ops, parts[0]), parts[1])
    return getattr(packet, parts[2] if len(parts) > 2 else "default")


def torch_schema(op: str):
    """The torch schema of an IR op name."""
    return torch_op(op)._schema


def draws_random_numbers(op: str) -> bool:
    """torch tags ops whose result depends on the random generator (rand, dropout in training)."""
    import torch

    return torch.Tag.nondeterministic_seeded in torch_op(op).tags


def is_tensor_list_type(t) -> bool:
    return str(t) in ("List[Tensor]", "List[Optional[Tensor]]")


def is_tensor_type(t) -> bool:
    return str(t) in ("Tensor", "Optional[Tensor]")


def schema_args(node: Node) -> dict[str, Any]:
    """Map a lifted torch op node back to its schema's argument names.

    The frontend puts tensor arguments in `node.inputs` (a tensor list flattened in place)
    and everything else (scalars, shapes, None, literal tensors) in `node.attrs` by name. A
    list that holds tensors among other items, or one of several tensor lists, is an
    attribute whose "*" items stand for the next inputs.
    """
    schema = torch_schema(node.op)
    args: dict[str, Any] = {}
    inputs = list(node.inputs)
    tensor_slots = [a for a in schema.arguments
                    if a.name not in node.attrs and (is_tensor_type(a.type) or is_tensor_list_type(a.type))]
    singles_after = 0
    for a in schema.arguments:
        if a.name in node.attrs:
            v = node.attrs[a.name]
            if isinstance(v, list) and "*" in v:  # a list mixing tensors ("*", in order) and other items
                v = [inputs.pop(0) if x == "*" else x for x in v]
            args[a.name] = v
        elif is_tensor_list_type(a.type):
            rest = [s for s in tensor_slots[tensor_slots.index(a) + 1:]]
            singles_after = len(rest)
            n = len(inputs) - singles_after
            args[a.name], inputs = inputs[:n], inputs[n:]
        elif is_tensor_type(a.type):
            args[a.name] = inputs.pop(0) if inputs else None
        elif a.has_default_value():
            args[a.name] = a.default_value
        else:
            args[a.name] = None
    return args


# NNEF-level ops that tract 0.23.9 cannot run on f64 ("... does not support F64"), found by
# running the whole op table (tests/op_cases.py) in f64; the other ops it emits all ran.
NO_F64_OPS = frozenset({
    "nnef.sigmoid", "nnef.leaky_relu", "tract_core.erf", "tract_core.gelu_approx", "tract_core.silu",
    "tract_transformers.silu", "tract_core.hard_swish", "tract_core.round_even", "tract_core.is_nan",
    "tract_core.is_inf",
})


class LowerContext:
    """Builder handed to translators; new nodes go right before the node being translated."""

    def __init__(self, graph: Graph, node: Node, options: Optional[ExportOptions] = None):
        self.graph = graph
        self.node = node
        self.options = options if options is not None else ExportOptions()
        self._args: Optional[dict[str, Any]] = None
        self.created: list[Value] = []  # outputs of the nodes this translation added

    @property
    def args(self) -> dict[str, Any]:
        """The node's arguments by their torch schema names."""
        if self._args is None:
            self._args = schema_args(self.node)
        return self._args

    def arg(self, name: str, default: Any = None) -> Any:
        v = self.args.get(name, default)
        return default if v is None else v

    @property
    def out(self) -> TensorType:
        """Type of the node's (first) output."""
        return self.node.outputs[0].type

    def emit(self, op: str, inputs: Sequence[Value], out_type: TensorType, *,
             name: Optional[str] = None, **attrs: Any) -> Value:
        """Add an NNEF-level node before the translated node and return its output.

        Ops tract has no f64 kernel for (`NO_F64_OPS`) are computed in f32 between casts."""
        if op == "nnef.reshape" and out_type.rank == 0:  # tract cannot reshape to a scalar: [1], then squeeze
            one = self.emit("nnef.reshape", inputs, out_type.with_shape((1,)), name=name, shape=[1])
            return self.emit("nnef.squeeze", [one], out_type, name=name, axes=[0])
        if op == "nnef.tile" and out_type.rank == 0:
            return inputs[0]
        if op in NO_F64_OPS and any(v.dtype == DType.f64 for v in inputs):
            low = [self.cast(v, DType.f32) if v.dtype == DType.f64 else v for v in inputs]
            low_t = out_type.with_dtype(DType.f32) if out_type.dtype == DType.f64 else out_type
            return self.cast(self.emit(op, low, low_t, name=name, **attrs), out_type.dtype)
        with self.graph.inserting_before(self.node):
            hint = name or self.node.outputs[0].name
            v = self.graph.op(op, list(inputs), out_type, name=hint, **attrs)
        self.created.append(v)
        return v

    def emit_multi(self, op: str, inputs: Sequence[Value], out_types: Sequence[TensorType], *,
                   name: Optional[str] = None, **attrs: Any) -> list[Value]:
        """Like `emit`, for ops with several outputs (`max_pool_with_index`, `topk`)."""
        with self.graph.inserting_before(self.node):
            hint = name or self.node.outputs[0].name
            outs = self.graph.add_node(op, list(inputs), list(out_types), attrs, name=hint).outputs
        self.created.extend(outs)
        return outs

    def cast(self, v: Value, dtype: DType) -> Value:
        if v.dtype == dtype:
            return v
        return self.emit("tract_core.cast", [v], v.type.with_dtype(dtype), to=dtype.value)

    def const(self, name: str, tensor, label: Optional[str] = None) -> Value:
        """A new constant from an in-memory tensor (small things: folded shapes, tables)."""
        from t2ir.ir import InMemory

        t = TensorType(DType.from_torch(tensor.dtype), tuple(tensor.shape))
        return self.graph.add_const(name, t, InMemory(tensor), label=label)
