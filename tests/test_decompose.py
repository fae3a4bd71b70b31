"""The decomposition fallback: ops without a translation, or whose translator refuses a call,
are exported through torch's own decompositions; what cannot be is named as the model called it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import t2ir
from t2ir.errors import TranslationError
from t2ir.ops.registry import REGISTRY
from tests.helpers import export_and_compare


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_untranslated_op_is_decomposed(tmp_path):
    """aten.pixel_shuffle has no translation: torch's decomposition (a view, a permute, a
    view) is exported instead, and holds at another batch and size."""
    assert REGISTRY.lookup("aten.pixel_shuffle") is None
    result = export_and_compare(Fn(lambda x: F.pixel_shuffle(x, 2)), (torch.randn(2, 8, 3, 5),), tmp_path,
                                input_names=["x"], dynamic_axes={"x": {0: "n", 3: "w"}},
                                more_args=[(torch.randn(1, 8, 3, 7),)])
    assert "aten.pixel_shuffle" not in result.source_ops and "aten.permute" in result.source_ops


def test_refused_call_is_decomposed(tmp_path):
    """A translator that refuses (TranslationError) hands the op to torch's decomposition."""
    builtin = REGISTRY.ops["aten.hardsigmoid"]

    @t2ir.register_op("aten.hardsigmoid", override=True)
    def refuse(node, ctx):
        raise TranslationError("not today")

    try:
        result = export_and_compare(Fn(lambda x: F.hardsigmoid(x * 4)), (torch.randn(3, 6),), tmp_path)
    finally:
        REGISTRY.ops["aten.hardsigmoid"] = builtin
    assert "aten.hardsigmoid" not in result.source_ops


def test_a_decomposition_into_untranslatable_pieces_is_reported_as_the_op_called(tmp_path):
    """torch decomposes lgamma into prims.lgamma, which has no translation either: the error
    names aten.lgamma, the op the model called."""
    with pytest.raises(t2ir.UnsupportedOpsError) as info:
        t2ir.export(Fn(torch.lgamma), (torch.rand(3) + 1,), tmp_path / "m")
    assert {p.op for p in info.value.problems} == {"aten.lgamma"}
    assert "prims" not in str(info.value)


def test_in_place_ops_are_functionalized(tmp_path):
    class InPlace(torch.nn.Module):
        def forward(self, x):
            y = x * 2
            y.relu_()
            y[:, 0] = 1.0
            return y.add_(x)

    result = export_and_compare(InPlace(), (torch.randn(3, 4),), tmp_path, input_names=["x"],
                                dynamic_axes={"x": {0: "n"}}, more_args=[(torch.randn(5, 4),)])
    assert not any(op.endswith("_") for op in result.source_ops)


def test_decomposing_keeps_meta_weights_beside_cpu_buffers():
    """An LLM is traced with its weights on meta and its computed buffers on the CPU: torch's
    retrace refuses the mix, so it runs on CPU stand-ins, and the decomposed program gets the
    meta weights back (nothing materialised)."""
    from t2ir.frontend.decompose import decompose_untranslated, untranslated_nodes
    from t2ir.frontend.fx import op_name
    from t2ir.ops.builtins import ensure_registered

    ensure_registered()

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)
            self.register_buffer("scale", torch.arange(4.0), persistent=False)

        def forward(self, x):
            return torch.multiply(self.proj(x), self.scale)

    ep = torch.export.export(Scaled(), (torch.randn(3, 4),))
    for name in ep.state_dict:
        ep.state_dict[name] = torch.nn.Parameter(ep.state_dict[name].to("meta"))
    assert {op_name(n.target) for n in untranslated_nodes(ep)} == {"aten.multiply.Tensor"}
    out = decompose_untranslated(ep)
    assert untranslated_nodes(out) == []
    assert all(t.device.type == "meta" for t in out.state_dict.values())
    assert all(t.device.type == "meta" for t in ep.state_dict.values())



def test_autocast_region_is_inlined(tmp_path):
    """timm's EfficientViT computes its attention in a region with autocast turned off:
    torch.export keeps it as a higher-order op over a submodule, which one retrace inlines."""

    class Attention(torch.nn.Module):
        def forward(self, q, k):
            with torch.autocast(device_type="cpu", enabled=False):
                scores = q.float() @ k.float().transpose(-1, -2)
            return scores.softmax(-1)

    q, k = torch.randn(2, 5, 8), torch.randn(2, 6, 8)
    export_and_compare(Attention(), (q, k), tmp_path, input_names=["q", "k"],
                       dynamic_axes={"q": {0: "b", 1: "n"}, "k": {0: "b", 1: "m"}},
                       more_args=[(torch.randn(3, 7, 8), torch.randn(3, 4, 8))])


def test_ops_left_undecomposed_end_the_search(tmp_path):
    """svd_lowrank draws random numbers and calls linalg ops that nothing translates: the
    fallback gives up on them once (it used to retrace forever) and the error names them."""
    import signal

    def expire(*_):
        raise TimeoutError("the decomposition fallback did not finish")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    try:
        with pytest.raises(t2ir.UnsupportedOpsError) as info:
            t2ir.export(Fn(lambda x: torch.svd_lowrank(x, q=2)[0]), (torch.randn(6, 4),), tmp_path / "m")
    finally:
        signal.alarm(0)
    assert {"aten._linalg_svd", "aten.linalg_qr"} <= {p.op for p in info.value.problems}
