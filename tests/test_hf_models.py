"""Everyday Hugging Face models that are not causal LMs, through `t2ir.export` as a user calls it:
tiny random configs (no downloads), dynamic axes, tract against PyTorch eager at the traced size
and at another one (speech at another length, text at another length, images at another size)."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from tests.helpers import export_and_compare

CONV_FRONTEND = dict(conv_dim=(16, 16, 16), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=2)
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


class FirstOutput(torch.nn.Module):
    """model(**{name: x}) -> its logits, or its last hidden state."""

    def __init__(self, model: torch.nn.Module, name: str):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(**{self.name: x})
        logits = getattr(out, "logits", None)
        return logits if logits is not None else out.last_hidden_state


def _wav2vec2():
    return tf.Wav2Vec2ForCTC(tf.Wav2Vec2Config(**ENCODER, **CONV_FRONTEND, vocab_size=20)), "input_values"


def _whisper_encoder():
    config = tf.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                              decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=16,
                              max_source_positions=50, vocab_size=100, pad_token_id=1, bos_token_id=2,
                              eos_token_id=3, decoder_start_token_id=2)
    return tf.WhisperForConditionalGeneration(config).model.encoder, "input_features"


def _t5_encoder():
    return tf.T5EncoderModel(tf.T5Config(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2, vocab_size=100)), \
        "input_ids"


def _clip_vision():
    return tf.CLIPVisionModel(tf.CLIPVisionConfig(**ENCODER, image_size=32, patch_size=8)), "pixel_values"


def _convnext():
    return tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])), "pixel_values"


# name -> (model, the example, other sizes, dynamic axes)
CASES = {
    "wav2vec2_ctc": (_wav2vec2, (1, 4000), [(2, 3200)], {0: "B", 1: "T"}),
    "whisper_encoder": (_whisper_encoder, (1, 16, 100), [(2, 16, 100)], {0: "B"}),
    "t5_encoder": (_t5_encoder, (1, 7), [(2, 12)], {0: "B", 1: "S"}),
    "clip_vision": (_clip_vision, (1, 3, 32, 32), [(2, 3, 32, 32)], {0: "B"}),
    "convnext": (_convnext, (1, 3, 64, 64), [(2, 3, 96, 64)], {0: "B", 2: "H", 3: "W"}),
}


@pytest.mark.parametrize("name", CASES)
def test_hugging_face_model(tmp_path, name):
    build, shape, others, axes = CASES[name]
    torch.manual_seed(0)
    model, input_name = build()
    wrapped = FirstOutput(model.eval(), input_name)

    def example(s):
        return (torch.randint(0, 100, s),) if input_name == "input_ids" else (torch.randn(*s),)

    export_and_compare(wrapped, example(shape), tmp_path, more_args=[example(s) for s in others],
                       input_names=["x"], dynamic_axes={"x": axes})
