"""Throughput of t2ir's Q4_0 quantizer vs gguf-py's, in MB/s of f32 input; prints a markdown table.

The last column times what an export does per weight: quantize, measure the relative error for
the quantization report (dequantize and compare), and write the .dat (to /dev/null).

Run by hand: ``python bench/bench_q4_0.py [--reps 5] [--shapes 4096x4096 11008x4096]``.
Runs of the three alternate so background load hits them alike; the median is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version

import gguf
import numpy as np
import torch
from gguf.quants import quantize as gguf_quantize

from t2ir.emitters.encodings import write_q4_0
from t2ir.compression.q4_0 import quantize_q4_0
from t2ir.ir import Graph, InMemory
from t2ir.types import DType, TensorType

MB = 1e6
DEFAULT_SHAPES = ["4096x4096", "11008x4096", "32000x4096"]


def parse_shape(text: str) -> tuple[int, int]:
    rows, cols = (int(part) for part in text.lower().split("x"))
    return rows, cols


def gguf_q4_0(w: np.ndarray) -> np.ndarray:
    return gguf_quantize(w, gguf.GGMLQuantizationType.Q4_0)


def time_alternating(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_shape(shape: tuple[int, int], reps: int) -> str:
    """One markdown table row for ``shape`` (after checking both give the same bytes)."""
    w = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    if not np.array_equal(quantize_q4_0(w), gguf_q4_0(w)):
        raise AssertionError(f"t2ir and gguf disagree on {shape}")
    tensor = torch.from_numpy(w)
    const = Graph().add_const("w", TensorType(DType.f32, shape), InMemory(tensor))
    with open(os.devnull, "wb") as sink:
        fns = {
            "gguf": lambda: gguf_q4_0(w),
            "t2ir": lambda: quantize_q4_0(w),
            "writer": lambda: write_q4_0(sink, tensor, const),
        }
        secs = time_alternating(fns, reps)
    mb = w.nbytes / MB
    ours, theirs, writer = mb / secs["t2ir"], mb / secs["gguf"], mb / secs["writer"]
    return (
        f"| {shape[0]}x{shape[1]} | {mb:.0f} | {theirs:.0f} | {ours:.0f} | {ours / theirs:.1f}x "
        f"| {writer:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES)
    args = parser.parse_args()
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"numpy {np.__version__}, torch {torch.__version__}, gguf {version('gguf')}; "
        f"median of {args.reps} runs\n"
    )
    print("| matrix (f32) | input MB | gguf-py MB/s | t2ir MB/s | speed-up | t2ir + error + .dat MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for text in args.shapes:
        print(bench_shape(parse_shape(text), args.reps), flush=True)


if __name__ == "__main__":
    main()
