"""Any image or audio model transformers ships for a task (image classification, speech
recognition with CTC, audio classification, segmentation, detection, depth), made tiny, exported
with `t2ir.export` and checked in tract. Shared by the test suite (a few) and
bench/sweep_tasks.py (all):

    model, example = build_task_model("ctc", "wav2vec2")   # the config class's defaults, shrunk
    worst = export_and_check(model, example, tmp / "out")

The input is the model's own `main_input_name` (pixel values, raw audio, filter-bank features);
its shape is the first of a few layouts the config's fields describe that the model runs in eager
PyTorch. The batch is dynamic, and so is the time axis of audio when the model accepts a second
length (tract symbols B and T).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from architectures import TooLarge, build_random_eager, shrunk_config  # noqa: F401 (TooLarge: for callers)

# task -> transformers' auto mapping of its model classes
TASKS = {
    "image-classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "semantic-segmentation": "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
    "object-detection": "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
    "depth-estimation": "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",
    "ctc": "MODEL_FOR_CTC_MAPPING_NAMES",
    "audio-classification": "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
}
# Relative tolerance: random weights give outputs of any scale (as docs/models.md's sweep)
TOLERANCE = 1e-3
BATCHES = (2, 3)  # the traced example's batch, then the one tract also runs
AUDIO_SAMPLES = (2400, 1760)  # raw audio lengths: the traced one, then a second one when T is dynamic
FEATURE_FRAMES = (48, 40)  # filter-bank frames, likewise
IMAGE_SIZES = (64, 320)  # when the config names none: small, then enough anchors for 300 queries (RT-DETR)
# Backbones named by a pretrained checkpoint (DETR's timm ResNet-50) keep their size; on small
# images they still run in seconds
MAX_PARAMETERS = 40_000_000


def task_types(task: str) -> list[str]:
    from transformers.models.auto import modeling_auto

    return sorted(getattr(modeling_auto, TASKS[task]))


def task_model_class(task: str, model_type: str):
    """The class the task's auto mapping names (the first, for a type with several: DeiT's
    classifier with and without its distillation head)."""
    import transformers
    from transformers.models.auto import modeling_auto

    names = getattr(modeling_auto, TASKS[task])[model_type]
    return getattr(transformers, names if isinstance(names, str) else names[0])


def _int_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value)


def _shrunk_lists(config, default) -> None:
    """Per-stage lists (depths, block counts) down to one block a stage (tiny_config shrinks
    integer fields only); a width shrunk below a multiple of the first stage's heads (Swin: 3
    heads) becomes 16 per head."""
    fields = config.to_dict()
    for key, value in fields.items():
        if _int_list(value) and any(word in key for word in ("depths", "num_layers", "blocks", "repeats")):
            setattr(config, key, [min(v, 1) for v in value])
    heads = fields.get("num_heads") or fields.get("num_attention_heads")
    if _int_list(heads):
        for key in ("embed_dim", "hidden_size"):
            width = fields.get(key)
            if isinstance(width, int) and width % heads[0] and width != getattr(default, key, None):
                setattr(config, key, 16 * heads[0])


def tiny_task_config(model_type: str):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return _tiny(CONFIG_MAPPING[model_type]())


def _tiny(config):
    """tiny_config's sizes, one block per stage, and the same for each sub-config (CLIP's vision
    tower, DETR's backbone)."""
    from transformers import PretrainedConfig

    default, config = config, shrunk_config(config, decoder=False)
    _shrunk_lists(config, default)
    if getattr(config, "use_pretrained_backbone", False):
        config.use_pretrained_backbone = False  # random weights, no download
    for name in vars(config):
        sub = getattr(config, name)
        if isinstance(sub, PretrainedConfig):
            setattr(config, name, _tiny(sub))
            _follow_sub_config(config, sub, getattr(config, name))
    return config


def _follow_sub_config(config, before, after) -> None:
    """A field of the parent that repeats a size of a sub-config (Depth Anything's
    reassemble_hidden_size is its backbone's hidden_size) takes the sub-config's shrunk size."""
    old, new = before.to_dict(), after.to_dict()
    shrunk = {old[k]: new[k] for k in old if type(old[k]) is int and type(new.get(k)) is int and new[k] < old[k]}
    for key, value in config.to_dict().items():
        if type(value) is int and value in shrunk and not key.startswith(("num_", "max_")) and key != "vocab_size":
            setattr(config, key, shrunk[value])


def build_task_model(task: str, model_type: str):
    """(model, Example): a random tiny model for `task` in eager attention and the input it
    runs on; TooLarge when the shrunk config is still large."""
    config = tiny_task_config(model_type)
    model = build_random_eager(task_model_class(task, model_type)._from_config, config, MAX_PARAMETERS)
    wrapped = TaskOutputs(model).eval()
    return wrapped, example_for(wrapped, config)


def with_vision_packages() -> None:
    """Put `.vision` (torchvision and timm, installed beside the venv as .ci/run does) on the
    path, torchvision imported through t2ir's compat import so that transformers still imports,
    for models with timm backbones (DETR's ResNet-50). Call it before transformers imports
    their modeling code (which looks for timm once)."""
    import importlib.util
    import sys

    vision = Path(__file__).resolve().parents[1] / ".vision"
    if importlib.util.find_spec("timm") is not None or not (vision / "timm").is_dir():
        return
    sys.path.append(str(vision))
    from t2ir.tools.torchvision_compat import import_torchvision

    import_torchvision()
    from transformers.utils import import_utils

    for checks in vars(import_utils).values():  # transformers caches what it found installed
        if callable(checks) and hasattr(checks, "cache_clear"):
            checks.cache_clear()


class TaskOutputs(torch.nn.Module):
    """`input -> every tensor of the model's output` (logits, boxes, depth, ...)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.input_name = model.main_input_name

    def forward(self, x):
        out = self.model(**{self.input_name: x}, return_dict=True)
        return tuple(v for v in out.values() if isinstance(v, torch.Tensor))


@dataclass
class Example:
    """The traced input, the one tract also runs, and which axes are dynamic."""

    traced: torch.Tensor
    other: torch.Tensor
    dynamic_axes: dict[int, str]


def _field(config, *names: str):
    """The first of `names` set on the config or, failing that, on one of its sub-configs (CLIP's
    image size is its vision tower's)."""
    from transformers import PretrainedConfig

    for name in names:
        if getattr(config, name, None) is not None:
            return getattr(config, name)
    for sub in vars(config).values():
        if isinstance(sub, PretrainedConfig) and (found := _field(sub, *names)) is not None:
            return found
    return None


def _image_sizes(config) -> list[tuple[int, int]]:
    size = _field(config, "image_size", "img_size")
    if size is None:
        return [(s, s) for s in IMAGE_SIZES]
    if isinstance(size, dict):
        size = size.get("height", IMAGE_SIZES[0]), size.get("width", IMAGE_SIZES[0])
    h, w = (size, size) if isinstance(size, int) else tuple(size)[-2:]
    return [(int(h), int(w))]


def _candidates(model: TaskOutputs, config) -> list[tuple[tuple[int, ...], tuple[int, ...], dict[int, str]]]:
    """(traced shape, other shape, dynamic axes) layouts the input may have, most likely first."""
    b0, b1 = BATCHES
    if model.input_name == "pixel_values":
        channels = _field(config, "num_channels") or 3
        return [((b0, channels, h, w), (b1, channels, h, w), {0: "B"}) for h, w in _image_sizes(config)]
    if model.input_name == "input_ids":  # ImageGPT: an image as colour-cluster tokens
        n = _field(config, "n_positions", "max_position_embeddings") or 64
        return [((b0, n), (b1, n), {0: "B"})]
    out = []
    if model.input_name == "input_values":  # raw audio, or features under that name (AST)
        (t0, t1) = AUDIO_SAMPLES
        out += [((b0, t0), (b1, t1), {0: "B", 1: "T"}), ((b0, t0), (b1, t0), {0: "B"})]
    features = [_field(config, k) for k in ("num_mel_bins", "feature_projection_input_dim", "feature_size",
                                            "input_feat_per_channel", "num_features")]
    features = list(dict.fromkeys(f for f in features if isinstance(f, int)))
    fixed = [_field(config, "max_length")]
    if positions := _field(config, "max_source_positions"):
        fixed.append(2 * positions)  # Whisper: two frames per encoder position
    f0, f1 = FEATURE_FRAMES
    for f in features:  # (B, frames, features) first: the conformer and CTC encoders' layout
        out += [((b0, f0, f), (b1, f1, f), {0: "B", 1: "T"}), ((b0, f, f0), (b1, f, f1), {0: "B", 2: "T"})]
        out += [((b0, n, f), (b1, n, f), {0: "B"}) for n in fixed if isinstance(n, int)]
        out += [((b0, f, n), (b1, f, n), {0: "B"}) for n in fixed if isinstance(n, int)]
    return out


def example_for(model: TaskOutputs, config) -> Example:
    """The first candidate layout that the model runs on in eager PyTorch, at both sizes."""
    g = torch.Generator().manual_seed(0)
    errors = []
    for traced, other, axes in _candidates(model, config):
        if model.input_name == "input_ids":
            vocab = _field(config, "vocab_size") or 2
            x0, x1 = (torch.randint(0, vocab, shape, generator=g) for shape in (traced, other))
        else:
            x0, x1 = torch.randn(traced, generator=g), torch.randn(other, generator=g)
        try:
            with torch.no_grad():
                model(x0), model(x1)
        except Exception as e:
            errors.append(f"{list(traced)}: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
            continue
        return Example(x0, x1, axes)
    raise ValueError(f"no input layout runs in eager PyTorch ({model.input_name}; tried {'; '.join(errors) or 'none'})")


def export_and_check(model: TaskOutputs, example: Example, out: Path) -> float:
    """Export with the example's dynamic axes, run in tract on both inputs, return the worst
    difference relative to each output's largest magnitude."""
    import t2ir
    from t2ir.tract_run import load_runnable, run_tract

    t2ir.export(model, (example.traced,), out, input_names=["input"], dynamic_axes={"input": example.dynamic_axes},
                overwrite=True)
    runnable = load_runnable(out)
    worst, ties = 0.0, []
    for x in (example.traced, example.other):
        with torch.no_grad(), tied_topk(ties):
            want = [w.numpy() for w in model(x)]
        got = run_tract(runnable, [x.numpy()])
        if len(got) != len(want):
            raise AssertionError(f"tract gave {len(got)} outputs, PyTorch {len(want)}")
        for g, w in zip(got, want):
            if g.shape != w.shape:
                raise AssertionError(f"tract's output has shape {g.shape}, PyTorch's {w.shape}")
            scale = max(float(np.abs(w).max()), 1e-6)
            worst = max(worst, float(np.abs(g.astype(np.float64) - w).max()) / scale)
    if worst > TOLERANCE and ties:
        raise TiedTopK(f"max diff {worst:.3g} after a top-k over tied values ({ties[0]}): PyTorch and tract "
                       "may select and order equal values differently, and what is gathered by their indices differs")
    return worst


class TiedTopK(AssertionError):
    """The outputs differ, and the model ran a top-k whose choice among equal values is arbitrary."""


@contextlib.contextmanager
def tied_topk(found: list[str]):
    """Notes each top-k in eager PyTorch whose result depends on how ties are broken: the k-th
    largest value also occurs outside the k chosen, or equal values among them (random weights
    give equal scores to every zeroed position, as RT-DETR's invalid anchors)."""
    plain = torch.topk

    def topk(x, k, dim=-1, largest=True, sorted=True, **kw):
        result = plain(x, k, dim, largest, sorted, **kw)
        chosen = result.values.movedim(dim, -1)
        kth = chosen.min(-1, keepdim=True).values if largest else chosen.max(-1, keepdim=True).values
        beyond = int((x.movedim(dim, -1) == kth).sum()) - int((chosen == kth).sum())
        repeated = any(len(set(row.tolist())) < row.numel() for row in chosen.reshape(-1, chosen.shape[-1]))
        if beyond or repeated:
            found.append(f"top-{k} of {x.shape[dim]} along axis {dim}: {beyond} values outside equal to the "
                         f"k-th, repeated values {'among' if repeated else 'not among'} those chosen")
        return result

    method = torch.Tensor.topk
    torch.topk, torch.Tensor.topk = topk, topk
    try:
        yield
    finally:
        torch.topk, torch.Tensor.topk = plain, method
