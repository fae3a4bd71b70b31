"""The operator registry: one entry per op, read by the lowering pass, verifier and emitter.

Two kinds of entries:
- source-level ops (`aten.linear`, `mylib.my_op`) have a *translator* that rewrites a node into
  NNEF-level nodes;
- NNEF-level ops (`nnef.conv`, `tract_core.gather`, `fragment.my_fragment`) have a *signature*
  that tells the emitter how to write the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from t2ir.ir import Node

# Namespaces whose ops are written to NNEF as they are; everything else must be translated.
NNEF_NAMESPACES = ("nnef", "tract_core", "tract_transformers", "fragment")
# Node attribute naming the node's last inputs that the NNEF call passes by keyword, in order
# (`tract_moe_ffn(..., wg_bias = b)`): optional tensor parameters that are not trailing positionals.
TENSOR_KEYWORDS = "tensor_keywords"


@dataclass(frozen=True)
class NnefSignature:
    """How an NNEF-level op is called: positional tensor parameters, then keyword attributes.

    A parameter written `*name` takes a list of tensors (`concat([a, b], axis = 1)`); one
    written `?name` is an optional trailing tensor (left out when no input is left). A
    parameter found in the node's attributes is written as a literal instead of a value.

    Ops that take tensors inside structured attributes (tract's `scan`: `full = [("w", w)]`)
    list those attributes in `input_refs`: each is a list of tuples whose second item is the
    index of one of the node's inputs, written as that input's name. `fragment_refs` are
    attributes naming a fragment op (`body = "fragment.my_step"`), whose definition the
    emitter writes too.
    """

    params: tuple[str, ...]
    attrs: frozenset[str] = frozenset()
    fragment: Optional[str] = None  # NNEF `fragment` definition written into the document
    input_refs: frozenset[str] = frozenset()
    fragment_refs: frozenset[str] = frozenset()

    @property
    def variadic(self) -> bool:
        return any(p.startswith("*") for p in self.params)


@dataclass
class OpDef:
    name: str
    translate: Optional[Callable] = None
    signature: Optional[NnefSignature] = None
    origin: str = "builtin"


@dataclass
class ModuleHook:
    """How instances of a module class are traced: `trace(module, *args, **kwargs)` runs in
    place of their `forward` while t2ir traces (never in eager runs)."""

    module_type: type
    trace: Callable
    origin: str = "builtin"


@dataclass
class Registry:
    ops: dict[str, OpDef] = field(default_factory=dict)
    modules: dict[type, ModuleHook] = field(default_factory=dict)

    def module_hook(self, module) -> Optional[ModuleHook]:
        """The hook of the nearest registered class of `module`, unless a subclass in between
        has its own `forward` (then the hook would skip the subclass's code)."""
        for cls in type(module).__mro__:
            hook = self.modules.get(cls)
            if hook is not None:
                return hook if type(module).forward is cls.forward else None
        return None

    def lookup(self, op: str) -> Optional[OpDef]:
        """Exact name first (`aten.add.Tensor`), then the overload packet (`aten.add`)."""
        if op in self.ops:
            return self.ops[op]
        parts = op.split(".")
        if len(parts) == 3:
            return self.ops.get(".".join(parts[:2]))
        return None


REGISTRY = Registry()


def canonical_op_name(name: str) -> str:
    """`mylib::my_op` and `mylib.my_op` both name the IR op `mylib.my_op`."""
    name = name.replace("::", ".")
    if name.endswith(".default"):
        name = name[: -len(".default")]
    return name


def register_op(name: str, *, override: bool = False, origin: str = "user"):
    """Decorator registering a translator for a source-level op.

    The translator receives the IR node and a `LowerContext` and returns the values that
    replace the node's outputs (one value or a sequence), built with `ctx.emit(...)`.

        @t2ir.register_op("mylib::scaled_tanh")
        def scaled_tanh(node, ctx):
            x = ctx.args["x"]   # the op's schema names: tensors are values, the rest literals
            return ctx.emit("nnef.mul", [ctx.emit("nnef.tanh", [x], x.type)], ctx.out,
                            y=float(ctx.args["scale"]))

    Registering an op that already has a translation fails unless `override=True`, which is
    how a built-in translation is replaced.
    """
    key = canonical_op_name(name)
    if key.split(".")[0] in NNEF_NAMESPACES:
        raise ValueError(f"{name!r} is an NNEF-level name; use register_nnef_op for those")
    _builtins_first(origin)

    def wrap(fn: Callable) -> Callable:
        existing = REGISTRY.ops.get(key)
        if existing is not None and existing.translate is not None and not override:
            raise ValueError(
                f"op {key!r} already has a translation ({existing.origin}); "
                "pass override=True to replace it"
            )
        REGISTRY.ops[key] = OpDef(key, translate=fn, origin=origin)
        return fn

    return wrap


def _builtins_first(origin: str) -> None:
    """A user's registration is checked against the built-in ones and may override them, so those
    are loaded first (they load lazily, and loading them after a user's override would clash)."""
    if origin != "builtin":
        from t2ir.ops.builtins import ensure_registered

        ensure_registered()


def builtin(*names: str):
    """Register one translator for several built-in ops (used by t2ir's own op modules)."""

    def wrap(fn: Callable) -> Callable:
        for n in names:
            register_op(n, origin="builtin")(fn)
        return fn

    return wrap


def register_module(module_type: type, *, override: bool = False, origin: str = "user"):
    """Decorator: trace every instance of `module_type` (and of subclasses that keep its
    `forward`) through `fn(module, *args, **kwargs)` instead of its `forward`.

    For modules torch.export cannot trace as you want (a loop over a dynamic length, say):
    `fn` calls one custom operator (`torch.library.custom_op`, with a fake implementation)
    that carries the module's weights and settings, and a translator registered for that op
    (`register_op`) writes it in NNEF. Eager runs (and `check_io`'s reference) still use the
    module's own `forward`.

        @t2ir.register_module(MyCell)
        def trace_my_cell(module, x):
            return torch.ops.mylib.my_cell(x, module.weight, module.alpha)
    """

    _builtins_first(origin)

    def wrap(fn: Callable) -> Callable:
        existing = REGISTRY.modules.get(module_type)
        if existing is not None and not override:
            raise ValueError(f"{module_type.__qualname__} already has a module hook ({existing.origin}); "
                             "pass override=True to replace it")
        REGISTRY.modules[module_type] = ModuleHook(module_type, fn, origin)
        return fn

    return wrap


def register_nnef_op(name: str, params: Sequence[str], attrs: Sequence[str] = (),
                     fragment: Optional[str] = None, *, override: bool = False, origin: str = "user",
                     input_refs: Sequence[str] = (), fragment_refs: Sequence[str] = ()) -> None:
    """Declare an NNEF-level op (a tract operator, or a fragment defined in NNEF text).

    `fragment` is the NNEF text of a `fragment` definition; the emitter writes it once into
    every document that calls the op:

        t2ir.register_nnef_op("fragment.axpy", ["x", "y"], ["a"],
            fragment="fragment axpy( x: tensor<scalar>, y: tensor<scalar>, a: scalar ) "
                     "-> ( z: tensor<scalar> ) { z = add(mul(x, a), y); }")
    """
    key = canonical_op_name(name)
    if key.split(".")[0] not in NNEF_NAMESPACES:
        raise ValueError(f"NNEF-level op names start with one of {NNEF_NAMESPACES}: got {name!r}")
    _builtins_first(origin)
    if key in REGISTRY.ops and not override:
        raise ValueError(f"NNEF op {key!r} is already declared")
    sig = NnefSignature(tuple(params), frozenset(attrs) | frozenset(input_refs) | frozenset(fragment_refs), fragment,
                        frozenset(input_refs), frozenset(fragment_refs))
    REGISTRY.ops[key] = OpDef(key, signature=sig, origin=origin)


# tract operators whose NNEF name is not `<registry>_<op>`
_CALL_NAMES = {"tract_transformers.moe_ffn": "tract_moe_ffn"}


def nnef_call_name(op: str) -> str:
    """IR name -> NNEF name: `nnef.conv` -> `conv`, `tract_core.gather` -> `tract_core_gather`."""
    if op in _CALL_NAMES:
        return _CALL_NAMES[op]
    ns, name = op.split(".", 1)
    if ns in ("nnef", "fragment"):
        return name
    return f"{ns}_{name}"


def is_nnef_level(op: str) -> bool:
    return op.split(".", 1)[0] in NNEF_NAMESPACES


def check_node(node: Node) -> list[str]:
    """Schema problems of one node (only NNEF-level ops have a checked schema)."""
    if not is_nnef_level(node.op):
        return []
    entry = REGISTRY.lookup(node.op)
    if entry is None or entry.signature is None:
        return [f"unknown NNEF-level op {node.op!r}"]
    sig = entry.signature
    problems = []
    bare = [p.lstrip("*?") for p in sig.params]
    unknown = set(node.attrs) - sig.attrs - set(bare) - {TENSOR_KEYWORDS}
    if unknown:
        problems.append(f"unknown attributes {sorted(unknown)}")
    if sig.input_refs:
        refs = sorted(ref[1] for a in sig.input_refs for ref in node.attrs.get(a, ()))
        if refs != list(range(len(node.inputs))):
            problems.append(f"its {', '.join(sorted(sig.input_refs))} refer to inputs {refs}, "
                            f"not to each of its {len(node.inputs)} inputs once")
        return problems
    tensor_params = [p for p in sig.params if p.lstrip("*?") not in node.attrs]
    required = [p for p in tensor_params if not p.startswith("?")]
    positional = len(node.inputs) - len(node.attrs.get(TENSOR_KEYWORDS, ()))
    if not sig.variadic and not len(required) <= positional <= len(tensor_params):
        problems.append(f"expects {len(tensor_params)} inputs, has {positional}")
    return problems
