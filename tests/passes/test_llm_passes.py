"""Edge cases of the LLM passes that goldens do not show: errors, and patterns left alone on purpose."""

from __future__ import annotations

import pytest

from t2ir.ops.builtins import ensure_registered
from t2ir.options import ExportOptions
from t2ir.parser import parse_ir
from t2ir.passes.fold_kv_cache import FoldKvCache, KvCacheLayoutError
from t2ir.passes.fuse_attention import FuseAttention
from t2ir.verify import verify

HEADER = "graph main\nsymbol S\nsymbol P\n"


def run(pass_cls, text: str, **options):
    ensure_registered()
    graph = parse_ir(text)
    result = pass_cls().run(graph, ExportOptions(**options))
    verify(graph)
    return graph, result


def cache_graph(past: str, present: str, dim: int, symbols: str = HEADER) -> str:
    """One layer whose key and value caches are concatenated on `dim` and read by sdpa."""
    return symbols + f"""input %input_ids : i64[1, S]
input %q : f32[1, 2, S, 8]
input %past_k : f32{past}
input %past_v : f32{past}
input %k : f32[1, 2, S, 8]
input %v : f32[1, 2, S, 8]
%kc = aten.cat(%past_k, %k, dim={dim}) : f32{present}
%vc = aten.cat(%past_v, %v, dim={dim}) : f32{present}
%o = aten.scaled_dot_product_attention(%q, %kc, %vc) : f32[1, 2, S, 8]
output %o, %kc, %vc
"""


def test_fold_kv_cache_records_layers():
    graph, result = run(FoldKvCache, cache_graph("[1, 2, P, 8]", "[1, 2, P + S, 8]", 2))
    assert [v.name for v in graph.inputs] == ["input_ids", "q", "k", "v", "in_cache_key_0", "in_cache_value_0"]
    assert [v.name for v in graph.outputs] == ["outputs", "out_cache_key_0", "out_cache_value_0"]
    assert result.stats == {"layers": 1, "kv_heads": 2, "head_dim": 8}
    assert (result.past, result.seq) == ("P", "S")
    assert result.layers[0].key == ("in_cache_key_0", "out_cache_key_0")


def test_fold_kv_cache_rejects_positions_first_layout():
    text = cache_graph("[1, P, 2, 8]", "[1, P + S, 2, 8]", 1).replace("[1, 2, S, 8]", "[1, S, 2, 8]")
    with pytest.raises(KvCacheLayoutError) as e:
        run(FoldKvCache, text)
    msg = str(e.value)
    assert "%past_k" in msg and "%past_v" in msg and "[1, kv_heads, P, head_dim]" in msg


def test_fold_kv_cache_rejects_static_or_undeclared_past():
    with pytest.raises(KvCacheLayoutError, match="symbolic past length"):
        run(FoldKvCache, cache_graph("[1, 2, 5, 8]", "[1, 2, S + 5, 8]", 2))
    with pytest.raises(KvCacheLayoutError, match="symbol P .* not declared"):
        run(FoldKvCache, cache_graph("[1, 2, P, 8]", "[1, 2, P + S, 8]", 2, symbols="graph main\nsymbol S\n"))


def test_fold_kv_cache_ignores_graphs_without_cache():
    graph, result = run(FoldKvCache, "graph main\ninput %x : f32[2, 3]\n%y = aten.relu(%x) : f32[2, 3]\noutput %y\n")
    assert not result.changed and result.stats == {}


CAUSAL_MASK = """%qi = aten.arange(end=S) : i64[S]
%qp = aten.add.Tensor(%qi, other={q_offset}) : i64[S]
%q1 = aten.unsqueeze(%qp, dim=1) : i64[S, 1]
%ki = aten.arange(end=P + S) : i64[P + S]
%k1 = aten.unsqueeze(%ki, dim=0) : i64[1, P + S]
%mask = aten.le.Tensor(%k1, %q1) : bool[S, P + S]
"""


def attention_graph(q_offset: str, is_causal: bool = False, skv: str = "P + S") -> str:
    return HEADER + f"""input %q : f32[1, 2, S, 8]
input %k : f32[1, 2, {skv}, 8]
input %v : f32[1, 2, {skv}, 8]
""" + CAUSAL_MASK.format(q_offset=q_offset) + f"""%o = aten.scaled_dot_product_attention(%q, %k, %v, %mask, is_causal={str(is_causal).lower()}) : f32[1, 2, S, 8]
output %o
"""


def test_kv_causal_mask_becomes_causal_attribute():
    graph, result = run(FuseAttention, attention_graph("P"))
    (node,) = [n for n in graph.nodes]
    assert node.op == "t2ir.sdpa" and node.attrs["causal"] is True and len(node.inputs) == 3
    assert result.stats["causal"] == 1


def test_mask_with_other_offset_is_kept():
    """Query positions without the past offset: a top-left causal mask, which is not tract's."""
    graph, result = run(FuseAttention, attention_graph("0"))
    sdpa = [n for n in graph.nodes if n.op == "t2ir.sdpa"]
    assert len(sdpa) == 1 and sdpa[0].attrs["causal"] is False and sdpa[0].inputs[3].name == "mask"
    assert "causal" not in result.stats


def test_top_left_is_causal_with_cache_is_not_fused():
    text = attention_graph("P").replace("%q, %k, %v, %mask, is_causal=false", "%q, %k, %v, is_causal=true")
    graph, result = run(FuseAttention, text)
    assert not result.changed
    assert any(n.op == "aten.scaled_dot_product_attention" for n in graph.nodes)
