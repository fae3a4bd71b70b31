"""The custom-operator registry: the worked example of docs/custom_ops.md runs as written (its
code blocks are executed from the document), built-in translations can be overridden, NNEF
fragments are written and run in tract, and translator failures are located."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest
import torch

import t2ir
from t2ir.ops.registry import REGISTRY
from t2ir.passes.lower_to_nnef import TranslationError

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom_ops.md"


def doc_blocks() -> list[str]:
    """The ```python blocks of docs/custom_ops.md, in order."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def graph_text(path: Path) -> str:
    with tarfile.open(path) as tar:
        return tar.extractfile("graph.nnef").read().decode()


def op_names(result: t2ir.ExportResult) -> list[str]:
    return [n.op for n in result.graph.nodes]


@pytest.fixture(autouse=True)
def clean_registry():
    """Each test's registrations (and overrides) are undone afterwards (the built-in ones, which
    load on first need, are loaded before the registry is saved)."""
    from t2ir.ops.builtins import ensure_registered

    ensure_registered()
    saved, modules = dict(REGISTRY.ops), dict(REGISTRY.modules)
    yield
    REGISTRY.ops.clear()
    REGISTRY.ops.update(saved)
    REGISTRY.modules.clear()
    REGISTRY.modules.update(modules)


@pytest.fixture(scope="module")
def doc_op() -> dict:
    """Block 1 of the doc: the torch.library op (defined once per process, like in a user's code)."""
    namespace: dict = {}
    exec(compile(doc_blocks()[0], str(DOC), "exec"), namespace)
    return namespace


def test_doc_has_the_expected_blocks():
    blocks = doc_blocks()
    assert len(blocks) == 7
    assert "torch.library.custom_op" in blocks[0] and "register_fake" in blocks[0]
    assert "@t2ir.register_op(\"mylib::scaled_tanh\")" in blocks[1]
    assert "check_io=True" in blocks[2]
    assert "override=True" in blocks[3] and "register_nnef_op" in blocks[4]
    assert "@t2ir.register_module(RunningSum)" in blocks[5] and "dynamic_axes" in blocks[6]


def test_module_hook(tmp_path, monkeypatch):
    """Blocks 6-7: the hooked module exports with a dynamic time axis and runs at other lengths;
    without the hook, torch.export pins the length."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(doc_blocks()[5], str(DOC), "exec"), namespace)
    exec(compile(doc_blocks()[6], str(DOC), "exec"), namespace)
    result, module = namespace["result"], namespace["RunningSum"]()
    assert str(result.graph.inputs[0].type) == "f32[batch, time, 3]" and result.check[0].max_abs_diff < 1e-5
    from t2ir.tract_run import load_runnable, run_tract

    x = torch.randn(3, 9, 3)
    got = run_tract(load_runnable(result.path), [x.numpy()])[0]
    torch.testing.assert_close(torch.from_numpy(got), module(x), atol=1e-5, rtol=0)
    REGISTRY.modules.pop(namespace["RunningSum"])
    with pytest.raises(t2ir.ExportError, match="axis 1 .* was specialised"):
        t2ir.export(module, (torch.randn(2, 5, 3),), tmp_path / "no_hook", input_names=["x"],
                    dynamic_axes={"x": {0: "batch", 1: "time"}})


def test_module_hook_registration_rules():
    class Base(torch.nn.Module):
        def forward(self, x):
            return x

    class Keeps(Base):
        pass

    class Overrides(Base):
        def forward(self, x):
            return x * 2

    t2ir.register_module(Base)(lambda module, x: x)
    assert REGISTRY.module_hook(Keeps()) is not None and REGISTRY.module_hook(Overrides()) is None
    with pytest.raises(ValueError, match="already has a module hook"):
        t2ir.register_module(Base)(lambda module, x: x)
    assert REGISTRY.module_hook(torch.nn.LSTM(2, 2)).origin == "builtin"


def test_worked_example(doc_op, tmp_path, monkeypatch):
    """Blocks 1-3 exactly as in the doc: the custom op exports and runs in tract."""
    monkeypatch.chdir(tmp_path)
    namespace = dict(doc_op)
    for block in doc_blocks()[1:3]:
        exec(compile(block, str(DOC), "exec"), namespace)
    result = namespace["result"]
    assert result.check and result.check[0].max_abs_diff < 1e-4
    assert "mylib.scaled_tanh" not in op_names(result)
    text = graph_text(tmp_path / "scaled_tanh.nnef.tgz")
    assert re.search(r"= tanh\(", text) and re.search(r"= mul\(\w+, 2\.0\);", text)
    # the same model at another batch size, in tract
    from t2ir.tract_run import load_runnable, run_tract

    x = torch.randn(6, 8)
    model = namespace["Model"]
    torch.manual_seed(0)
    m = model()
    again = t2ir.export(m, (torch.randn(3, 8),), tmp_path / "again.nnef.tgz", input_names=["x"],
                        dynamic_axes={"x": {0: "batch"}})
    got = run_tract(load_runnable(again.path), [x.numpy()])[0]
    torch.testing.assert_close(torch.from_numpy(got), m(x).detach(), atol=1e-5, rtol=0)


def test_override_builtin_translation(doc_op, tmp_path):
    """Block 4 of the doc replaces aten.gelu; the export uses it, and the registry says so."""
    with pytest.raises(ValueError, match="already has a translation.*override=True"):
        t2ir.register_op("aten.gelu")(lambda node, ctx: None)
    namespace = dict(doc_op)  # the doc's blocks share their imports
    exec(compile(doc_blocks()[3], str(DOC), "exec"), namespace)
    assert REGISTRY.lookup("aten.gelu").origin == "user"
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU())
    x = torch.randn(5, 4) * 3
    result = t2ir.export(model, (x,), tmp_path / "gelu.nnef.tgz")
    assert "tract_core.gelu_approx" in op_names(result) and "tract_core.erf" not in op_names(result)
    from t2ir.tract_run import load_runnable, run_tract

    got = run_tract(load_runnable(result.path), [x.numpy()])[0]
    want = torch.nn.functional.gelu(model[0](x), approximate="tanh").detach()
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=0)


def test_override_as_the_first_thing_a_program_does(tmp_path):
    """In a fresh process, a user's override registered before t2ir has loaded its built-in
    translations wins over them (they load first), and a registration that clashes with a
    built-in one is refused even then."""
    import subprocess
    import sys

    script = f"""
import torch, t2ir
try:
    t2ir.register_op("aten.relu")(lambda node, ctx: None)
    raise SystemExit("a clash with a built-in translation was accepted")
except ValueError:
    pass
@t2ir.register_op("aten.gelu", override=True)
def gelu_as_tanh(node, ctx):
    return ctx.emit("tract_core.gelu_approx", [ctx.args["self"]], ctx.out)
result = t2ir.export(torch.nn.GELU(), (torch.randn(3, 4),), {str(tmp_path / "gelu.nnef.tgz")!r})
print(sorted({{node.op for node in result.graph.nodes}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tract_core.gelu_approx" in done.stdout and "tract_core.erf" not in done.stdout


def test_builtin_is_back_after_override():
    """The fixture restored the registry: later exports use the built-in translation again."""
    assert REGISTRY.lookup("aten.gelu").origin == "builtin"


def test_fragment(doc_op, tmp_path, monkeypatch):
    """Block 5: the translator calls an NNEF fragment; the emitter writes its definition once,
    before the graph, and tract runs it."""
    monkeypatch.chdir(tmp_path)
    namespace = dict(doc_op)
    exec(compile(doc_blocks()[4], str(DOC), "exec"), namespace)
    scaled_tanh = namespace["scaled_tanh"]

    class TwoCalls(torch.nn.Module):
        def forward(self, x):
            return scaled_tanh(x, 2.0) + scaled_tanh(x * 3, 0.5)

    x = torch.randn(3, 8)
    result = t2ir.export(TwoCalls(), (x,), tmp_path / "frag.nnef.tgz", input_names=["x"],
                         dynamic_axes={"x": {0: "batch"}}, check_io=True)
    assert result.check[0].max_abs_diff < 1e-5
    text = graph_text(result.path)
    assert text.count("fragment scaled_tanh(") == 1
    assert text.index("fragment scaled_tanh(") < text.index("graph main(")
    assert len(re.findall(r"= scaled_tanh\(\w+, scale = (2\.0|0\.5)\);", text)) == 2


def test_fragment_with_f16_and_two_outputs(tmp_path):
    """A fragment with two results, in an f16 model."""
    t2ir.register_nnef_op("fragment.t2ir_test_minmax", ["x", "y"], [], fragment="""
fragment t2ir_test_minmax( x: tensor<scalar>, y: tensor<scalar> ) -> ( lo: tensor<scalar>, hi: tensor<scalar> )
{
    lo = min(x, y);
    hi = max(x, y);
}""")

    @t2ir.register_op("aten.aminmax")
    def aminmax_as_fragment(node, ctx):
        # (x.min(dim), x.max(dim)) over the last axis of size 2, via the fragment on its two columns
        x = ctx.args["self"]
        col_t = x.type.with_shape(tuple(x.shape[:-1]) + (1,))
        a = ctx.emit("nnef.slice", [x], col_t, axes=[x.rank - 1], begin=[0], end=[1])
        b = ctx.emit("nnef.slice", [x], col_t, axes=[x.rank - 1], begin=[1], end=[2])
        lo, hi = ctx.emit_multi("fragment.t2ir_test_minmax", [a, b], [col_t, col_t])
        return [ctx.emit("nnef.squeeze", [v], o.type, axes=[x.rank - 1]) for v, o in zip((lo, hi), node.outputs)]

    class MinMax(torch.nn.Module):
        def forward(self, x):
            lo, hi = torch.aminmax(x, dim=-1)
            return hi - lo

    x = torch.randn(3, 2).half()
    result = t2ir.export(MinMax(), (x,), tmp_path / "minmax.nnef.tgz", input_names=["x"],
                         dynamic_axes={"x": {0: "batch"}}, check_io=True, atol=1e-3)
    assert "( " in graph_text(result.path) and "t2ir_test_minmax(" in graph_text(result.path)


def test_fragment_calling_a_fragment(tmp_path):
    """A fragment whose body calls another registered fragment brings its definition along."""
    t2ir.register_nnef_op("fragment.t2ir_test_double", ["x"], [], fragment="""
fragment t2ir_test_double( x: tensor<scalar> ) -> ( y: tensor<scalar> ) { y = add(x, x); }""")
    t2ir.register_nnef_op("fragment.t2ir_test_quad", ["x"], [], fragment="""
fragment t2ir_test_quad( x: tensor<scalar> ) -> ( y: tensor<scalar> ) { y = t2ir_test_double(t2ir_test_double(x)); }""")

    @t2ir.register_op("t2ir_test::twice", override=True)
    def as_quad(node, ctx):
        return ctx.emit("fragment.t2ir_test_quad", [ctx.args["x"]], ctx.out)

    x = torch.randn(2, 3)
    result = t2ir.export(Twice(), (x,), tmp_path / "quad.nnef.tgz")
    text = graph_text(result.path)
    assert text.count("fragment t2ir_test_double(") == 1
    assert text.index("fragment t2ir_test_double(") < text.index("fragment t2ir_test_quad(") < text.index("graph")
    from t2ir.tract_run import load_runnable, run_tract

    got = run_tract(load_runnable(result.path), [x.numpy()])[0]
    torch.testing.assert_close(torch.from_numpy(got), x * 4 + 1)


def test_registration_errors():
    with pytest.raises(ValueError, match="NNEF-level name"):
        t2ir.register_op("nnef.relu")
    with pytest.raises(ValueError, match="already declared"):
        t2ir.register_nnef_op("nnef.relu", ["x"])
    with pytest.raises(ValueError, match="start with one of"):
        t2ir.register_nnef_op("mylib.thing", ["x"])


@torch.library.custom_op("t2ir_test::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@twice.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Twice(torch.nn.Module):
    def forward(self, x):
        return twice(x) + 1  # the op's line: the error must point here


TWICE_LINE = Twice.forward.__code__.co_firstlineno + 1


def test_translation_error_is_located(tmp_path):
    @t2ir.register_op("t2ir_test::twice")
    def refuse(node, ctx):
        raise TranslationError("twice only works on f16", "call .half() first")

    with pytest.raises(t2ir.ExportError) as info:
        t2ir.export(Twice(), (torch.randn(2, 3),), tmp_path / "m.nnef.tgz")
    msg = str(info.value)
    assert "t2ir_test.twice: twice only works on f16" in msg and "call .half() first" in msg
    assert f"test_custom_ops.py:{TWICE_LINE}" in msg
    assert not (tmp_path / "m.nnef.tgz").exists()


def test_translator_bug_is_located(tmp_path):
    """An exception inside a translator names the op, the translator and the source line."""
    @t2ir.register_op("t2ir_test::twice")
    def broken(node, ctx):
        return ctx.args["no_such_argument"]

    with pytest.raises(t2ir.ExportError) as info:
        t2ir.export(Twice(), (torch.randn(2, 3),), tmp_path / "m.nnef.tgz")
    msg = str(info.value)
    assert "t2ir_test.twice" in msg and "broken raised KeyError" in msg
    assert f"test_custom_ops.py:{TWICE_LINE}" in msg and "docs/custom_ops.md" in msg


def test_translator_with_literal_int_operand(tmp_path):
    """An integer operand built with scalar_or_value (tract reads bare int literals as sizes)."""
    from t2ir.ops.aten._util import scalar_or_value

    @t2ir.register_op("t2ir_test::twice")
    def twice_int(node, ctx):
        x = ctx.args["x"]
        two = scalar_or_value(ctx, 2, x.dtype)
        return ctx.emit("nnef.mul", [x, two], ctx.out)

    result = t2ir.export(Twice(), (torch.arange(6).reshape(2, 3),), tmp_path / "int.nnef.tgz",
                         check_io=True)
    assert result.check[0].max_abs_diff == 0
