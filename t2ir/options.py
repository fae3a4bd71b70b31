"""Export options, one dataclass family: `ExportOptions` (what `t2ir.export` and every pass read)
and `LLMExportOptions` (what `t2ir export-llm` adds). Passes read these fields directly."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from t2ir.types import DType


@dataclass(kw_only=True)
class ExportOptions:
    """Which passes run and how they behave, what is checked, where the output goes."""

    bf16_as: DType = DType.f16         # tract has no bf16: what bf16 values become (f16 or f32)
    f32_norm: bool = False             # compute normalisations in f32 when the graph is f16
    f32_attn: bool = False             # compute attention (scores, softmax) in f32
    f32_linear_acc: bool = False       # accumulate f16 linear layers in f32 (torch_to_nnef's -f32-lin-acc)
    fuse_attention: bool = True        # fold attention patterns into one t2ir.sdpa node
    attention: str = "auto"            # how t2ir.sdpa runs in tract: "sdpa" (its fused operator), "matmul"
                                       # (matmuls + softmax, grouped heads without copies), or "auto"
    fuse_transformer_ops: bool = True  # rms_norm, rotary, silu-gated MLP into tract operators
    compression: Optional[str] = None  # "q4_0", "q4_0_with_embeddings", or a registered method
    keep_float: tuple[str, ...] = ()   # constant labels (globs) never compressed, e.g. "lm_head.*"
    check_io: Optional[str] = None     # run the export in tract and compare at this tract tolerance level
    check_passes: bool = False         # evaluate the graph after every pass (reference interpreter) against the module
    dump_ir: Optional[Path] = None     # write the IR after every pass into this folder
    overwrite: bool = False            # replace an existing output (only once the new one is complete)
    extra: dict = field(default_factory=dict)  # options of user passes / compression methods

    def recorded(self) -> dict:
        """The options as a manifest records them: every field but those holding local paths,
        which would carry the user's folder names into what is shipped (and make two exports of
        the same model differ by where they were written)."""
        hints = typing.get_type_hints(type(self))
        return {f.name: getattr(self, f.name) for f in fields(self)
                if hints[f.name] is not Path and Path not in typing.get_args(hints[f.name])}


@dataclass(kw_only=True)
class LLMExportOptions(ExportOptions):
    """`t2ir export-llm`: a `save_pretrained` folder to a tract package."""

    model_dir: Path
    out_dir: Path
    dtype: str = "auto"                        # f32, f16, bf16 (exported as f16), or auto: the checkpoint's
    with_tokenizer_and_config: bool = False    # copy tokenizer files and config to OUT/tokenizer, OUT/model
    num_logits_to_keep: int = 1                # logits of the last N positions only; 0 keeps every position
    dry_run: bool = False                      # trace and plan, write nothing
    merge_peft: bool = False                   # merge a LoRA adapter folder into its base model
    tests: bool = True                         # write OUT/tests/*.npz reference cases
    sample_tokens: int = 8                     # prompt length of the reference cases (torch_to_nnef's -sgts)
    layout: str = "deep"                       # OUT/model + OUT/tokenizer ("deep") or all in OUT ("flat")
    attn_implementation: str = "auto"          # transformers attention: auto (its own choice), sdpa, eager
    trace_every_layer: bool = False            # trace all decoder layers, not one per kind (then stamped)
