"""torch's `scan` higher-order op as tract's scan.

`torch._higher_order_ops.scan.scan(step, init, xs)` exports as one `higher_order.scan` node whose
step is an FX subgraph: step(carries..., slices of xs..., additional inputs...) -> (next
carries..., per-step outputs...). Its length is the size of the scanned axis, so a loop over a
symbolic sequence length stays one op. tract runs such a loop as `tract_core_scan` over a body
fragment; this module lifts the step into a graph of its own, with the fragment's IO, kept by
t2ir.ops.scan_steps (lowered by lower-to-nnef, written by the NNEF emitter), and emits the scan:

    scanned   x{k}      [1, ...] slices of the (axis-0-first) xs, squeezed inside the body
    state     state{k}  the carries, updated from state{k}_next each step
    full      full{k}   the additional inputs (weights the step reads), whole (lowering may add
                        const{k}: the tensors the lowered step made for itself)
    outputs   state{k}_next (last step's) then y{k} (stacked along axis 0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from t2ir.errors import Problem
from t2ir.ir import Graph, Value
from t2ir.ops.scan_steps import add_step

if TYPE_CHECKING:
    from t2ir.frontend.fx import FxLifter

SCAN = torch.ops.higher_order.scan


def fresh_compile_caches() -> None:
    """Forget torch's compiled step functions before an export: torch.export traces a scan's step
    with dynamo, whose cache keeps the step traced by an earlier export (same code object), and
    the second export of a model then carried a size guard of the first (`S != 64`)."""
    torch._dynamo.reset()


def lift_scan(lifter: FxLifter, node: torch.fx.Node) -> list[Value] | None:
    """The scan node's results (final carries, then stacked outputs) in `lifter`'s graph, or None
    after recording a problem."""
    from t2ir.frontend.fx import node_loc

    step, init, xs, extra = node.args[:4]
    module = lifter.env.get(step)
    carries, scanned, full = (lifter._resolve(list(a)) for a in (init, xs, extra))
    values = [*carries, *scanned, *full]
    if not isinstance(module, torch.fx.GraphModule) or not all(isinstance(v, Value) for v in values):
        lifter.problems.append(Problem("a scan whose step, carries or inputs are not tensors",
                                       "higher_order.scan", node_loc(node)))
        return None
    body = _lift_step(lifter, module, carries, scanned, full)
    if body is None:
        return None
    fragment = add_step(body)
    steps = scanned[0].shape[0]
    ys = list(body.outputs[len(carries):])
    out_types = [c.type for c in carries] + [y.type.with_shape((steps,) + tuple(y.shape[1:])) for y in ys]
    n_x, n_c = len(scanned), len(carries)
    with lifter.g.inserting_before(None):
        scan = lifter.g.add_node(
            "tract_core.scan", [*scanned, *carries, *full], out_types, dict(
                body=fragment,
                scan=[(f"x{k}", k, 0, 1) for k in range(n_x)],
                state=[(f"state{k}", n_x + k, f"state{k}_next") for k in range(n_c)],
                full=[(v.name, n_x + n_c + k) for k, v in enumerate(body.inputs[n_c + n_x:])],
                output=[(f"state{k}_next", "last", 0, 1) for k in range(n_c)]
                + [(f"y{k}", "full", 0, 1) for k in range(len(ys))],
                skip=0, reset_every_turn=1, external_state=0),
            name=node.name, loc=node_loc(node))
    return list(scan.outputs)


def _lift_step(lifter: FxLifter, module: torch.fx.GraphModule, carries: list[Value], scanned: list[Value],
               full: list[Value]) -> Graph | None:
    """The step as a graph with the body fragment's IO (see the module docstring)."""
    from t2ir.frontend.fx import FxLifter

    body = Graph("scan_step")
    sub = FxLifter.for_subgraph(lifter, module.graph, body)
    params = [n for n in module.graph.nodes if n.op == "placeholder"]
    inputs = [body.add_input(f"state{k}", c.type) for k, c in enumerate(carries)]
    for k, x in enumerate(scanned):
        one = body.add_input(f"x{k}", x.type.with_shape((1,) + tuple(x.shape[1:])))
        inputs.append(body.op("nnef.squeeze", [one], x.type.with_shape(tuple(x.shape[1:])), axes=[0]))
    inputs += [body.add_input(f"full{k}", v.type) for k, v in enumerate(full)]
    if len(params) != len(inputs):
        lifter.problems.append(Problem(f"a scan step with {len(params)} inputs for {len(inputs)} tensors",
                                       "higher_order.scan"))
        return None
    sub.env.update(zip(params, inputs))
    results = sub.lift_nodes()
    if results is None:
        return None
    outs = []
    for k, v in enumerate(results):
        name = f"state{k}_next" if k < len(carries) else f"y{k - len(carries)}"
        if k >= len(carries):
            v = body.op("nnef.unsqueeze", [v], v.type.with_shape((1,) + tuple(v.shape)), axes=[0])
        elif v.producer is None or v in outs:  # a carry passed through: the body still computes it
            v = body.op("nnef.copy", [v], v.type)
        body.rename(v, name)
        outs.append(v)
    body.set_outputs(outs)
    return body
