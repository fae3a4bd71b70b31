"""`t2ir bench`: prompt-processing and token-generation speed of an export-llm package in tract,
measured like llama-bench's pp512 / tg128.

- ppN: one call with N prompt tokens from an empty cache; tokens/s = N / time.
- tgN: N decode calls of one token each, starting from an empty cache and feeding the caches
  back; tokens/s = N / total time.
Each test runs once to warm up, then `repetitions` times; the median and the spread are reported,
with the machine and the versions, so numbers from different runs can be compared.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from t2ir.llm.generate import TractGenerator
from t2ir.tract_run import run_tract


@dataclass
class BenchResult:
    test: str                 # "pp512", "tg128"
    tokens: int
    seconds: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """Standard deviation of the tokens/s over the repetitions."""
        rates = [self.tokens / s for s in self.seconds]
        return statistics.stdev(rates) if len(rates) > 1 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second, "spread": self.spread}


def machine() -> dict[str, str]:
    """What the numbers depend on: CPU, core count and the versions of the pieces."""
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version()}
    for pkg in ("t2ir", "tract"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = "not installed"
    return info


class Bench:
    """Times one exported model; the generator gives the runnable and its cache layout."""

    def __init__(self, out_dir: Path | str, seed: int = 0):
        self.gen = TractGenerator(out_dir)
        self.rng = np.random.default_rng(seed)

    def _ids(self, n: int) -> np.ndarray:
        # token ids below the smallest vocabulary we support: any model accepts them
        return self.rng.integers(3, 100, size=(1, n), dtype=np.int64)

    def _empty(self) -> list[np.ndarray]:
        return [self.gen.empty_cache(f) for f in self.gen.caches]

    def _past(self, p: int) -> list[np.ndarray]:
        """Caches holding p positions of random values (what a step reads does not depend on them);
        a fixed-size state (no symbolic axis) keeps its size."""
        caches = []
        for fact, empty in zip(self.gen.caches, self._empty()):
            shape = [p if isinstance(d, str) else d for d in fact.dims]
            caches.append((self.rng.standard_normal(shape, dtype=np.float32) * 0.5).astype(empty.dtype))
        return caches

    def prompt(self, n: int) -> float:
        return self.step(n, 0)

    def step(self, n: int, past: int) -> float:
        """Seconds of one call with n new tokens on a past of `past` positions (inputs made first)."""
        feed = [self._ids(n), *(self._past(past) if past else self._empty())]
        start = time.perf_counter()
        run_tract(self.gen.runnable, feed)
        return time.perf_counter() - start

    def generation(self, n: int, past: int = 0) -> float:
        """Seconds for n one-token decode steps after a `past`-token prompt (not timed)."""
        if not self.gen.caches:  # a model without a cache reads the whole sequence at each step
            return sum(self.step(past + k + 1, 0) for k in range(n))
        caches = self._empty()
        if past:
            caches = run_tract(self.gen.runnable, [self._ids(past), *caches])[1:]
        total = 0.0
        for _ in range(n):
            start = time.perf_counter()
            caches = run_tract(self.gen.runnable, [self._ids(1), *caches])[1:]
            total += time.perf_counter() - start
        return total

    def run(self, test: str, tokens: int, timed: Callable[[], float], repetitions: int) -> BenchResult:
        timed()  # warm-up
        return BenchResult(test, tokens, [timed() for _ in range(repetitions)])


def bench(out_dir: Path | str, prompt_sizes: Sequence[int] = (512,), gen_sizes: Sequence[int] = (128,),
          repetitions: int = 5, past: int = 0, on_result: Optional[Callable[[BenchResult], None]] = None
          ) -> list[BenchResult]:
    b = Bench(out_dir)
    results = []
    for n in prompt_sizes:
        results.append(b.run(f"pp{n}", n, lambda n=n: b.prompt(n), repetitions))
        if on_result:
            on_result(results[-1])
    for n in gen_sizes:
        name = f"tg{n}" + (f"@{past}" if past else "")
        results.append(b.run(name, n, lambda n=n: b.generation(n, past), repetitions))
        if on_result:
            on_result(results[-1])
    return results
