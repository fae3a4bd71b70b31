"""The text decoder of a vision-language checkpoint (LLaVA, Mistral 3, Idefics 3, PaliGemma, ...).

`export-llm` exports causal LMs: token ids in, logits out. A vision-language checkpoint is a
composite whose text half is such a model: its config holds a text config transformers builds as
a causal LM. t2ir builds both on the meta device: the composite to read the checkpoint the way
transformers loads it (its own key mapping and tied weights), the text causal LM to trace. Each
text parameter takes the source of the composite's parameter at the same place, the composite's
decoder and output embeddings being the text model's. The vision tower is left out: the graph
computes what the composite computes for a prompt without images.
"""

from __future__ import annotations

import copy

import torch

from t2ir.errors import T2IRError


def text_config_to_export(config):
    """The text config of a vision-language config that transformers cannot build as a causal LM
    itself but whose text half it can; None for any other config (exported as it is)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    text = _text_half(config)
    return copy.deepcopy(text) if text is not None and text.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else None


def _text_half(config):
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)

    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or \
            config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return None
    text = config.get_text_config(decoder=True)
    return None if text is config else text


def why_not_exported(config) -> str:
    """For a vision-language config whose text half transformers has no causal-LM class for
    (Qwen2.5-VL's `qwen2_5_vl_text`), the reason; empty otherwise."""
    text = _text_half(config)
    if text is None or text_config_to_export(config) is not None:
        return ""
    return (f"{config.model_type} is a vision-language model whose text decoder ({text.model_type}) has no "
            "causal-LM class in transformers, so t2ir cannot export it on its own (vision-language models whose "
            "text decoder is a causal LM, such as LLaVA, Mistral 3 or PaliGemma, export their text decoder)")


def stand_for(text_lm: torch.nn.Module, composite: torch.nn.Module) -> None:
    """The text causal LM's generation follows the composite's (its positions: PaliGemma's start
    at 1); kept as a plain attribute, not a submodule."""
    from t2ir.frontend.causal_lm import GENERATES_AS

    object.__setattr__(text_lm, GENERATES_AS, composite)


def build_meta_composite(config, dtype: torch.dtype) -> torch.nn.Module:
    """The vision-language model transformers loads for `config`, its parameters on meta."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config, dtype=dtype)


def ties_embeddings(model: torch.nn.Module) -> bool:
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and embeddings is not None and head.weight is embeddings.weight


def composite_names(text_lm: torch.nn.Module, composite: torch.nn.Module) -> dict[str, str]:
    """Each state-dict name of the text causal LM -> the composite's name for the same tensor:
    the decoder and the output embeddings are found by transformers' own accessors
    (`get_decoder`, `get_output_embeddings`), whatever each model calls them."""
    places = [(text_lm.get_decoder(), composite.get_decoder()),
              (text_lm.get_output_embeddings(), composite.get_output_embeddings())]
    text_paths = {id(m): name for name, m in text_lm.named_modules()}
    composite_paths = {id(m): name for name, m in composite.named_modules()}
    prefixes = [(text_paths.get(id(t)), composite_paths.get(id(c))) for t, c in places if t is not None and c is not None]
    composite_shapes = {name: tuple(t.shape) for name, t in composite.state_dict().items()}
    names: dict[str, str] = {}
    for name, tensor in text_lm.state_dict().items():
        for text_prefix, composite_prefix in prefixes:
            if text_prefix is not None and composite_prefix is not None and name.startswith(text_prefix + "."):
                names[name] = composite_prefix + name[len(text_prefix):]
                break
        found = names.get(name)
        if found is None or composite_shapes.get(found) != tuple(tensor.shape):
            raise T2IRError(f"{type(text_lm).__name__}.{name} has no counterpart of shape {list(tensor.shape)} in "
                            f"{type(composite).__name__} ({found or 'no decoder or output embeddings holds it'}): "
                            "t2ir cannot export this vision-language model's text decoder")
    return names
