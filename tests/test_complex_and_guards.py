"""Two things torch.export hands over that tract has no word for: complex tensors (carried as
real pairs) and guards torch could not prove (checked on many sizes)."""

from __future__ import annotations

import pytest
import torch

import t2ir
from t2ir.frontend.deferred_asserts import UnprovenGuardError, check_deferred_asserts
from tests.helpers import export_and_compare


class ComplexRotary(torch.nn.Module):
    """Rotary embedding written the Llama 4 / DeepSeek-V2 way."""

    def forward(self, x, angles):
        freqs = torch.polar(torch.ones_like(angles), angles)                      # [S, D/2] complex
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))    # [B, H, S, D/2]
        rotated = pairs * freqs[None, None].transpose(2, 3).transpose(2, 3)  # (axes of complex views)
        mixed = rotated * torch.conj(rotated[:, :1]) + rotated - rotated * 0.5
        return torch.view_as_real(mixed).flatten(3)


def test_complex_values_are_carried_as_real_pairs(tmp_path):
    result = export_and_compare(ComplexRotary(), (torch.randn(2, 3, 5, 8), torch.randn(5, 4)), tmp_path,
                                input_names=["x", "angles"], dynamic_axes={"x": {2: "S"}, "angles": {0: "S"}},
                                more_args=[(torch.randn(2, 3, 9, 8), torch.randn(9, 4))])
    assert "aten.polar" not in result.source_ops


def test_a_complex_output_is_refused_by_name(tmp_path):
    class ComplexOut(torch.nn.Module):
        def forward(self, angles):
            return torch.polar(torch.ones_like(angles), angles)

    with pytest.raises(t2ir.ExportError, match="complex64"):
        t2ir.export(ComplexOut(), (torch.randn(4),), tmp_path / "m")


def _deferred(module) -> torch.export.ExportedProgram:
    return torch.export.export(module, (torch.randn(4),), dynamic_shapes=({0: torch.export.Dim("S", min=1)},),
                               strict=False, prefer_deferred_runtime_asserts_over_guards=True)


class Guarded(torch.nn.Module):
    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def forward(self, x):
        n = x.shape[0]
        return x + 1 if n * min(self.cap, self.cap * n) == self.cap * n else x - 1


class Capped(torch.nn.Module):
    def forward(self, x):
        return x + 1 if min(x.shape[0], 100) == x.shape[0] else x - 1


def test_a_true_guard_torch_cannot_prove_passes():
    """S * min(64, 64 S) == 64 S holds for every S >= 1 (Llama 4's chunked attention)."""
    with pytest.raises(torch._dynamo.exc.UserError):
        torch.export.export(Guarded(64), (torch.randn(4),), dynamic_shapes=({0: torch.export.Dim("S", min=1)},),
                            strict=False)
    check_deferred_asserts(_deferred(Guarded(64)))


def test_a_guard_that_fails_for_some_sizes_is_refused_with_them():
    ep = _deferred(Capped())
    symbol = str(next(iter(ep.range_constraints)))
    with pytest.raises(UnprovenGuardError, match=r"Eq\(Min\(100, S\), S\) fails at S = 127"):
        check_deferred_asserts(ep, {symbol: "S"})
