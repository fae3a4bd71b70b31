"""Every vision-language model in transformers' image-text-to-text auto mapping, made tiny, exported
by its text path with `export-llm` and checked in tract.

    nice -n 10 python bench/sweep_vision_language.py [--only llava,paligemma] [--work /tmp/t2ir-vlm] [--fresh]

Each composite is built from its config class with the text config of tests/architectures.py's
tiny_config for its text model type and a one-layer vision tower, with random weights, and saved
with `save_pretrained`. `export-llm` exports its text path (token ids in, logits out); tract runs
a prefill and 3 decode steps feeding its caches back, against the composite in transformers given
the positions its generate passes (prepare_inputs_for_generation), without images. A chunk of
several tokens on a past is not checked: transformers masks it causally where some of these decoders
attend both ways within the prompt (PaliGemma). f32 passes at a max absolute difference of 1e-4
(logits and caches). Types run in worker processes as in bench/sweep_architectures.py; results go
to WORK/results.jsonl and the table to docs/vision-language.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_architectures import _line, checked, single_variant_main, single_variant_table  # noqa: E402


def vision_language_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def run_one(model_type: str, work: Path) -> dict:
    """Build, save, export and check one model type (in this process)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from architectures import MAX_PARAMETERS, TOLERANCE, check_in_tract, export, quiet, tiny_vision_language_config

    quiet()
    torch.set_num_threads(1)
    row = {"model_type": model_type, "category": "vision-language", "reason": "", "variants": {}}
    folder = work / model_type / "checkpoint"
    try:
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(tiny_vision_language_config(model_type))
        size = sum(p.numel() for p in model.parameters())
        if size > MAX_PARAMETERS:
            return {**row, "category": "not buildable", "reason": f"the shrunk config still has {size / 1e6:.0f} M parameters"}
        model.save_pretrained(folder)
    except Exception as e:
        return {**row, "category": "not buildable", "reason": f"tiny config does not build: {_line(e)}"}
    def check() -> float:
        summary = export(folder, work / model_type / "out")
        reference = AutoModelForImageTextToText.from_pretrained(folder).eval()
        return check_in_tract(summary.out_dir / "model" / "model.nnef.tgz", reference, chunk=False).max_diff

    row["variants"]["f32"] = checked(check, TOLERANCE["f32"])
    return row


def write_table(work: Path, out: Path) -> None:
    single_variant_table(
        work, out, title="Vision-language models: their text path", variant="f32",
        noun="buildable vision-language models",
        description="every model type in transformers' image-text-to-text auto mapping, built with a tiny text "
        "config (tests/architectures.py) and a one-layer vision tower, random weights, saved with "
        "`save_pretrained` and exported with `t2ir export-llm`, which exports the composite's text path (token "
        "ids in, logits out, no image input). tract runs a prefill and 3 decode steps against the composite in "
        "transformers (no images, the positions its generate passes); f32 passes at a max absolute difference "
        "of 1e-4 (logits and caches). A chunk of several tokens on a past is not checked: transformers masks it "
        "causally where some of these decoders attend both ways over the prompt (PaliGemma).",
        regenerate="`python bench/sweep_vision_language.py --fresh`")


def main() -> None:
    single_variant_main(__doc__, __file__, "/tmp/t2ir-vlm", 600, "docs/vision-language.md", vision_language_types, run_one, write_table)


if __name__ == "__main__":
    main()
