"""lower-to-nnef: translates every source-level op (aten.*, user ops) into NNEF-level ops using
the registry, and reports every op that has no translation in one error."""

from __future__ import annotations

from typing import Any

from t2ir.errors import Problem, TranslationError, TranslationRefusedError, UnsupportedOpsError
from t2ir.ir import Graph, Node, Value
from t2ir.ops.context import LowerContext
from t2ir.ops.registry import REGISTRY, is_nnef_level, register_nnef_op
from t2ir.ops.scan_steps import scan_step
from t2ir.options import ExportOptions
from t2ir.passes.base import Pass, PassResult


def _as_values(result) -> list[Value]:
    if isinstance(result, Value):
        return [result]
    return list(result)


def translate_node(graph: Graph, node: Node, translator, options: Any) -> None:
    ctx = LowerContext(graph, node, options)
    outs = _as_values(translator(node, ctx))
    if len(outs) != len(node.outputs):
        raise TranslationError(f"translator returned {len(outs)} values for {len(node.outputs)} outputs")
    for old, new in zip(node.outputs, outs):
        if new.dtype != old.dtype or new.rank != old.rank:
            raise TranslationError(
                f"translator produced {new.type} where {old.type} was expected (a t2ir bug)")
    names = [o.name for o in node.outputs]
    graph.replace_node(node, outs)
    created = set(map(id, ctx.created))
    for name, new in zip(names, outs):
        if id(new) in created and not new.is_output:
            graph.rename(new, name)  # the result keeps the name of the value it replaces
        keep_output_name(graph, new, name)


def keep_output_name(graph: Graph, v: Value, name: str) -> None:
    """A graph output keeps its user-given name after `v` took its place."""
    if not v.is_output or v.name == name:
        return
    if v.producer is None or v.output_uses > 1 or v.name in {o.name for o in graph.outputs if o is not v}:
        with graph.inserting_before(None):
            copy = graph.op("nnef.copy", [v], v.type, name=name)
        graph.set_output(graph.outputs.index(v), copy)
        graph.rename(copy, name)
    else:
        graph.rename(v, name)


def _inputs_text(node: Node) -> str:
    """` (inputs f32[B, 8], i64[3])`: the tensor types the op was called with."""
    if not node.inputs:
        return ""
    return " (inputs " + ", ".join(str(v.type) for v in node.inputs) + ")"


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class LowerToNnef(Pass):
    name = "lower-to-nnef"
    ensures = frozenset({"nnef-level"})

    def run(self, graph: Graph, options: ExportOptions) -> PassResult:
        unsupported: list[Problem] = []
        failed: list[Problem] = []
        refused: set[str] = set()
        count = 0
        for node in graph.nodes:
            if node.op == "tract_core.scan":
                count += self._lower_step(graph, node, options)
            if is_nnef_level(node.op):
                continue
            entry = REGISTRY.lookup(node.op)
            if entry is None or entry.translate is None:
                unsupported.append(Problem(f"no translation registered{_inputs_text(node)}", node.op, node.loc))
                continue
            try:
                translate_node(graph, node, entry.translate, options)
                count += 1
            except TranslationError as e:
                failed.append(Problem(e.what, node.op, node.loc, e.hint))
                refused.add(node.op)
            except Exception as e:  # a bug in a translator: still say which op and where
                failed.append(Problem(
                    f"its translator {_qualname(entry.translate)} raised {type(e).__name__}: {e}", node.op,
                    node.loc, "fix the translator (user translators: see docs/custom_ops.md)"
                    if entry.origin != "builtin" else "this is a t2ir bug; please report it with this message"))
        if unsupported:
            raise UnsupportedOpsError(unsupported + failed)
        if failed:
            raise TranslationRefusedError("some operators could not be translated to NNEF:", failed, refused)
        return PassResult(count > 0, {"lowered": count})

    def _lower_step(self, graph: Graph, node: Node, options: ExportOptions) -> int:
        """The step a scan lifted from torch's scan runs (t2ir.ops.scan_steps), lowered once; the
        tensors it made for itself become body inputs `const{k}`, which this scan feeds from
        constants of its own graph (a fragment has no variables)."""
        step = scan_step(node.attrs["body"])
        if step is None:
            return 0
        lowered = 0
        if not step.lowered:
            body = step.graph
            lowered = self.run(body, options).stats.get("lowered", 0)
            for k, v in enumerate(list(body.consts)):
                param = body.add_input(f"const{k}", v.type)
                v.replace_all_uses_with(param)
                body.remove_const(v)
                step.hoisted.append((param.name, v.type, v.const))
            register_nnef_op(node.attrs["body"], [v.name for v in body.inputs], override=True, origin="builtin")
            step.lowered = True
        fed = {name for name, _ in node.attrs["full"]}
        for name, type_, const in step.hoisted:
            if name not in fed:
                v = graph.add_const(f"{node.outputs[0].name}_{name}", type_, const.source, label=const.label,
                                    encoding=const.encoding)
                node.attrs["full"] = [*node.attrs["full"], (name, len(node.inputs))]
                node.set_inputs([*node.inputs, v])
        return lowered
