"""Every image and audio model transformers ships for a task (image classification, semantic
segmentation, object detection, depth estimation, CTC speech recognition, audio classification),
made tiny, exported with `t2ir.export` and checked in tract.

    nice -n 10 python bench/sweep_tasks.py [--only ctc/wav2vec2,image-classification/vit] [--work DIR] [--fresh]

Each (task, model type) is built from its config class's defaults with small sizes
(tests/architectures.py, per-stage depths down to one block; tests/tasks.py builds and checks) and
random weights, in eager attention, fed its own main input (pixel values, raw audio or filter-bank
features, in the first layout its config describes that runs in eager PyTorch), exported with the
batch dynamic (and the time axis of audio when the model accepts a second length), and run in tract
at two sizes against PyTorch: passing is every output within 1e-3 of its largest magnitude. Types
run in worker processes, as in bench/sweep_architectures.py (whose machinery this shares); results go
to WORK/results.jsonl and the table to docs/tasks.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_architectures import _line, checked, single_variant_main, single_variant_table  # noqa: E402


def task_model_types() -> list[str]:
    """`task/model_type` for every task of tests/tasks.py."""
    from tasks import TASKS, task_types

    return [f"{task}/{model_type}" for task in TASKS for model_type in task_types(task)]


def run_one(name: str, work: Path) -> dict:
    """Build, export and check one `task/model_type` (in this process)."""
    import torch

    from architectures import quiet
    from tasks import TOLERANCE, TooLarge, build_task_model, export_and_check, with_vision_packages

    with_vision_packages()  # timm backbones
    quiet()
    torch.set_num_threads(1)
    task, model_type = name.split("/", 1)
    row = {"model_type": name, "category": "encoder", "reason": "", "variants": {}}
    try:
        model, example = build_task_model(task, model_type)
    except TooLarge as e:
        return {**row, "category": "not buildable", "reason": str(e)}
    except ValueError as e:
        return {**row, "category": "not buildable", "reason": f"does not run in eager PyTorch: {_line(e)}"}
    except Exception as e:
        return {**row, "category": "not buildable", "reason": f"tiny config does not build: {_line(e)}"}
    row["input"] = {"shape": list(example.traced.shape), "dynamic": example.dynamic_axes}
    row["variants"]["f32"] = checked(
        lambda: export_and_check(model, example, Path(tempfile.mkdtemp(dir=work)) / "model"), TOLERANCE)
    return row


def write_table(work: Path, out: Path) -> None:
    single_variant_table(
        work, out, title="Image and audio models by task", variant="f32", noun="buildable task models",
        description="every model type in transformers' auto mappings for image classification, semantic "
        "segmentation, object detection, depth estimation, CTC speech recognition and audio classification "
        "(rows are task/model type), built from its config class with small sizes (one block per stage) and "
        "random weights (eager attention), fed its main input (pixel values, raw audio or filter-bank features, "
        "in the first layout its config describes that runs in eager PyTorch), exported with `t2ir.export` with "
        "the batch dynamic (and the time axis of audio when the model accepts a second length), and run in tract "
        "at batch 2 and 3 against PyTorch; a pass is every output within 1e-3 of its largest magnitude "
        "(the max diff column is relative). A failure after a top-k whose choice among equal values is "
        "arbitrary (random weights give every zeroed anchor of a DETR-style detector the same score) is "
        "reported as `TiedTopK`: PyTorch and tract may pick different ones of the equal values, so the "
        "rows gathered by their indices differ; such a row is a failure of the check, not a pass.",
        regenerate="`python bench/sweep_tasks.py --fresh`")


def main() -> None:
    single_variant_main(__doc__, __file__, "/tmp/t2ir-tasks", 600, "docs/tasks.md", task_model_types, run_one, write_table)


if __name__ == "__main__":
    main()
