"""`t2ir export-llm` and `t2ir generate`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from t2ir.checkio import LEVELS
from t2ir.cli import app, fail
from t2ir.errors import T2IRError


class Dtype(str, Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"


class Compression(str, Enum):
    q4_0 = "q4_0"
    q4_0_with_embeddings = "q4_0_with_embeddings"


# tract's tolerance levels, strictest first (t2ir.checkio has their numbers)
Level = Enum("Level", {name: name for name in LEVELS}, type=str)


@app.command("export-llm")
def export_llm_cmd(
    model_dir: Path = typer.Option(..., "-d", "--model-dir", help="folder written by save_pretrained"),
    export_dir: Path = typer.Option(..., "-e", "--export-dir", help="output folder (must not exist unless --force)"),
    dtype: Dtype = typer.Option(Dtype.f32, "--dtype", help="precision of weights and activations"),
    f32_norm: bool = typer.Option(False, "--f32-norm", help="compute normalisations in f32"),
    f32_attn: bool = typer.Option(False, "--f32-attn", help="compute attention in f32"),
    compression: Optional[Compression] = typer.Option(None, "--compression", help="pack weights"),
    keep_float: list[str] = typer.Option([], "--keep-float", metavar="GLOB",
                                         help="weights (by name, e.g. 'lm_head.*') never compressed; repeatable"),
    with_tokenizer_and_config: bool = typer.Option(False, "--with-tokenizer-and-config",
                                                   help="copy tokenizer files to OUT/tokenizer"),
    check_io: Optional[Level] = typer.Option(None, "--check-io", help="run the test cases in tract at this tolerance"),
    num_logits_to_keep: Optional[int] = typer.Option(None, "--num-logits-to-keep", min=1,
                                                     help="only the last N positions' logits"),
    dump_ir: Optional[Path] = typer.Option(None, "--dump-ir", help="write the IR after every pass here"),
    dry_run: bool = typer.Option(False, "--dry-run", help="trace and plan only; write nothing"),
    force: bool = typer.Option(False, "--force", help="replace an existing export folder"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
    merge_peft: bool = typer.Option(False, "--merge-peft", help="merge a LoRA adapter folder into its base"),
    attn_implementation: str = typer.Option("auto", "--attn-implementation",
                                            help="transformers attention: auto (sdpa where supported), sdpa or eager"),
) -> None:
    """Export a local Hugging Face causal LM folder to a tract package."""
    from t2ir.llm.exporter import export_llm
    from t2ir.options import LLMExportOptions
    from t2ir.progress import Reporter

    opts = LLMExportOptions(
        model_dir=model_dir, out_dir=export_dir, dtype=dtype.value, f32_norm=f32_norm, f32_attn=f32_attn,
        compression=compression.value if compression else None, keep_float=tuple(keep_float),
        with_tokenizer_and_config=with_tokenizer_and_config,
        check_io=check_io.value if check_io else None, num_logits_to_keep=num_logits_to_keep, dump_ir=dump_ir,
        dry_run=dry_run, overwrite=force, merge_peft=merge_peft, attn_implementation=attn_implementation)
    reporter = Reporter(quiet=quiet)
    try:
        summary = export_llm(opts, reporter)
    except T2IRError as e:
        fail(str(e))
    if dry_run:
        return
    reporter.line(f"exported to {summary.out_dir} ({summary.output_bytes / 1e6:.1f} MB; weights in: "
                  f"{summary.weight_bytes / 1e6:.1f} MB)")
    reporter.line("time per phase: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.items()))
    reporter.line(f"ops: {sum(summary.ops_before.values())} after lifting, {sum(summary.ops_after.values())} after passes")
    for line in summary.fusion_lines():
        reporter.line("  " + line)
    if summary.quant_report is not None and not quiet:
        summary.quant_report.print(reporter.stream)
    if summary.checks:
        worst = {}
        for c in summary.checks:
            worst[c.output] = max(worst.get(c.output, 0.0), c.max_abs_diff)
        reporter.line(f"check-io ({opts.check_io}): " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
        if not summary.check_passed:
            failed = [f"{c.case}:{c.output} (max |diff| {c.max_abs_diff:.3g})" for c in summary.checks if not c.passed]
            fail(f"tract's outputs differ from PyTorch beyond --check-io {opts.check_io}: {', '.join(failed)}; "
                  "try a looser level or --f32-norm/--f32-attn", code=1)


@app.command()
def generate(
    export_dir: Path = typer.Argument(..., help="an export-llm output folder"),
    prompt: str = typer.Option(..., "--prompt", "-p"),
    n: int = typer.Option(20, "-n", "--max-new-tokens", min=1),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer folder (default OUT/tokenizer)"),
    show_ids: bool = typer.Option(False, "--ids", help="print the token ids too"),
) -> None:
    """Greedy generation in tract with the exported model and its tokenizer."""
    from t2ir.llm.generate import generate_text

    try:
        ids, text = generate_text(export_dir, prompt, n, tokenizer)
    except T2IRError as e:
        fail(str(e))
    if show_ids:
        typer.echo(" ".join(map(str, ids)))
    typer.echo(text)
