"""Export options: which passes run and how they behave."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from t2ir.types import DType


@dataclass
class ExportOptions:
    """Options shared by `t2ir.export` and `t2ir export-llm` (each maps to passes)."""

    bf16_as: DType = DType.f16      # tract has no bf16: what bf16 values become (f16 or f32)
    f32_norm: bool = False          # compute normalisations in f32 when the graph is f16
    f32_attn: bool = False          # compute attention (scores, softmax) in f32
    fuse_attention: bool = True     # fold attention patterns into one tract sdpa node
    fuse_transformer_ops: bool = True  # rms_norm, rotary, silu-gated MLP into tract operators
    compression: Optional[str] = None  # "q4_0", "q4_0_with_embeddings", or a registered method
    keep_float: tuple[str, ...] = ()   # constant labels (globs) never compressed, e.g. "lm_head.*"
    extra: dict = field(default_factory=dict)  # options of user passes / compression methods
