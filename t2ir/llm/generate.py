"""`t2ir generate`: text generation with an export-llm package in tract, feeding the KV cache back.

Tokens stream as they come; greedy by default, or sampled (temperature, top-k, top-p, seed);
`chat` wraps the prompt in the tokenizer's chat template; generation stops at end-of-sequence.
Nothing here needs torch or transformers: the cache layout comes from the model's own inputs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from t2ir.errors import T2IRError
from t2ir.tract_run import IOFact, io_facts, load_model, run_tract

_NUMPY = {"f32": np.float32, "f16": np.float16, "f64": np.float64}


def _eos_ids(out_dir: Path) -> set[int]:
    ids: set[int] = set()
    for name in ("tokenizer/generation_config.json", "tokenizer/config.json", "model/config.json",
                 "generation_config.json", "config.json"):
        path = out_dir / name
        if path.exists():
            eos = json.loads(path.read_text()).get("eos_token_id")
            ids |= set(eos) if isinstance(eos, list) else ({eos} if isinstance(eos, int) else set())
    return ids


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy when temperature is 0, else sampled from the
    temperature-scaled distribution restricted to the top_k tokens and the top_p probability mass."""

    temperature: float = 0.0
    top_k: int = 0       # 0: no limit
    top_p: float = 1.0
    seed: Optional[int] = None

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise T2IRError("sampling needs temperature >= 0, 0 < top_p <= 1 and top_k >= 0")

    def pick(self, logits: np.ndarray, rng: np.random.Generator) -> int:
        if self.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / self.temperature
        order = np.argsort(-z, kind="stable")
        if self.top_k:
            order = order[: self.top_k]
        p = np.exp(z[order] - z[order[0]])
        p /= p.sum()
        keep = int(np.searchsorted(np.cumsum(p), self.top_p - 1e-9) + 1)  # smallest prefix reaching top_p
        order, p = order[:keep], p[:keep] / p[:keep].sum()
        return int(rng.choice(order, p=p))


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    new_tokens: int = 0
    decode_seconds: float = 0.0

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        decode_steps = max(self.new_tokens - 1, 0)  # the first new token comes out of the prefill
        return decode_steps / self.decode_seconds if self.decode_seconds else 0.0

    def __str__(self) -> str:
        return (f"prefill: {self.prompt_tokens} tokens, {self.prefill_tokens_per_second:.1f} tokens/s; "
                f"decode: {max(self.new_tokens - 1, 0)} tokens, {self.decode_tokens_per_second:.1f} tokens/s")


def model_path(out_dir: Path) -> Path:
    """OUT/model/model.nnef.tgz (deep layout) or OUT/model.nnef.tgz (flat)."""
    for path in (out_dir / "model" / "model.nnef.tgz", out_dir / "model.nnef.tgz"):
        if path.exists():
            return path
    raise T2IRError(f"{out_dir} has no model/model.nnef.tgz: is it an export-llm output folder?")


class TractGenerator:
    """Holds the runnable model and its cache inputs (read from the model itself); yields one
    token id per step and records prefill/decode timings in `stats`."""

    def __init__(self, out_dir: Path | str):
        self.out_dir = Path(out_dir)
        model = load_model(model_path(self.out_dir))
        inputs, _ = io_facts(model)
        self.caches = inputs[1:]
        self.runnable = model.into_runnable()
        self.eos = _eos_ids(self.out_dir)
        self.stats = GenerationStats()

    @staticmethod
    def empty_cache(fact: IOFact) -> np.ndarray:
        """A cache input with no past: its symbolic (past length) axis is 0."""
        shape = tuple(d if isinstance(d, int) else 0 for d in fact.dims)
        return np.zeros(shape, _NUMPY.get(fact.dtype, np.float32))

    def tokens(self, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling = Sampling()) -> Iterator[int]:
        rng = np.random.default_rng(sampling.seed)
        past = [self.empty_cache(f) for f in self.caches]
        ids = np.array([prompt_ids], dtype=np.int64)
        self.stats = GenerationStats(prompt_tokens=len(prompt_ids))
        for step in range(max_new_tokens):
            start = time.perf_counter()
            out = run_tract(self.runnable, [ids, *past])
            elapsed = time.perf_counter() - start
            if step == 0:
                self.stats.prefill_seconds = elapsed
            else:
                self.stats.decode_seconds += elapsed
            token = sampling.pick(out[0][0, -1], rng)
            self.stats.new_tokens += 1
            yield token
            if token in self.eos:
                return
            if self.caches:
                past, ids = out[1:], np.array([[token]], dtype=np.int64)
            else:  # a model without a cache reads the whole sequence again
                ids = np.concatenate([ids, [[token]]], axis=1)


def load_tokenizer(out_dir: Path, tokenizer_dir: Optional[Path] = None):
    from tokenizers import Tokenizer

    folder = _tokenizer_folder(out_dir, tokenizer_dir)
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def _tokenizer_folder(out_dir: Path, tokenizer_dir: Optional[Path]) -> Path:
    for folder in ([tokenizer_dir] if tokenizer_dir else [out_dir / "tokenizer", out_dir]):
        if (folder / "tokenizer.json").exists():
            return folder
    raise T2IRError(f"no tokenizer.json in {tokenizer_dir or out_dir / 'tokenizer'}: export with "
                    "--with-tokenizer-and-config or pass --tokenizer DIR")


def chat_prompt(tokenizer_dir: Path, user_text: str) -> str:
    """The prompt as the tokenizer's chat template writes a one-message conversation, ready for
    the assistant's answer (what transformers' apply_chat_template renders)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    config_path = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is None and (tokenizer_dir / "chat_template.jinja").exists():
        template = (tokenizer_dir / "chat_template.jinja").read_text()
    if not template:
        raise T2IRError(f"the tokenizer in {tokenizer_dir} has no chat template: drop --chat")

    def raise_exception(message):
        raise T2IRError(f"the chat template refused the conversation: {message}")

    def token_text(name: str) -> str:
        value = config.get(name) or ""
        return value.get("content", "") if isinstance(value, dict) else value

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: time.strftime(fmt))
    try:
        return env.from_string(template).render(messages=[{"role": "user", "content": user_text}],
                                                add_generation_prompt=True, bos_token=token_text("bos_token"),
                                                eos_token=token_text("eos_token"))
    except jinja2.TemplateError as e:
        raise T2IRError(f"the chat template in {tokenizer_dir} failed: {e}") from None


class TextStream:
    """Turns token ids into text as they come: decodes all so far and hands out the new part,
    holding back an incomplete multi-byte character."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self.shown = ""

    def add(self, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        if text.startswith(self.shown):
            self.on_text(text[len(self.shown):])
        self.shown = text


def generate_text(out_dir: Path, prompt: str, max_new_tokens: int, tokenizer_dir: Optional[Path] = None, *,
                  sampling: Sampling = Sampling(), chat: bool = False,
                  on_text: Optional[Callable[[str], None]] = None) -> tuple[list[int], str, GenerationStats]:
    """Generate up to `max_new_tokens` after `prompt`; `on_text` receives the text as it comes."""
    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(out_dir, tokenizer_dir)
    if chat:
        text = chat_prompt(_tokenizer_folder(out_dir, tokenizer_dir), prompt)
        prompt_ids = tokenizer.encode(text, add_special_tokens=False).ids
    else:
        prompt_ids = tokenizer.encode(prompt).ids
    if not prompt_ids:
        raise T2IRError("the prompt encodes to no tokens: give a non-empty prompt")
    generator = TractGenerator(out_dir)
    stream = TextStream(tokenizer, on_text or (lambda _: None))
    new = []
    for token in generator.tokens(prompt_ids, max_new_tokens, sampling):
        new.append(token)
        stream.add(token)
    return new, tokenizer.decode(new), generator.stats
