"""`t2ir generate`: greedy decoding of an export-llm package in tract, feeding the KV cache back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from t2ir.errors import T2IRError
from t2ir.tract_run import IOFact, io_facts, load_model, run_tract

_NUMPY = {"f32": np.float32, "f16": np.float16, "f64": np.float64}


def _eos_ids(out_dir: Path) -> set[int]:
    ids: set[int] = set()
    for name in ("tokenizer/generation_config.json", "tokenizer/config.json", "model/config.json"):
        path = out_dir / name
        if path.exists():
            eos = json.loads(path.read_text()).get("eos_token_id")
            ids |= set(eos) if isinstance(eos, list) else ({eos} if isinstance(eos, int) else set())
    return ids


class TractGenerator:
    """Holds the runnable model and its cache inputs (read from the model itself); yields one
    token id per step."""

    def __init__(self, out_dir: Path | str):
        self.out_dir = Path(out_dir)
        path = self.out_dir / "model" / "model.nnef.tgz"
        if not path.exists():
            raise T2IRError(f"{path} does not exist: is {self.out_dir} an export-llm output folder?")
        model = load_model(path)
        inputs, _ = io_facts(model)
        self.caches = inputs[1:]
        self.runnable = model.into_runnable()
        self.eos = _eos_ids(self.out_dir)

    @staticmethod
    def empty_cache(fact: IOFact) -> np.ndarray:
        """A cache input with no past: its symbolic (past length) axis is 0."""
        shape = tuple(d if isinstance(d, int) else 0 for d in fact.dims)
        return np.zeros(shape, _NUMPY.get(fact.dtype, np.float32))

    def tokens(self, prompt_ids: list[int], max_new_tokens: int) -> Iterator[int]:
        past = [self.empty_cache(f) for f in self.caches]
        ids = np.array([prompt_ids], dtype=np.int64)
        for _ in range(max_new_tokens):
            out = run_tract(self.runnable, [ids, *past])
            token = int(np.argmax(out[0][0, -1]))
            yield token
            if token in self.eos:
                return
            past = out[1:]
            ids = np.array([[token]], dtype=np.int64)


def load_tokenizer(out_dir: Path, tokenizer_dir: Optional[Path] = None):
    from tokenizers import Tokenizer

    folder = tokenizer_dir or out_dir / "tokenizer"
    path = folder / "tokenizer.json"
    if not path.exists():
        raise T2IRError(f"{path} not found: export with --with-tokenizer-and-config or pass --tokenizer DIR")
    return Tokenizer.from_file(str(path))


def generate_text(out_dir: Path, prompt: str, max_new_tokens: int, tokenizer_dir: Optional[Path] = None) -> tuple[list[int], str]:
    tokenizer = load_tokenizer(Path(out_dir), tokenizer_dir)
    prompt_ids = tokenizer.encode(prompt).ids
    if not prompt_ids:
        raise T2IRError("the prompt encodes to no tokens: give a non-empty prompt")
    new = list(TractGenerator(out_dir).tokens(prompt_ids, max_new_tokens))
    return new, tokenizer.decode(new)
