"""Export options, one dataclass family: `ExportOptions` (what `t2ir.export` and every pass read)
and `LLMExportOptions` (what `t2ir export-llm` adds). Passes read these fields directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from t2ir.types import DType


@dataclass(kw_only=True)
class ExportOptions:
    """Which passes run and how they behave, what is checked, where the output goes."""

    bf16_as: DType = DType.f16         # tract has no bf16: what bf16 values become (f16 or f32)
    f32_norm: bool = False             # compute normalisations in f32 when the graph is f16
    f32_attn: bool = False             # compute attention (scores, softmax) in f32
    fuse_attention: bool = True        # fold attention patterns into one tract sdpa node
    fuse_transformer_ops: bool = True  # rms_norm, rotary, silu-gated MLP into tract operators
    compression: Optional[str] = None  # "q4_0", "q4_0_with_embeddings", or a registered method
    keep_float: tuple[str, ...] = ()   # constant labels (globs) never compressed, e.g. "lm_head.*"
    check_io: Optional[str] = None     # run the export in tract and compare at this tract tolerance level
    dump_ir: Optional[Path] = None     # write the IR after every pass into this folder
    overwrite: bool = False            # replace an existing output (only once the new one is complete)
    extra: dict = field(default_factory=dict)  # options of user passes / compression methods


@dataclass(kw_only=True)
class LLMExportOptions(ExportOptions):
    """`t2ir export-llm`: a `save_pretrained` folder to a tract package."""

    model_dir: Path
    out_dir: Path
    dtype: str = "f32"                         # f32, f16 or bf16 (exported as f16)
    with_tokenizer_and_config: bool = False    # copy tokenizer files to OUT/tokenizer
    num_logits_to_keep: Optional[int] = None   # logits of the last N positions only
    dry_run: bool = False                      # trace and plan, write nothing
    merge_peft: bool = False                   # merge a LoRA adapter folder into its base model
    tests: bool = True                         # write OUT/tests/*_io.npz reference cases
    attn_implementation: str = "auto"          # transformers attention: auto (its own choice), sdpa, eager
