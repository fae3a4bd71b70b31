"""Trace each distinct decoder layer once and stamp its copies, so tracing time does not grow
with the model's depth.

torch.export spends most of an LLM export's trace on the decoder layers, which are usually the
same computation with other weights. So the model is traced with a few representative layers
only: for every group of layers that look alike (same module structure, same plain attributes,
same per-layer config values), its first two members, plus the first and the last layer. Each
group's traced members must come out identical in the IR (ops, attributes, types, wiring; only
weight names, cache names and value names differ), which catches code that branches on a layer's
position. The missing layers are then copies of a traced member of their group, wired in order,
with their own weights (renamed, read from the checkpoint by name) and their own cache IO. When
anything does not fit (no layer list, a layer that reads more than its predecessor's hidden
state), `StampingError` says why and the caller traces every layer instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from t2ir.ir import Graph, Loc, Node, Value
from t2ir.printer import attrs_key

PLAIN = (int, float, str, bool, type(None))


class StampingError(Exception):
    """The traced layers do not allow stamping the others (the reason is the message)."""


@dataclass
class LayerPlan:
    """Which decoder layers are traced, and which traced layer each other layer copies."""

    path: str                          # module path of the layer list, e.g. "model.layers"
    count: int                         # number of decoder layers
    traced: list[int]                  # indices traced, ascending
    copies: dict[int, int] = field(default_factory=dict)  # stamped index -> traced index it copies
    groups: list[list[int]] = field(default_factory=list)


def find_layer_list(model: torch.nn.Module, count: int) -> Optional[tuple[str, torch.nn.ModuleList]]:
    """The ModuleList holding the `count` decoder layers (the longest one of that length)."""
    found = [(path, m) for path, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == count]
    return found[0] if len(found) == 1 else None


def _plain(v: Any) -> bool:
    return isinstance(v, PLAIN) or isinstance(v, (tuple, list)) and all(isinstance(x, PLAIN) for x in v)


def layer_signature(layer: torch.nn.Module, index: int, per_layer: dict[str, Any]) -> str:
    """What must agree for two layers to trace alike: module classes, plain attributes (an int
    equal to the layer's own position is its index, not structure), parameter and buffer shapes,
    and the per-layer config values at this index."""
    parts: list[Any] = [sorted(per_layer.items())]
    for name, sub in layer.named_modules():
        attrs = sorted((k, v) for k, v in vars(sub).items()
                       if not k.startswith("_") and _plain(v) and not (type(v) is int and v == index))
        tensors = [(n, tuple(t.shape), str(t.dtype)) for n, t in
                   [*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)]]
        parts.append((name, type(sub).__qualname__, attrs, tensors))
    return repr(parts)


def plan_layers(model: torch.nn.Module, config: Any) -> Optional[LayerPlan]:
    """None when stamping saves nothing (few layers) or the layers cannot be found."""
    count = getattr(config, "num_hidden_layers", None)
    if not isinstance(count, int) or count <= 3:
        return None
    found = find_layer_list(model, count)
    if found is None:
        return None
    path, layers = found
    per_layer_fields = {k: v for k, v in vars(config).items() if isinstance(v, (list, tuple)) and len(v) == count}
    groups: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        sig = layer_signature(layer, i, {k: v[i] for k, v in per_layer_fields.items()})
        groups.setdefault(sig, []).append(i)
    traced = {0, count - 1}
    for members in groups.values():  # two members past the first layer, so each group can be compared
        traced.update([i for i in members if i > 0][:2] or members[:1])
    if len(traced) >= count:
        return None
    plan = LayerPlan(path, count, sorted(traced), groups=list(groups.values()))
    for members in plan.groups:
        source = next(i for i in members if i in traced and i > 0)
        plan.copies.update({i: source for i in members if i not in traced})
    return plan


class _Untraced(torch.nn.Module):
    """Stands in for a layer that is not traced: hands its input hidden state on unchanged, in
    the structure the traced layers return, so the traced layer after it reads the hidden state
    of the traced layer before it. The layer list keeps its length, so code that indexes
    per-layer settings by loop position (layer types, rotary variants) sees the right layer.
    Attributes the model reads off a layer come from the real one."""

    def __init__(self, real: torch.nn.Module, last_output: Callable[[], Any]):
        super().__init__()
        self.__dict__["_real"] = real  # not a submodule: its weights are not traced
        self.__dict__["_last_output"] = last_output  # a function: export must not see tensors here

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_real"], name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        template = self.__dict__["_last_output"]()
        if isinstance(template, torch.Tensor):
            return hidden
        if isinstance(template, (tuple, list)) and template and isinstance(template[0], torch.Tensor):
            return type(template)([hidden, *template[1:]])
        raise StampingError(f"a decoder layer returns {type(template).__name__}, not a hidden state")


@contextlib.contextmanager
def only_traced_layers(model: torch.nn.Module, plan: LayerPlan) -> Iterator[None]:
    """Within the block the model runs the traced layers only; the others pass their input on."""
    parent_path, _, attr = plan.path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    full = getattr(parent, attr)
    outputs: list = []
    hooks = [full[i].register_forward_hook(lambda _m, _a, out: outputs.append(out)) for i in plan.traced]
    setattr(parent, attr, torch.nn.ModuleList(
        [layer if i in plan.traced else _Untraced(layer, lambda: outputs[-1]) for i, layer in enumerate(full)]))
    try:
        yield
    finally:
        setattr(parent, attr, full)
        for hook in hooks:
            hook.remove()


# ---- stamping in the IR ---------------------------------------------------------------------

@dataclass
class _Layer:
    index: int
    nodes: list[Node]
    chain_in: Optional[Value] = None   # the previous layer's hidden state, as this layer reads it
    chain_out: Optional[Value] = None  # what the next layer (or the model's tail) reads


class _Stamper:
    def __init__(self, graph: Graph, plan: LayerPlan, new_tensor: Callable[[str], Any]):
        self.g, self.plan = graph, plan
        self.new_tensor = new_tensor
        self.prefix = plan.path + "."
        self.layers = {i: _Layer(i, []) for i in plan.traced}
        owner = {}
        for node in graph.nodes:
            i = self.layer_of(node.loc.module)
            if i is not None:
                if i not in self.layers:
                    raise StampingError(f"a node of {self.prefix}{i} was traced although the layer was not")
                self.layers[i].nodes.append(node)
                owner[id(node)] = i
        self.owner = owner
        self.fingerprints = _fingerprints(graph)
        for i in plan.traced:
            if not self.layers[i].nodes:
                raise StampingError(f"no node carries the module path {self.prefix}{i}")
        self._find_chains()

    def layer_of(self, module: str) -> Optional[int]:
        if not module.startswith(self.prefix):
            return None
        head = module[len(self.prefix):].split(".", 1)[0]
        return int(head) if head.isdigit() else None

    def _find_chains(self) -> None:
        """Each traced layer reads one value made by the traced layer before it (its hidden state)."""
        order = self.plan.traced
        for prev, cur in zip(order, order[1:]):
            made_by_prev = {id(o): o for n in self.layers[prev].nodes for o in n.outputs}
            read = {id(v): v for n in self.layers[cur].nodes for v in n.inputs if id(v) in made_by_prev}
            if len(read) != 1:
                raise StampingError(f"layer {cur} reads {len(read)} values of layer {prev}, not one hidden state")
            chain = next(iter(read.values()))
            self.layers[prev].chain_out = self.layers[cur].chain_in = chain
        last = self.layers[order[-1]]
        out = {id(o): o for n in last.nodes for o in n.outputs
               if any(self.owner.get(id(u.node)) is None for u in o.uses)}
        if len(out) != 1:
            raise StampingError(f"the last layer hands {len(out)} values to the model's tail, not one hidden state")
        last.chain_out = next(iter(out.values()))

    # a layer's computation with its index abstracted, to compare two traced layers
    def canonical(self, layer: _Layer) -> list:
        local = {id(o): (k, j) for k, n in enumerate(layer.nodes) for j, o in enumerate(n.outputs)}
        rows = []
        for n in layer.nodes:
            refs = tuple(self._ref(v, layer, local) for v in n.inputs)
            outs = tuple((str(o.type), o.is_output, o is layer.chain_out) for o in n.outputs)
            rows.append((n.op, refs, attrs_key(n.attrs), outs))
        return rows

    def _ref(self, v: Value, layer: _Layer, local: dict) -> tuple:
        if id(v) in local:
            return ("node",) + local[id(v)]
        if v is layer.chain_in:
            return ("chain",)
        if v.const is not None:
            return ("const", self.generic(v.const.label, layer.index))
        if v.is_input and v.name.endswith(f"_{layer.index}"):
            return ("cache", v.name[: -len(str(layer.index))])
        return ("shared", self.fingerprints[id(v)])  # what it computes: per-iteration copies compare equal

    def generic(self, name: str, index: int) -> str:
        return name.replace(f"{self.prefix}{index}.", f"{self.prefix}#.")

    def specific(self, name: str, index: int) -> str:
        return name.replace(f"{self.prefix}#.", f"{self.prefix}{index}.")

    def check_groups(self) -> None:
        for members in self.plan.groups:
            traced = [i for i in members if i in self.layers and i > 0]
            forms = {i: self.canonical(self.layers[i]) for i in traced}
            for i in traced[1:]:
                if forms[i] != forms[traced[0]]:
                    raise StampingError(f"layers {traced[0]} and {i} look alike but trace differently "
                                        "(the model's code depends on the layer's position)")

    def stamp(self) -> None:
        order = self.plan.traced
        for j in sorted(self.plan.copies):
            nxt = next(t for t in order if t > j)
            prev = self.layers.get(j - 1)
            if prev is None or prev.chain_out is None:
                raise StampingError(f"layer {j - 1}'s hidden state is not known when stamping layer {j}")
            self.layers[j] = self._copy(self.layers[self.plan.copies[j]], j, prev.chain_out,
                                        before=self.layers[nxt].nodes[0])
        for t in order[1:]:  # traced layers now follow a stamped one: read its hidden state
            cur, prev = self.layers[t], self.layers[t - 1]
            if prev.chain_out is not cur.chain_in:
                for n in cur.nodes:
                    for k, v in enumerate(n.inputs):
                        if v is cur.chain_in:
                            n.set_input(k, prev.chain_out)
                cur.chain_in = prev.chain_out

    def _copy(self, source: _Layer, j: int, chain_in: Value, before: Node) -> _Layer:
        mapped: dict[int, Value] = {id(source.chain_in): chain_in}
        layer = _Layer(j, [], chain_in)
        with self.g.inserting_before(before):
            for n in source.nodes:
                inputs = [mapped.get(id(v)) or self._outside(v, source.index, j, mapped) for v in n.inputs]
                loc = Loc(self.specific(self.generic(n.loc.module, source.index), j), n.loc.file, n.loc.line)
                hint = n.outputs[0].name if n.outputs else n.op
                copy = self.g.add_node(n.op, inputs, [o.type for o in n.outputs], dict(n.attrs), name=hint, loc=loc)
                for old, new in zip(n.outputs, copy.outputs):
                    mapped[id(old)] = new
                    if old.is_output:
                        self._add_output(old, new, source.index, j)
                layer.nodes.append(copy)
        layer.chain_out = mapped[id(source.chain_out)]
        return layer

    def _outside(self, v: Value, src: int, j: int, mapped: dict[int, Value]) -> Value:
        """A value the copied layer reads from outside itself: its own weight, its own cache
        input, or a value every layer shares (masks, rotary tables)."""
        if v.const is not None and self.generic(v.const.label, src) != v.const.label:
            label = self.specific(self.generic(v.const.label, src), j)
            new = next((c for c in self.g.consts if c.const.label == label), None)
            if new is None:
                source, dtype, shape = self.new_tensor(label)
                if tuple(shape) != tuple(v.shape):
                    raise StampingError(f"weight {label} has shape {list(shape)}, its copy source {list(v.shape)}")
                new = self.g.add_const(label, v.type.with_dtype(dtype), source, label=label)
            mapped[id(v)] = new
            return new
        if v.is_input and v.name.endswith(f"_{src}"):
            name = v.name[: -len(str(src))] + str(j)
            new = self.g.add_input(name, v.type)
            mapped[id(v)] = new
            return new
        return v

    def _add_output(self, old: Value, new: Value, src: int, j: int) -> None:
        name = old.name[: -len(str(src))] + str(j) if old.name.endswith(f"_{src}") else None
        if name is None or self.g.has_name(name):
            raise StampingError(f"graph output %{old.name} of layer {src} has no per-layer name to copy")
        self.g.rename(new, name)
        self.g.set_outputs([*self.g.outputs, new])


def _fingerprints(graph: Graph) -> dict[int, int]:
    """A hash of what each value computes (op, attributes, inputs' hashes; names of inputs and
    weights), so a value the model recomputes for every layer compares equal to its copies."""
    fp: dict[int, int] = {id(v): hash(("input", v.name)) for v in graph.inputs}
    fp.update({id(v): hash(("const", v.const.label)) for v in graph.consts})
    for n in graph.nodes:
        base = (n.op, attrs_key(n.attrs), tuple(fp[id(v)] for v in n.inputs))
        for i, o in enumerate(n.outputs):
            fp[id(o)] = hash((base, i, str(o.type)))
    return fp


def stamp_layers(graph: Graph, plan: LayerPlan, new_tensor: Callable[[str], Any],
                 input_order: list[str], output_order: list[str]) -> None:
    """Check the traced layers of each group alike, stamp the others, and put the graph's IO in
    `input_order` / `output_order` (the full model's signature). `new_tensor(name)` gives a
    stamped weight's (source, dtype, shape)."""
    stamper = _Stamper(graph, plan, new_tensor)
    stamper.check_groups()
    stamper.stamp()
    by_name = {v.name: v for v in graph.inputs}
    if sorted(by_name) != sorted(input_order):
        raise StampingError(f"stamped inputs {sorted(by_name)} are not the model's {sorted(input_order)}")
    graph.set_inputs([by_name[n] for n in input_order])
    outs = {v.name: v for v in graph.outputs}
    graph.set_outputs([outs[n] for n in output_order])

