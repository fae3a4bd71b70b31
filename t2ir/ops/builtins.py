"""Registers t2ir's built-in translations and NNEF-level signatures (once, on first need)."""

from __future__ import annotations


def ensure_registered() -> None:
    """Import the modules whose decorators fill the registry (idempotent: imports run once)."""
    import t2ir.ops.aten  # noqa: F401  (aten.* translations)
    import t2ir.ops.nnef_ops  # noqa: F401  (NNEF-level signatures)
    import t2ir.ops.transformer  # noqa: F401  (t2ir.rms_norm, t2ir.rope, t2ir.silu)
    import t2ir.ops.experts  # noqa: F401  (t2ir.expert_linear)
    import t2ir.ops.fft  # noqa: F401  (t2ir.fft)
    import t2ir.ops.rnn_hooks  # noqa: F401  (module hooks of torch's recurrent layers)
