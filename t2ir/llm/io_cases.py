"""The test cases stored in OUT/tests/: inputs and PyTorch outputs for tract to replay.

They follow torch_to_nnef's LLM export so that its runners and tract's CLI read them as they are:
- `{case}_inputs.npz` and `{case}_outputs.npz` (torch_to_nnef >= 0.21), plus `{case}_io.npz`
  holding both (the merged form tract's `--input-from-npz X --assert-output-bundle X` reads);
- names `input_ids`, `in_cache_{key,value}_{i}`, `outputs`, `out_cache_{key,value}_{i}` (and t2ir's
  `in_cache_conv_{i}` / `out_cache_conv_{i}` for convolution states);
- `input_ids` int64, every float array float32 even when the graph computes in f16 (a reader
  casts inputs to the model's input type, as tract's `--allow-float-casts` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from t2ir.driver import Run
from t2ir.emitters.archive import write_npz
from t2ir.frontend.cache_layout import (CacheEntry, ConvState, RecurrentState, cache_input_names, cache_output_names,
                                        cache_past_axes, empty_caches)

CASES = ("export", "prompt", "prompt_with_past", "text_generation")
MODES = ("prompt", "prompt_with_past", "text_generation")  # what modes.json lists, as torch_to_nnef does
Forward = Callable[..., Sequence[torch.Tensor]]


def _np(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """Floats as float32 (after rounding to the model's half type when it has one)."""
    t = t.detach()
    if t.is_floating_point():
        if dtype in (torch.float16, torch.bfloat16):
            t = t.to(torch.float16)
        t = t.to(torch.float32)
    return t.numpy()


def _record(forward: Forward, ids: torch.Tensor, past: list[torch.Tensor], layout: list[CacheEntry],
            dtype: torch.dtype) -> tuple[dict[str, np.ndarray], list[torch.Tensor]]:
    with torch.no_grad():
        out = forward(ids, *past)
    case = {"input_ids": ids.numpy()}
    case.update({n: _np(p, dtype) for n, p in zip(cache_input_names(layout), past)})
    case["outputs"] = _np(out[0], dtype)
    case.update({n: _np(t, dtype) for n, t in zip(cache_output_names(layout), out[1:])})
    return case, list(out[1:])


def prompt_ids(tokenizer_dir: Optional[Path], vocab_size: int, n: int) -> torch.Tensor:
    """A real prompt when a tokenizer is there, else deterministic pseudo-random ids."""
    if tokenizer_dir is not None and (tokenizer_dir / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).encode(
            "Once upon a time, a small model was exported to tract and it said").ids
        if len(ids) >= n:
            return torch.tensor([ids[:n]], dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, (1, n), generator=g)


def make_cases(forward: Forward, *, layout: list[CacheEntry], vocab_size: int, dtype: torch.dtype,
               tokenizer_dir: Optional[Path] = None, n_tokens: int = 8) -> dict[str, dict]:
    """prompt: n tokens from an empty cache; prompt_with_past: the second half after the first;
    text_generation: one token after n - 1; export: the last 3 tokens after the others (n = 8:
    3 after 5, the sizes the model is traced with).

    The past of each later case is a prefix of the prompt's caches (a causal model's cache for
    the first k tokens is the first k positions), so the model runs 4 times, not 7; a model that
    keeps convolution or recurrent states (no prefix of a longer one) runs the first k tokens instead."""
    if n_tokens < 2:
        raise ValueError(f"the reference cases need at least 2 tokens, got {n_tokens}")
    ids = prompt_ids(tokenizer_dir, vocab_size, n_tokens)
    empty = empty_caches(layout, dtype)
    cases = {}
    cases["prompt"], full = _record(forward, ids, empty, layout, dtype)

    prefixes = not any(isinstance(entry, (ConvState, RecurrentState)) for entry in layout)

    def after(k: int) -> dict:
        if prefixes:
            past = [c.narrow(axis, 0, k) for c, axis in zip(full, cache_past_axes(layout))]
        else:
            past = _record(forward, ids[:, :k], empty, layout, dtype)[1]
        return _record(forward, ids[:, k:], past, layout, dtype)[0]

    cases["prompt_with_past"] = after(n_tokens // 2)
    cases["text_generation"] = after(n_tokens - 1)
    cases["export"] = after(n_tokens - min(3, n_tokens - 1))
    return cases


def save_cases(cases: dict[str, dict], folder: Path, input_names: Sequence[str]) -> list[Path]:
    """Write each case as `_inputs`, `_outputs` and merged `_io` npz; returns the `_io` paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, arrays in cases.items():
        inputs = {k: v for k, v in arrays.items() if k in input_names}
        np.savez(folder / f"{name}_inputs.npz", **inputs)
        np.savez(folder / f"{name}_outputs.npz", **{k: v for k, v in arrays.items() if k not in inputs})
        path = folder / f"{name}_io.npz"
        write_npz(path, arrays)
        paths.append(path)
    return paths


def load_case(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def recorded_runs(paths: Sequence[Path], inputs: Sequence[tuple[str, np.dtype]]) -> Iterator[Run]:
    """Each saved case as a driver Run: its inputs in graph order, cast to the model's input
    types (name, numpy dtype), every other array expected."""
    names = [n for n, _ in inputs]
    for path in paths:
        data = load_case(path)
        yield Run(path.stem.removesuffix("_io"), [data[n].astype(t, copy=False) for n, t in inputs],
                  {k: v for k, v in data.items() if k not in names})
