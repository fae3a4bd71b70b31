"""Mixture-of-experts layers traced as one op per expert projection.

transformers 5 stores a layer's experts stacked (`gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]`)
and lets the model choose how they run (`experts_implementation`). Its default (`grouped_mm`)
sorts tokens by expert with data-dependent sizes, and its eager loop uses `nonzero`; neither
exports. t2ir registers its own implementation, "t2ir", in transformers' `ExpertsInterface`: the
model's router, gating code (`_apply_gate`, clamps included) and weighting are traced as they
are, and each expert projection becomes one `t2ir::expert_linear` call, which passes can fuse
into tract's MoE operator and which otherwise lowers to a gather of the selected experts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from t2ir.ops.experts import expert_linear

IMPLEMENTATION = "t2ir"


def experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """transformers' experts interface: hidden [T, H], top_k_index / top_k_weights [T, k] -> [T, H]."""
    prefix = "gate_up" if self.has_gate else "up"
    up = expert_linear(hidden_states, top_k_index, getattr(self, f"{prefix}_proj"),
                       getattr(self, f"{prefix}_proj_bias") if self.has_bias else None, self.is_transposed)
    hidden = self._apply_gate(up) if self.has_gate else self.act_fn(up)
    down = expert_linear(hidden, top_k_index, self.down_proj, self.down_proj_bias if self.has_bias else None,
                         self.is_transposed)
    if self.has_post_expert_norm:
        down = self.post_expert_norm(down)
    return (down * top_k_weights.unsqueeze(-1)).sum(dim=1).to(hidden_states.dtype)


def register() -> str:
    """Make "t2ir" a valid `experts_implementation` (idempotent); returns its name."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if IMPLEMENTATION not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, experts_forward)
    return IMPLEMENTATION


@contextlib.contextmanager
def experts_traced_by_t2ir(model: torch.nn.Module) -> Iterator[None]:
    """Run a model's experts through t2ir's implementation for a while (models built elsewhere)."""
    config = getattr(model, "config", None)
    current = getattr(config, "_experts_implementation", None)
    switch = current not in (None, IMPLEMENTATION) and model._can_set_experts_implementation()
    if switch:
        model.set_experts_implementation(register())
    try:
        yield
    finally:
        if switch:
            model.set_experts_implementation(current)
