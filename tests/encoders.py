"""Any masked-LM encoder transformers ships, made tiny, exported with `t2ir.export` and checked in
tract with a padded batch. Shared by the test suite (a few) and bench/sweep_encoders.py (all):

    model, config = build_masked_lm("bert")        # the config class's defaults, shrunk
    max_diff = export_and_check(model, config, tmp / "out")
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from architectures import TooLarge, build_random_eager, tiny_config  # noqa: F401 (TooLarge: for callers)

TOLERANCE = 1e-4
SIZES = ((2, 7), (3, 5))  # (batch, sequence): the first is the traced example; the second pads a row


def build_masked_lm(model_type: str):
    """(model, config): a random tiny masked LM in eager attention (TooLarge when still large)."""
    from transformers import AutoModelForMaskedLM

    config = tiny_config(model_type, decoder=False)
    return build_random_eager(AutoModelForMaskedLM.from_config, config), config


def inputs(config, batch: int, seq: int, pad: bool):
    """Random ids below the vocabulary and special ids; with `pad`, the last row ends in padding."""
    g = torch.Generator().manual_seed(batch * 100 + seq)
    ids = torch.randint(3, min(getattr(config, "vocab_size", 100) or 100, 100), (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad:
        mask[-1, seq - 2:] = 0
    return ids, mask


class MaskedLMLogits(torch.nn.Module):
    """`(input_ids, attention_mask) -> logits` (the mask is dropped for models without one)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.takes_mask = "attention_mask" in inspect.signature(model.forward).parameters

    def forward(self, input_ids, attention_mask):
        kwargs = {"attention_mask": attention_mask} if self.takes_mask else {}
        return self.model(input_ids=input_ids, **kwargs).logits


def export_and_check(model: torch.nn.Module, config, out: Path) -> float:
    """Export with B and S dynamic, run in tract at both SIZES, return the largest |difference|
    of the logits at positions that are not padding."""
    import t2ir
    from t2ir.tract_run import load_runnable, run_tract

    wrapped = MaskedLMLogits(model).eval()
    t2ir.export(wrapped, inputs(config, *SIZES[0], pad=False), out, input_names=["input_ids", "attention_mask"],
                dynamic_axes={"input_ids": {0: "B", 1: "S"}, "attention_mask": {0: "B", 1: "S"}}, overwrite=True)
    runnable = load_runnable(out)
    diffs = []
    for (batch, seq), pad in zip(SIZES, (False, True)):
        ids, mask = inputs(config, batch, seq, pad)
        with torch.no_grad():
            want = wrapped(ids, mask).numpy()
        got = run_tract(runnable, [ids.numpy(), mask.numpy()])[0]
        kept = mask.numpy().astype(bool)  # logits at padding positions are not defined alike
        diffs.append(float(np.abs(got - want)[kept].max()))
    return max(diffs)
