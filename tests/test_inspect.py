"""`t2ir dump` opens everything t2ir writes; `t2ir.diff` / `t2ir diff` compare IRs structurally."""

from __future__ import annotations

import collections
import tarfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import t2ir
from t2ir.cli import _register, app
from t2ir.parser import parse_ir

_register()
runner = CliRunner()


def cli(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def counts(text: str) -> collections.Counter:
    return collections.Counter(n.op for n in parse_ir(text).nodes)


class Block(torch.nn.Module):
    """Attention written out (fused by fuse-attention) plus an MLP, in named submodules."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))

    def forward(self, x):
        q, k, v = self.qkv(x).reshape(1, -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * 8 ** -0.5
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, -1, 16)
        return self.mlp(a) + x


@pytest.fixture(scope="module")
def block_exports(tmp_path_factory):
    """The block exported twice (attention fused into tract's sdpa and not), the first one with its
    pass dumps."""
    root = tmp_path_factory.mktemp("block")
    x = torch.randn(1, 5, 16)
    module = Block().eval()
    fused = t2ir.export(module, (x,), root / "fused.nnef.tgz", dump_ir=root / "dumps",
                        options=t2ir.ExportOptions(attention="sdpa"))
    plain = t2ir.export(module, (x,), root / "plain", options=t2ir.ExportOptions(fuse_attention=False))
    return root, fused, plain


def test_dump_opens_every_kind_of_output(block_exports, llm_export):
    root, fused, plain = block_exports
    out, dumps, _ = llm_export
    final = str(fused.graph)
    assert cli("dump", str(root / "fused.nnef.tgz")) == final                  # a model archive
    assert cli("dump", str(root / "plain")) == str(plain.graph)                # a model folder
    assert cli("dump", str(root / "dumps")) == final                           # a --dump-ir folder: its last pass
    with tarfile.open(out / "model" / "model.nnef.tgz") as tar:               # an export-llm folder
        assert cli("dump", str(out)) == tar.extractfile("graph.t2ir").read().decode()
    attention = sorted(dumps.glob("*-fuse-attention.t2ir"))[0]
    assert cli("dump", str(dumps), "--after", "fuse-attention") == attention.read_text()
    assert cli("dump", str(attention)) == attention.read_text()               # a dump file
    assert cli("dump", str(dumps), "--after", "0") == (dumps / "00-lift.t2ir").read_text()


def test_dump_errors_name_the_choices(block_exports, tmp_path):
    root, _, _ = block_exports
    out = cli("dump", str(root / "dumps"), "--after", "cleanup", code=2)
    assert "ran 2 times" in out and "01-cleanup" in out
    assert "the dumps are: 00-lift" in cli("dump", str(root / "dumps"), "--after", "nope", code=2)
    assert "--dump-ir folder" in cli("dump", str(root / "fused.nnef.tgz"), "--after", "lift", code=2)
    assert "holds no t2ir IR" in cli("dump", str(tmp_path), code=2)


def test_dump_is_plain_in_pipes_and_coloured_on_request(block_exports):
    root, _, _ = block_exports
    assert "\x1b[" not in cli("dump", str(root / "plain"))
    coloured = cli("dump", str(root / "plain"), "--color", "always")
    assert "\x1b[" in coloured
    assert "\x1b[" not in cli("dump", "--stats", str(root / "plain"))


def test_diff_between_two_passes_finds_the_fusion(block_exports):
    root, _, _ = block_exports
    before, after = sorted((root / "dumps").glob("0[34]-*.t2ir"))
    assert after.name == "04-fuse-attention.t2ir"
    d = t2ir.diff(before, after)
    ca, cb = counts(before.read_text()), counts(after.read_text())
    assert {c.op: (c.before, c.after) for c in d.op_counts} == {op: (ca[op], cb[op]) for op in set(ca) | set(cb)}
    [sdpa] = d.fused
    assert sdpa.before.op == "aten.matmul" and sdpa.after.op == "t2ir.sdpa"
    # what it absorbed: the scores matmul, the scale and the softmax, each gone from the graph
    removed = {n.name: n.op for n in d.removed}
    assert {removed[n] for n in sdpa.fused} >= {"aten.matmul", "aten.softmax.int"}
    assert set(sdpa.fused) <= set(removed)
    assert d.unchanged + len(d.changed) + len(d.removed) == sum(ca.values())
    assert d.unchanged + len(d.changed) + len(d.added) == sum(cb.values())
    assert d.status("b")[sdpa.name] == "fused"


def test_diff_between_two_exports(block_exports):
    _, fused, plain = block_exports
    d = t2ir.diff(plain.graph, fused.graph)
    table = {c.op: c.delta for c in d.op_counts}
    assert table["tract_transformers.sdpa"] == 1 and table["nnef.softmax"] == -1
    assert any(c.after.op == "tract_transformers.sdpa" for c in d.changed)
    assert not t2ir.diff(fused.graph, str(fused.graph))  # identical graphs: nothing to report


def test_diff_matches_renamed_nodes_by_topology():
    a = "graph g\ninput %x : f32[2]\n%y = aten.relu(%x) : f32[2]\n%z = aten.neg(%y) : f32[2]\noutput %z\n"
    b = "graph g\ninput %x : f32[2]\n%r = aten.relu(%x) : f32[2]\n%z = aten.neg(%r) : f32[2]\noutput %z\n"
    d = t2ir.diff(a, b)
    assert d.renamed == {"y": "r"} and not d.added and not d.removed and not d.changed


def test_diff_cli_prints_table_and_fusions(block_exports):
    root, _, _ = block_exports
    out = cli("diff", str(root / "dumps"), "--pass", "fuse-attention")
    assert out.splitlines()[0].split() == ["op", "before", "after", "delta"]
    assert "t2ir.sdpa" in out and "fused %" in out and "1 changed (1 fused)" in out
    text = cli("diff", str(root / "plain"), str(root / "fused.nnef.tgz"), "--text")
    assert "+++ " in text and "tract_transformers.sdpa" in text
    assert "nothing ran before it" in cli("diff", str(root / "dumps"), "--pass", "lift", code=2)


def test_load_ir_is_public(block_exports):
    root, fused, _ = block_exports
    assert str(t2ir.load_ir(Path(root / "fused.nnef.tgz"))) == str(fused.graph)
