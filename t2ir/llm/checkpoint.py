"""Reading a `save_pretrained` folder: config, safetensors shards (lazily), tokenizer, PEFT adapters.

Nothing here loads all weights: `Checkpoint.source(name)` returns a lazy handle on one tensor,
read from its shard only when the emitter writes it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from t2ir.errors import T2IRError
from t2ir.ir import Derived, SafetensorsEntry, TensorSource

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")


class CheckpointError(T2IRError):
    """The model folder is missing something or holds something broken."""


@dataclass
class LoraAdapter:
    """A PEFT LoRA adapter: W' = W + scale * B @ A for each adapted linear weight."""

    path: Path
    scale: float
    pairs: dict[str, tuple[SafetensorsEntry, SafetensorsEntry]]  # base weight name -> (A, B)


@dataclass
class Checkpoint:
    folder: Path
    config: dict
    index: dict[str, Path]  # tensor name -> shard file
    adapter: Optional[LoraAdapter] = None
    files: list[Path] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # from the shards' headers

    def has(self, name: str) -> bool:
        return name in self.index

    def source(self, name: str) -> TensorSource:
        base = SafetensorsEntry(str(self.index[name]), name)
        if self.adapter and name in self.adapter.pairs:
            a, b = self.adapter.pairs[name]
            scale = self.adapter.scale
            return Derived(lambda w, a_, b_: _merge_lora(w, a_, b_, scale), (base, a, b), "lora-merged")
        return base

    def stored_dtype(self) -> str:
        """The dtype most weights are stored in ("f32", "f16" or "bf16"), read from the safetensors
        headers (no weight data), as torch_to_nnef picks the module dtype when none is forced."""
        from safetensors import safe_open

        counts: dict[str, int] = {}
        for shard in sorted(set(self.index.values())):
            with safe_open(shard, framework="pt") as f:
                for name in f.keys():
                    if self.index.get(name) != shard:
                        continue
                    piece = f.get_slice(name)
                    numel = 1
                    for d in piece.get_shape():
                        numel *= d
                    dtype = {"F32": "f32", "F16": "f16", "BF16": "bf16"}.get(piece.get_dtype())
                    if dtype is not None:
                        counts[dtype] = counts.get(dtype, 0) + numel
        return max(counts, key=counts.get) if counts else "f32"

    def check_shapes(self, model: torch.nn.Module) -> None:
        """Every weight the model declares has the shape the checkpoint holds, else config.json
        does not describe these weights (a missing or wrong field) and the export would be wrong."""
        tensors = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
        wrong = [f"{name} is {list(self.shapes[name])} in {self.index[name].name}, config.json implies {list(t.shape)}"
                 for name, t in tensors if name in self.shapes and tuple(t.shape) != self.shapes[name]]
        if wrong:
            more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
            raise CheckpointError(f"{self.folder / 'config.json'} does not match the weights: {'; '.join(wrong[:3])}{more}; "
                                  "fix config.json or re-save the model with save_pretrained")

    def tensor_nbytes(self) -> int:
        """Total bytes of the weights on disk (for memory ratios and size predictions)."""
        return sum(p.stat().st_size for p in set(self.index.values()))

    def file_hashes(self) -> dict[str, str]:
        """sha256 of every input file, for the export manifest."""
        return FileHashes(self.files, background=False).result()


class FileHashes:
    """sha256 of files, optionally on a thread while the caller works: hashlib releases the GIL,
    so an export's tracing and the hashing of its checkpoint share the machine's cores (0.8 s of
    a 15 s export of a 623 MB checkpoint here, 5x that at 1.1B). `cancel` stops it between
    chunks, e.g. when the export fails."""

    def __init__(self, files, background: bool = True):
        self._files = sorted(files)
        self._digests: dict[str, str] = {}
        self._error: Optional[OSError] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hash_all, name="t2ir-file-hashes", daemon=True)
        if background:
            self._thread.start()
        else:
            self._hash_all()

    def _hash_all(self) -> None:
        try:
            for path in self._files:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 22), b""):
                        if self._stop.is_set():
                            return
                        h.update(chunk)
                self._digests[path.name] = h.hexdigest()
        except OSError as e:
            self._error = e

    def result(self) -> dict[str, str]:
        if self._thread.is_alive():
            self._thread.join()
        if self._error is not None:
            raise T2IRError(f"cannot read {self._error.filename}: {self._error.strerror}")
        return dict(self._digests)

    def cancel(self) -> None:
        self._stop.set()


def _merge_lora(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    merged = w.float() + scale * (b.float() @ a.float())
    return merged.to(w.dtype)


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a model folder written by save_pretrained has {what}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): re-save the model") from None


def _read_headers(shards: list[Path]) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """tensor name -> (shard, shape), from the shards' headers only (no weight data is read)."""
    from safetensors import safe_open

    found: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for shard in shards:
        try:
            with safe_open(shard, framework="pt") as f:
                for name in f.keys():
                    found[name] = (shard, tuple(f.get_slice(name).get_shape()))
        except Exception as e:
            raise CheckpointError(f"{shard} is not a readable safetensors file ({e}); re-save the model") from None
    return found


def _shard_index(folder: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    index_file = folder / "model.safetensors.index.json"
    if index_file.exists():
        weight_map = _read_json(index_file, "an index of its shards").get("weight_map", {})
        shards = sorted({folder / shard for shard in weight_map.values()})
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise CheckpointError(f"{index_file.name} lists shards that are missing: {', '.join(missing)}")
        found = _read_headers(shards)
        for name, shard in weight_map.items():
            if found.get(name, (None,))[0] != folder / shard:
                raise CheckpointError(f"{index_file.name} says {name} is in {shard}, which does not hold it: "
                                      "re-save the model")
        return {name: found[name] for name in weight_map}
    shards = sorted(folder.glob("*.safetensors"))
    shards = [s for s in shards if not s.name.startswith("adapter_")]
    if not shards:
        found = ", ".join(sorted(p.name for p in folder.glob("*.bin"))) or "no weight files"
        raise CheckpointError(f"{folder} has no *.safetensors weights ({found}); re-save the model with "
                              "save_pretrained(..., safe_serialization=True)")
    return _read_headers(shards)


def _lora_adapter(folder: Path, base_index: dict[str, Path]) -> LoraAdapter:
    from safetensors import safe_open

    cfg = _read_json(folder / "adapter_config.json", "adapter_config.json")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"only LoRA adapters can be merged, this one is {cfg.get('peft_type')}")
    weights = folder / "adapter_model.safetensors"
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing: save the adapter with safetensors")
    r, alpha = cfg.get("r", 8), cfg.get("lora_alpha", 8)
    with safe_open(weights, framework="pt") as f:
        keys = list(f.keys())
    pairs = {}
    for k in keys:
        if ".lora_A." not in k:
            continue
        stem = k.split(".lora_A.")[0]
        base = stem.removeprefix("base_model.model.") + ".weight"
        b_key = k.replace(".lora_A.", ".lora_B.")
        if base not in base_index or b_key not in keys:
            raise CheckpointError(f"adapter tensor {k} does not match a base weight ({base})")
        pairs[base] = (SafetensorsEntry(str(weights), k), SafetensorsEntry(str(weights), b_key))
    return LoraAdapter(folder, alpha / r, pairs)


def model_folder(folder: Path) -> Path:
    """`folder`, or the one folder below it holding a config.json (as torch_to_nnef's --local-dir
    searches, e.g. a snapshot copied with its parents)."""
    if (folder / "config.json").exists() or (folder / "adapter_config.json").exists():
        return folder
    found = sorted({p.parent for p in folder.rglob("config.json")})
    if len(found) > 1:
        raise CheckpointError(f"{folder} holds several models ({', '.join(str(f) for f in found[:4])}): "
                              "pass the folder of the one to export")
    return found[0] if found else folder


def open_checkpoint(folder: Path | str, *, merge_peft: bool = False) -> Checkpoint:
    """Index a model folder without reading any weight data."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder: pass the directory written by save_pretrained")
    folder = model_folder(folder)
    adapter_cfg = folder / "adapter_config.json"
    if adapter_cfg.exists():
        if not merge_peft:
            raise CheckpointError(f"{folder} is a PEFT adapter folder: pass --merge-peft to merge it into its base model")
        base_path = _read_json(adapter_cfg, "adapter_config.json").get("base_model_name_or_path", "")
        base = Path(base_path) if Path(base_path).is_absolute() else (folder / base_path).resolve()
        ckpt = open_checkpoint(base)
        ckpt.adapter = _lora_adapter(folder, ckpt.index)
        ckpt.files += [adapter_cfg, folder / "adapter_model.safetensors"]
        return ckpt
    config = _read_json(folder / "config.json", "config.json")
    if "model_type" not in config:
        raise CheckpointError(f"{folder / 'config.json'} has no model_type: is it a transformers config?")
    headers = _shard_index(folder)
    index = {name: shard for name, (shard, _) in headers.items()}
    files = [folder / "config.json", *sorted(set(index.values()))]
    return Checkpoint(folder, config, index, files=files, shapes={name: shape for name, (_, shape) in headers.items()})


def resolve_model_slug(slug: str) -> Path:
    """The local snapshot of Hugging Face model `slug` (org/name) in the Hugging Face cache
    (HF_HUB_CACHE, HF_HOME or ~/.cache/huggingface); nothing is downloaded."""
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise CheckpointError("reading -s/--model-slug needs the huggingface_hub package: pip install huggingface_hub"
                              ) from None
    try:
        return Path(snapshot_download(slug, local_files_only=True))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"model {slug!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}): t2ir does not "
            f"download models; fetch it on a machine with network (`huggingface-cli download {slug}`) and copy "
            "the cache, or pass the folder with -d") from None
    except Exception as e:  # malformed ids and the like
        raise CheckpointError(f"cannot resolve model {slug!r} in the local Hugging Face cache: {e}") from None


def load_config(ckpt: Checkpoint):
    """The transformers config object; an unknown architecture gets a clear error."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(ckpt.folder))
    except (ValueError, KeyError) as e:
        raise CheckpointError(
            f"transformers does not know the architecture {ckpt.config.get('model_type')!r} ({e}); "
            "upgrade transformers or check config.json") from None
