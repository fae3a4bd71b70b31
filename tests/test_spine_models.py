"""End to end: MLP, CNN and a transformer encoder block, through both frontends, run in tract
at two values of every dynamic axis, compared with PyTorch eager (f32, atol 1e-4)."""

import pytest
import torch
import torch.nn as nn

import t2ir

from tests.helpers import export_and_compare


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class EncoderBlock(nn.Module):
    """Pre-norm block with nn.MultiheadAttention, GELU MLP and residuals."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class SdpaBlock(nn.Module):
    """Attention written with F.scaled_dot_product_attention and tanh-GELU."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(approximate="tanh"), nn.Linear(2 * d, d))

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(b, s, d))
        return x + self.ff(x)


FRONTENDS = ["export", "jit"]


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_mlp(tmp_path, frontend):
    export_and_compare(MLP(), (torch.randn(3, 16),), tmp_path, more_args=[(torch.randn(7, 16),)],
                       frontend=frontend, input_names=["x"], dynamic_axes={"x": {0: "batch"}})


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_cnn(tmp_path, frontend):
    export_and_compare(CNN(), (torch.randn(2, 3, 16, 16),), tmp_path, more_args=[(torch.randn(5, 3, 16, 16),)],
                       frontend=frontend, input_names=["image"], output_names=["logits"],
                       dynamic_axes={"image": {0: "batch"}})


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_encoder_block(tmp_path, frontend):
    export_and_compare(EncoderBlock(), (torch.randn(2, 5, 32),), tmp_path,
                       more_args=[(torch.randn(3, 9, 32),)], frontend=frontend,
                       input_names=["x"], dynamic_axes={"x": {0: "batch", 1: "S"}})


@pytest.mark.parametrize("attention", ["auto", "sdpa"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_sdpa_block(tmp_path, frontend, attention):
    result = export_and_compare(SdpaBlock(), (torch.randn(2, 6, 32),), tmp_path,
                                more_args=[(torch.randn(1, 11, 32),)], frontend=frontend,
                                input_names=["x"], dynamic_axes={"x": {0: "batch", 1: "S"}},
                                options=t2ir.ExportOptions(attention=attention))
    ops = [n.op for n in result.graph.nodes]
    if attention == "sdpa":  # tract's operator
        assert ops.count("tract_transformers.sdpa") == 1 and "nnef.softmax" not in ops
    else:  # matmuls and a softmax (what auto picks, see docs/benchmarks.md)
        assert ops.count("nnef.softmax") == 1 and "tract_transformers.sdpa" not in ops


def test_scripted_module_through_jit_frontend(tmp_path):
    scripted = torch.jit.script(MLP().eval())
    export_and_compare(scripted, (torch.randn(3, 16),), tmp_path, more_args=[(torch.randn(6, 16),)],
                       frontend="jit", input_names=["x"], dynamic_axes={"x": {0: "batch"}})


def test_weights_keep_their_state_dict_labels_through_jit(tmp_path):
    from t2ir.api import lift

    g = lift(CNN(), (torch.randn(2, 3, 16, 16),), frontend="jit")
    assert {v.const.label for v in g.consts} >= {"features.0.weight", "head.weight", "head.bias"}
