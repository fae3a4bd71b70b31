"""`t2ir generate`: run an export-llm package in tract."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from t2ir.cli import app, fail
from t2ir.errors import T2IRError


@app.command()
def generate(
    export_dir: Path = typer.Argument(..., help="an export-llm output folder"),
    prompt: str = typer.Option(..., "--prompt", "-p"),
    n: int = typer.Option(20, "-n", "--max-new-tokens", min=1),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer folder (default OUT/tokenizer)"),
    temperature: float = typer.Option(0.0, "--temperature", "-t", min=0.0, help="0: greedy; higher: more random"),
    top_k: int = typer.Option(0, "--top-k", min=0, help="sample among the k most likely tokens (0: all)"),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="sample within this probability mass"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed for sampling (reproducible runs)"),
    chat: bool = typer.Option(False, "--chat", help="wrap the prompt in the tokenizer's chat template"),
    show_ids: bool = typer.Option(False, "--ids", help="print the token ids after the text"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no speed summary"),
) -> None:
    """Generate text in tract with an exported model: tokens stream as they come, then the speed."""
    from t2ir.llm.generate import Sampling, generate_text

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        sampling = Sampling(temperature, top_k, top_p if top_p > 0 else 1.0, seed)
        ids, _, stats = generate_text(export_dir, prompt, n, tokenizer, sampling=sampling, chat=chat, on_text=show)
    except T2IRError as e:
        fail(str(e))
    sys.stdout.write("\n" + (" ".join(map(str, ids)) + "\n" if show_ids else ""))
    sys.stdout.flush()
    if not quiet:
        typer.echo(str(stats), err=True)


@app.command()
def bench(
    export_dir: Path = typer.Argument(..., help="an export-llm output folder"),
    prompt_sizes: list[int] = typer.Option([512], "-p", "--prompt", help="ppN: N prompt tokens (repeatable)"),
    gen_sizes: list[int] = typer.Option([128], "-n", "--gen", help="tgN: N generated tokens (repeatable)"),
    repetitions: int = typer.Option(5, "-r", "--repetitions", min=1, help="timed runs per test (after a warm-up)"),
    past: int = typer.Option(0, "--past", min=0, help="tokens already in the cache before tgN"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write the results and machine as JSON"),
) -> None:
    """Prompt processing (ppN) and token generation (tgN) speed in tract, like llama-bench."""
    import json

    from t2ir.llm.bench import bench as run_bench
    from t2ir.llm.bench import machine

    info = machine()
    typer.echo(f"{info['cpu']} ({info['cores']} cores), python {info['python']}, t2ir {info['t2ir']}, "
               f"tract {info['tract']}")
    typer.echo(f"| {'test':>10} | {'tokens/s':>10} | {'+/-':>8} |")
    typer.echo(f"| {'-' * 10} | {'-' * 10} | {'-' * 8} |")

    def show(r) -> None:
        typer.echo(f"| {r.test:>10} | {r.tokens_per_second:>10.2f} | {r.spread:>8.2f} |")

    try:
        results = run_bench(export_dir, prompt_sizes, gen_sizes, repetitions, past, on_result=show)
    except T2IRError as e:
        fail(str(e))
    if json_path is not None:
        json_path.write_text(json.dumps({"machine": info, "model": str(export_dir),
                                         "results": [r.as_dict() for r in results]}, indent=2))
