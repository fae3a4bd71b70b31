"""Vision-language checkpoints (LLaVA, Mistral 3, Qwen2.5-VL, PaliGemma, ...) exported by their text path.

`export-llm` exports causal LMs: token ids in, logits out. A vision-language model is a composite
of a vision tower and a text decoder; given token ids alone, it runs its text decoder. t2ir builds
the composite itself (transformers' image-text-to-text class for the config), so the checkpoint is
read the way transformers loads it and what is traced is exactly what the composite computes for
a prompt without images: its own head (Cohere's logit scale, ...), its positions (as its
`prepare_inputs_for_generation` prepares them: PaliGemma's start at 1), its masks. The vision
tower is never reached by the trace and none of its weights are written.
"""

from __future__ import annotations

from typing import Any

import torch


def model_class_for(config) -> Any:
    """The transformers auto class to build `config` with: AutoModelForCausalLM, or for a
    vision-language model it does not take, AutoModelForImageTextToText."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and \
            config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def is_vision_language(model: torch.nn.Module) -> bool:
    """A composite with a vision config (Gemma 3's, LLaVA's; not Llama's, nor an encoder-decoder's)."""
    return any(name.startswith("vision") for name in getattr(model.config, "sub_configs", None) or {})
