"""Every masked-LM encoder in transformers' auto mapping, made tiny, exported with `t2ir.export` and
checked in tract.

    nice -n 10 python bench/sweep_encoders.py [--only bert,roberta] [--work /tmp/t2ir-encoders] [--fresh]

The everyday use of these models is not generation but a forward pass over a padded batch, so each
model type is exported as `(input_ids, attention_mask) -> logits` with the batch and the sequence
length dynamic (tract symbols B and S), from its config class's defaults with small sizes
(tests/architectures.py, in encoder mode; tests/encoders.py builds and checks) and random weights. tract runs it at two sizes, (2, 7) and
(3, 5), the second batch with padding at the end of one row, against transformers in eager mode:
passing is a max absolute difference of the logits at the positions that are not padding of at most
1e-4. Types run in worker processes, as in bench/sweep_architectures.py (whose machinery this
shares); results go to WORK/results.jsonl and the table to docs/encoders.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_architectures import _line, checked, single_variant_main, single_variant_table  # noqa: E402


def encoder_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def run_one(model_type: str, work: Path) -> dict:
    """Build, export and check one model type (in this process)."""
    import torch

    from architectures import quiet
    from encoders import SIZES, TOLERANCE, MaskedLMLogits, TooLarge, build_masked_lm, export_and_check, inputs

    quiet()
    torch.set_num_threads(1)
    row = {"model_type": model_type, "category": "encoder", "reason": "", "variants": {}}
    try:
        model, config = build_masked_lm(model_type)
    except TooLarge as e:
        return {**row, "category": "not buildable", "reason": str(e)}
    except Exception as e:
        return {**row, "category": "not buildable", "reason": f"tiny config does not build: {_line(e)}"}
    try:
        with torch.no_grad():
            MaskedLMLogits(model)(*inputs(config, *SIZES[0], pad=False))
    except Exception as e:  # some need inputs or config values this sweep does not give
        return {**row, "category": "not buildable", "reason": f"does not run in eager PyTorch: {_line(e)}"}
    row["variants"]["f32"] = checked(
        lambda: export_and_check(model, config, Path(tempfile.mkdtemp(dir=work)) / "model"), TOLERANCE)
    return row


def write_table(work: Path, out: Path) -> None:
    single_variant_table(
        work, out, title="Encoders", variant="f32", noun="buildable encoders",
        description="every model type in transformers' masked-LM auto mapping, built from its config class with "
        "small sizes and random weights (eager attention), exported with `t2ir.export` as `(input_ids, "
        "attention_mask) -> logits` with the batch and sequence dynamic, and run in tract at (2, 7) and (3, 5) "
        "with padding in one row, against transformers; a pass is a max absolute difference of at most 1e-4 at "
        "the positions that are not padding.",
        regenerate="`python bench/sweep_encoders.py --fresh` (about 10 minutes on 2 cores)")


def main() -> None:
    single_variant_main(__doc__, __file__, "/tmp/t2ir-encoders", 300, "docs/encoders.md", encoder_types, run_one, write_table)


if __name__ == "__main__":
    main()
