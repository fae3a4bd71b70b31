"""The test cases stored in OUT/tests/*_io.npz: inputs and PyTorch outputs for tract to replay.

Names follow torch_to_nnef's LLM export so existing runners read them: `input_ids`,
`in_cache_{key,value}_{i}`, `outputs`, `out_cache_{key,value}_{i}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from t2ir.driver import Run
from t2ir.frontend.cache_layout import KvLayer, cache_input_names, cache_output_names, empty_caches

CASES = ("export", "prompt", "prompt_with_past", "text_generation")
Forward = Callable[..., Sequence[torch.Tensor]]


def _np(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    t = t.detach()
    if t.is_floating_point():
        t = t.to(torch.float16 if dtype in (torch.float16, torch.bfloat16) else torch.float32)
    return t.numpy()


def _record(forward: Forward, ids: torch.Tensor, past: list[torch.Tensor], layout: list[KvLayer],
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


def make_cases(forward: Forward, *, layout: list[KvLayer], vocab_size: int, dtype: torch.dtype,
               tokenizer_dir: Optional[Path] = None, n_tokens: int = 8) -> dict[str, dict]:
    """prompt: n tokens from an empty cache; prompt_with_past: the second half after the first;
    text_generation: one token after n - 1; export: 3 tokens after 5 (the traced sizes)."""
    ids = prompt_ids(tokenizer_dir, vocab_size, n_tokens)
    empty = empty_caches(layout, dtype)
    cases = {}
    cases["prompt"], _ = _record(forward, ids, empty, layout, dtype)
    half = n_tokens // 2
    _, past_half = _record(forward, ids[:, :half], empty, layout, dtype)
    cases["prompt_with_past"], _ = _record(forward, ids[:, half:], past_half, layout, dtype)
    _, past_most = _record(forward, ids[:, :-1], empty, layout, dtype)
    cases["text_generation"], _ = _record(forward, ids[:, -1:], past_most, layout, dtype)
    _, past5 = _record(forward, ids[:, :5], empty, layout, dtype)
    cases["export"], _ = _record(forward, ids[:, 5:8], past5, layout, dtype)
    return cases


def save_cases(cases: dict[str, dict], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, arrays in cases.items():
        path = folder / f"{name}_io.npz"
        np.savez(path, **arrays)
        paths.append(path)
    return paths


def load_case(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def recorded_runs(paths: Sequence[Path], input_names: Sequence[str]) -> Iterator[Run]:
    """Each saved case as a driver Run: its inputs in graph order, every other array expected."""
    for path in paths:
        data = load_case(path)
        yield Run(path.stem.removesuffix("_io"), [data[n] for n in input_names],
                  {k: v for k, v in data.items() if k not in input_names})
