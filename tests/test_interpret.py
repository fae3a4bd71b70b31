"""The reference interpreter (`t2ir.interpret`) against PyTorch eager on lifted graphs (aten ops run
through torch.ops) and against tract on exported graphs (NNEF-level ops run by our torch
implementations), on the op table: a representative slice by default, every case when slow."""

from __future__ import annotations

import zlib

import pytest
import torch

import t2ir
from t2ir import driver
from t2ir.interpret import InterpretError, Interpreter, reference_op
from t2ir.interpret.ops import REFERENCE
from t2ir.tract_run import load_runnable, run_tract
from tests.op_cases import CASES, SIZES, Case
from tests.test_ops import TORCH_DTYPE, WRAPPERS, check, dynamic_axes, eager, make_input

# one or two cases per op family, for the default run (the slow run takes them all)
QUICK = {"add_broadcast", "floor_divide_int", "where_scalar", "masked_fill_neg_inf", "bitwise_int", "gelu_tanh",
         "hardswish", "log_softmax", "matmul_broadcast_batch", "linear", "einsum_ellipsis", "conv2d_stride_groups",
         "conv_transpose2d_dil_groups", "max_pool2d_pad_dil_ceil", "avg_pool2d_pad_exclude", "max_pool2d_indices",
         "group_norm", "rms_norm_hf", "var_mean", "cumsum_bool", "topk_smallest", "argmin_keepdim", "reshape_size_arith",
         "slice_dynamic_negative", "index_tensor_multi", "gather", "pad_reflect_2d", "roll_dynamic", "triu_k",
         "arange_dynamic_step", "to_long_trunc", "sdpa_gqa", "sdpa_float_mask", "sdpa_causal_cross",
         "adaptive_max_pool2d", "isnan_isinf"}


def _params(cases):
    return [pytest.param(c, dt, id=f"{c.id}-{dt}", marks=() if c.id in QUICK else pytest.mark.slow)
            for c in cases for dt in c.dtypes]


def _inputs(case: Case, dtype: str):
    """The module, inputs to trace with, and inputs at other sizes of the dynamic axes."""
    torch.manual_seed(zlib.crc32(case.id.encode()))
    module = WRAPPERS[len(case.inputs)](case).eval().to(TORCH_DTYPE[dtype])
    axes = dynamic_axes(case)
    gen = torch.Generator().manual_seed(zlib.crc32(case.id.encode()))
    traced = tuple(make_input(s, SIZES[0], TORCH_DTYPE[dtype], gen) for s in case.inputs)
    sizes = {**SIZES[1], **{k: SIZES[0][k] for k in case.static}} if axes else SIZES[0]
    args = tuple(make_input(s, sizes, TORCH_DTYPE[dtype], gen) for s in case.inputs)
    graph = t2ir.lift(module, traced, input_names=[f"x{i}" for i in range(len(args))], dynamic_axes=axes)
    return module, graph, args


@pytest.mark.parametrize("case,dtype", _params(CASES))
def test_interpreter_runs_lifted_graphs_as_eager(case: Case, dtype: str) -> None:
    module, graph, args = _inputs(case, dtype)
    for i, (o, w) in enumerate(zip(Interpreter(graph).outputs(list(args)), eager(module, args))):
        check(o.numpy(), w, dtype, case, f"{case.id}[{dtype}] output {i}: lifted graph vs eager")


@pytest.mark.parametrize("case,dtype", _params([c for c in CASES if c.id in QUICK]))
def test_interpreter_runs_exports_as_tract(case: Case, dtype: str, tmp_path) -> None:
    """(tests/test_ops.py checks this for every case of the table, on its own exports.)"""
    _, graph, args = _inputs(case, dtype)
    run = driver.compile_graph(graph, t2ir.ExportOptions())
    path = driver.write(graph, tmp_path / "m.nnef.tgz", run)
    got = run_tract(load_runnable(path), [a.numpy() for a in args])
    for i, (g, o) in enumerate(zip(got, Interpreter(graph).outputs(list(args)))):
        check(g, o, dtype, case, f"{case.id}[{dtype}] output {i}: tract vs the interpreter on the export")


def test_values_are_kept_on_request_and_freed_otherwise():
    g = t2ir.parse_ir("graph g\ninput %x : f32[S]\n%y = aten.relu(%x) : f32[S]\n%z = aten.neg(%y) : f32[S]\n"
                      "output %z\n")
    x = torch.tensor([-1.0, 2.0, -3.0])
    assert set(Interpreter(g).run([x])) == {"z"}
    values = Interpreter(g).run([x], keep=True)
    assert torch.equal(values["y"], torch.relu(x)) and torch.equal(values["z"], -torch.relu(x))
    seen = []
    Interpreter(g).run([x], on_value=lambda node, v, t: seen.append((node.op, v.name)))
    assert seen == [("aten.relu", "y"), ("aten.neg", "z")]


def test_unknown_ops_and_bad_shapes_are_clear_errors():
    g = t2ir.parse_ir("graph g\ninput %x : f32[2]\n%y = fragment.mystery(%x) : f32[2]\noutput %y\n")
    with pytest.raises(InterpretError, match="no reference implementation.*reference_op"):
        Interpreter(g).run([torch.ones(2)])
    g = t2ir.parse_ir("graph g\ninput %x : f32[2]\n%y = mylib.nothing(%x) : f32[2]\noutput %y\n")
    with pytest.raises(InterpretError, match="neither a PyTorch op"):
        Interpreter(g).run([torch.ones(2)])
    g = t2ir.parse_ir("graph g\ninput %x : f32[2]\n%y = nnef.tile(%x, repeats=[2]) : f32[2]\noutput %y\n")
    with pytest.raises(InterpretError, match=r"shape \[4\], the IR declares f32\[2\]"):
        Interpreter(g).run([torch.ones(2)])


def test_user_reference_for_a_fragment():
    g = t2ir.parse_ir("graph g\ninput %x : f32[2]\ninput %y : f32[2]\n%z = fragment.axpy(%x, %y, a=3.0) : f32[2]\n"
                      "output %z\n")
    try:
        reference_op("fragment.axpy")(lambda c: c.args[0] * c.attr("a") + c.args[1])
        [z] = Interpreter(g).outputs([torch.ones(2), torch.arange(2.0)])
    finally:
        REFERENCE.pop("fragment.axpy")
    assert torch.equal(z, torch.tensor([3.0, 4.0]))


def test_symbols_are_solved_from_expressions_and_node_outputs():
    """An input declared `2*T` binds T; a symbol a node introduces (U) is bound from its output."""
    g = t2ir.parse_ir("graph g\nsymbol B\nsymbol T\nsymbol U\ninput %x : f32[B, 2*T]\n"
                      "%y = nnef.reshape(%x, shape=[0, -1, 4]) : f32[B, U, 4]\n"
                      "%z = nnef.reshape(%y, shape=[B, 4*U]) : f32[B, 2*T]\noutput %z\n")
    x = torch.randn(3, 8)
    assert torch.equal(Interpreter(g).outputs([x])[0], x)
    with pytest.raises(InterpretError, match="declared"):
        Interpreter(g).outputs([torch.randn(3, 7)])
