"""Pluggable compression methods: which weight positions a method takes and how it stores them."""

from __future__ import annotations

import abc

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from t2ir.compression.q4_0 import q4_0_reference
from t2ir.compression.q4_0 import BLOCK as Q4_0_BLOCK
from t2ir.errors import ExportError, Problem
from t2ir.ir import Graph, Node, Value

# Positions: how a constant is read in the NNEF-level graph (see `weight_uses`).
LINEAR = "linear"        # B of nnef.matmul(x, w [N, K], transposeB=true), maybe through leading unsqueezes
EMBEDDING = "embedding"  # table of tract_core.gather(w, ids, axis=0, datum_type=...), i.e. aten.embedding
MATMUL = "matmul"        # any other matmul/einsum operand (e.g. [K, N]): no Q4_0 blocks along K
EXPERTS = "experts"      # w1/w2/w3 [E, N, K] of tract_moe_ffn in its "linear" layout (blocks along K)
OTHER = "other"          # anything else: bias add, graph output, gather without datum_type (rotary caches)
WEIGHT_POSITIONS = frozenset({LINEAR, EMBEDDING, MATMUL, EXPERTS})
MOE_EXPERT_INPUTS = (2, 3, 4)  # tract_moe_ffn(x, wg, w1, w2, w3, ...)


@dataclass(frozen=True)
class WeightUse:
    """One read of a constant: its position kind, the reading node, and the unsqueezes on the way."""

    kind: str
    node: Optional[Node]  # None when the constant is itself a graph output
    via: tuple[Node, ...] = ()

    @property
    def op(self) -> str:
        return self.node.op if self.node is not None else "graph output"


@dataclass
class Weight:
    """A float constant read in at least one weight position, with all of its reads."""

    value: Value
    uses: list[WeightUse]

    @property
    def label(self) -> str:
        return self.value.const.label

    @property
    def kinds(self) -> set[str]:
        return {u.kind for u in self.uses}

    @property
    def static_shape(self) -> Optional[tuple[int, ...]]:
        """The shape as ints, or None if a dimension is symbolic (weights normally are static)."""
        dims = tuple(self.value.shape)
        return dims if all(isinstance(d, int) for d in dims) else None


@dataclass(frozen=True)
class Skip:
    """Why a weight stays as it is; `warn` says whether the user should be told beyond the report."""

    reason: str
    warn: bool = True


def _is_leading_unsqueeze(node: Node) -> bool:
    axes = list(node.attrs.get("axes", []))
    return node.op == "nnef.unsqueeze" and axes == list(range(len(axes)))


def _einsum_reads_as_linear(expr: str, index: int) -> bool:
    """Operand `index` of einsum `expr` is an [N, K] weight contracted on its last axis K
    (e.g. "bsk,nk->bsn", what f32_linear_acc emits): Q4_0 blocks run along K."""
    inputs, _, output = expr.partition("->")
    terms = inputs.split(",")
    if index >= len(terms) or len(terms[index]) != 2:
        return False
    n, k = terms[index]
    others = "".join(t for i, t in enumerate(terms) if i != index)
    return k in others and k not in output and n in output and n not in others


def _classify(node: Node, index: int) -> str:
    if node.op == "nnef.matmul":
        linear = index == 1 and node.attrs.get("transposeB") is True
        return LINEAR if linear else MATMUL
    if node.op == "tract_core.einsum":
        return LINEAR if _einsum_reads_as_linear(node.attrs.get("expr", ""), index) else MATMUL
    if node.op == "tract_transformers.moe_ffn" and index in MOE_EXPERT_INPUTS \
            and node.attrs.get("expert_layout") == "linear":
        return EXPERTS
    if node.op == "tract_core.gather" and index == 0 and node.attrs.get("axis") == 0 \
            and node.attrs.get("datum_type") is not None:
        return EMBEDDING
    return OTHER


def weight_uses(value: Value) -> list[WeightUse]:
    """Every read of `value`, looking through chains of leading-axis unsqueezes."""
    uses: list[WeightUse] = []
    graph = value.graph
    if graph is not None and value in graph.outputs:
        uses.append(WeightUse(OTHER, None))

    def walk(v: Value, via: tuple[Node, ...]) -> None:
        for use in v.uses:
            node = use.node
            if _is_leading_unsqueeze(node):
                out = node.output
                if graph is not None and out in graph.outputs:
                    uses.append(WeightUse(OTHER, None, via + (node,)))
                walk(out, via + (node,))
            else:
                uses.append(WeightUse(_classify(node, use.index), node, via))

    walk(value, ())
    return uses


def find_weights(graph: Graph) -> list[Weight]:
    """Float constants with at least one read in a weight position, in declaration order."""
    found = []
    for v in graph.consts:
        if not v.dtype.is_float:
            continue
        uses = weight_uses(v)
        if any(u.kind in WEIGHT_POSITIONS for u in uses):
            found.append(Weight(v, uses))
    return found


def first_reader(graph: Graph, value: Value) -> Optional[Node]:
    """The first node, in graph order, that reads `value`: where a rewrite inserts dequantisation."""
    readers = {id(u.node) for u in value.uses}
    return next((n for n in graph.nodes if id(n) in readers), None)


class CompressionMethod(abc.ABC):
    """Base of every method. Subclasses set `name`, the `positions` they accept, and `apply`.

    The compress-weights pass calls `refuse(weight)` (a `Skip` with the reason, or None to take
    it), then `apply(graph, weight)`, which stores it compressed, by setting the constant's
    encoding (Q4_0) or by rewriting the graph, and returns the constants that now hold it so the
    report can follow them to disk. `options` is the export's ExportOptions; method settings go
    in `options.extra`. docs/quantization.md has a complete per-channel int8 example.
    """

    name: ClassVar[str] = ""
    positions: ClassVar[frozenset[str]] = frozenset({LINEAR})
    embedding_hint: ClassVar[str] = ""  # appended to the reason an embedding table was skipped
    # Store [K, N] matmul weights as [N, K] (read with transposeB) before choosing, so they are
    # linear weights for this method (blocks along K).
    transposes_kn: ClassVar[bool] = False

    def __init__(self, options: Any = None):
        self.options = options

    @property
    def stored_as(self) -> str:
        """How the report names the storage of a packed weight (the method's name by default)."""
        return self.name

    def refuse(self, weight: Weight) -> Optional[Skip]:
        """Why this method cannot take `weight` (None: it can). The base checks positions."""
        if weight.kinds <= self.positions:
            return None
        kinds = weight.kinds
        others = sorted({u.op for u in weight.uses if u.kind == OTHER})
        if others:
            return Skip(f"also read by {', '.join(others)}, which is not a weight position")
        if MATMUL in kinds:
            return Skip("read by a matmul/einsum in another layout than [N, K] with transposeB")
        if kinds == {EMBEDDING}:
            return Skip(f"embedding table ('{self.name}' does not take embeddings{self.embedding_hint})",
                        warn=False)
        if kinds == {EMBEDDING, LINEAR}:
            return Skip(f"tied: read as an embedding table and as a linear weight; '{self.name}' "
                        f"does not take embeddings, so the shared tensor stays float{self.embedding_hint}")
        return Skip(f"read in positions {sorted(kinds - self.positions)} that '{self.name}' does not take")

    @abc.abstractmethod
    def apply(self, graph: Graph, weight: Weight) -> list[Value]:
        """Store `weight` compressed; return the constants that now hold it."""

    def dequantized(self, tensor: torch.Tensor) -> Optional[torch.Tensor]:
        """The weight the exported model computes with instead of `tensor`, so that `check_io`
        compares tract with PyTorch on the same weights (None: unknown, compare with float)."""
        return None


METHODS: dict[str, type[CompressionMethod]] = {}


def register_method(cls: type[CompressionMethod] | None = None, *, override: bool = False):
    """Class decorator: make a method available as ``ExportOptions(compression=cls.name)``."""

    def add(c: type[CompressionMethod]) -> type[CompressionMethod]:
        if not c.name:
            raise ValueError(f"{c.__name__} must set a `name`")
        if c.name in METHODS and not override:
            raise ValueError(f"compression method {c.name!r} is already registered (override=True replaces it)")
        METHODS[c.name] = c
        return c

    return add(cls) if cls is not None else add


def get_method(name: str, options: Any = None) -> CompressionMethod:
    cls = METHODS.get(name)
    if cls is None:
        raise ExportError(f"unknown compression method {name!r}", [Problem(
            f"known methods: {', '.join(sorted(METHODS))}",
            hint="register your own with @t2ir.compression.methods.register_method (docs/quantization.md)")])
    return cls(options)


def dequantized_weight(method: CompressionMethod, entry: Any, tensor: torch.Tensor) -> Optional[torch.Tensor]:
    """What the export computes with in place of `tensor` (the report `entry` of a packed weight).
    A [K, N] weight stored transposed ([N, K], see transpose_kn_weights) is packed in that layout."""
    if tensor.dim() == 2 and list(tensor.shape) != list(entry.shape) and list(tensor.shape[::-1]) == list(entry.shape):
        new = method.dequantized(tensor.t())
        return None if new is None else new.t()
    return method.dequantized(tensor)


def reference_weights(module: torch.nn.Module, report: Any) -> dict[str, torch.Tensor]:
    """For each packed weight of `report` found in `module` (by state_dict name), the tensor the
    export computes with; for `torch.func.functional_call(module, ...)` in check_io."""
    method = get_method(report.method)
    named = dict(module.named_parameters(remove_duplicate=False))
    named.update(module.named_buffers(remove_duplicate=False))
    swapped = {}
    for entry in report.packed:
        tensor = named.get(entry.name)
        new = dequantized_weight(method, entry, tensor.detach()) if tensor is not None else None
        if new is not None:
            swapped[entry.name] = new
    return swapped


@register_method
class Q4_0(CompressionMethod):
    """GGML Q4_0 blocks along K for linear and MoE expert weights: 4.5 bits per weight, read
    natively by tract (tract_moe_ffn has a Q4_0 kernel for its "linear" layout)."""

    name = "q4_0"
    positions = frozenset({LINEAR, EXPERTS})
    transposes_kn = True
    stored_as = "q4_0"  # the encoding the emitter looks up
    embedding_hint = "; 'q4_0_with_embeddings' packs it"

    def refuse(self, weight: Weight) -> Optional[Skip]:
        skip = super().refuse(weight)
        if skip is not None:
            return skip
        shape = weight.static_shape
        if shape is None:
            return Skip(f"symbolic shape {list(weight.value.shape)}")
        rank = 3 if weight.kinds == {EXPERTS} else 2
        if len(shape) != rank:
            return Skip(f"rank {len(shape)}: Q4_0 packs [N, K] matrices and [E, N, K] expert stacks")
        if shape[1] % Q4_0_BLOCK:
            return Skip(f"K = {shape[1]} is not a multiple of {Q4_0_BLOCK}")
        return None

    def dequantized(self, tensor: torch.Tensor) -> torch.Tensor:
        return q4_0_reference(tensor)

    def apply(self, graph: Graph, weight: Weight) -> list[Value]:
        # The value keeps its float type: tract reads the packed .dat as a float variable of
        # the logical shape, and matmul/gather (with its datum_type) consume it as is.
        weight.value.const.encoding = self.stored_as
        return [weight.value]


@register_method
class Q4_0WithEmbeddings(Q4_0):
    """Q4_0 for linear weights and embedding tables (a tied table is packed once, for both)."""

    name = "q4_0_with_embeddings"
    positions = frozenset({LINEAR, EMBEDDING, EXPERTS})


@register_method
class Q4_0WithEmbeddings99(Q4_0WithEmbeddings):
    """Like q4_0_with_embeddings, each block scaled by the 0.99 quantile of its |values|
    (torch_to_nnef's min_max_q4_0_with_embeddings_99): the largest values are clipped."""

    name = "q4_0_with_embeddings_99"
    stored_as = "q4_0_p99"
    percentile = 0.99

    def dequantized(self, tensor: torch.Tensor) -> torch.Tensor:
        return q4_0_reference(tensor, self.percentile)
