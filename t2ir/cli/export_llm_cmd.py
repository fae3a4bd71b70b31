"""`t2ir export-llm`: a Hugging Face causal LM to a tract package.

Every flag of torch_to_nnef's `t2n_export_llm_to_tract` is accepted with its spelling and meaning,
so switching is changing the command name (docs/from-torch-to-nnef.md lists each flag and any
difference); t2ir's own spellings come first in each option.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from t2ir.checkio import DEFAULT_LEVEL, LEVELS
from t2ir.cli import app, fail
from t2ir.errors import T2IRError

# tract's tolerance levels, strictest first (t2ir.checkio has their numbers)
Level = Enum("Level", {name: name for name in LEVELS}, type=str)
Dtype = Enum("Dtype", {name: name for name in ("auto", "f32", "f16", "bf16")}, type=str)
Layout = Enum("Layout", {"deep": "deep", "flat": "flat"}, type=str)
Attention = Enum("Attention", {n: n for n in ("auto", "matmul", "sdpa")}, type=str)
# torch_to_nnef's compression names -> t2ir's methods. Its "_all" adds Conv1d/Conv2d filters,
# which t2ir keeps float (listed as kept in the quantization report).
T2N_COMPRESSION = {
    "min_max_q4_0": "q4_0",
    "min_max_q4_0_with_embeddings": "q4_0_with_embeddings",
    "min_max_q4_0_with_embeddings_99": "q4_0_with_embeddings_99",
    "min_max_q4_0_all": "q4_0_with_embeddings",
}
Compression = Enum("Compression", {n: n for n in ("q4_0", "q4_0_with_embeddings", "q4_0_with_embeddings_99",
                                                   *T2N_COMPRESSION)}, type=str)
# Flags torch_to_nnef needs for things t2ir does differently; accepted so scripts keep working.
IGNORED_T2N_FLAGS = {
    "tract_specific_path": "t2ir checks with the tract Python package, not a tract binary",
    "tract_specific_version": "t2ir checks with the tract Python package, not a tract binary",
    "naming_scheme": "t2ir names internal tensors after the IR values",
    "device_map": "t2ir streams the weights one at a time from the safetensors files: no device map is needed",
    "hf_download_n_retries": "t2ir never downloads (-s reads the local Hugging Face cache)",
    "trust_remote_code": "t2ir builds the model from transformers' own classes and runs no remote code",
    "test_display_token_gens": "run `t2ir generate OUT -p \"...\"` to see the exported model generate",
}
# ... and flags for features t2ir does not have: refused with the reason.
REFUSED_T2N_FLAGS = {
    "force_inputs_dtype": "the cache inputs follow --dtype (f16 for f16/bf16 models, as torch_to_nnef's default)",
    "upcast_quant": "checkpoints stored quantized (mxfp4, fp8, bnb) are not supported; export a float checkpoint",
    "compression_registry": "custom compression registries of torch_to_nnef functions cannot run here; register a "
                            "t2ir compression method instead (docs/quantization.md)",
}


@app.command("export-llm")
def export_llm_cmd(
    model_dir: Optional[Path] = typer.Option(None, "-d", "--model-dir", "--local-dir",
                                        help="folder written by save_pretrained"),
    model_slug: Optional[str] = typer.Option(None, "-s", "--model-slug",
                                        help="a Hugging Face model id, read from the local Hugging Face cache"),
    export_dir: Path = typer.Option(..., "-e", "--export-dir", "--export-dirpath",
                               help="output folder (must not exist unless --force)"),
    dtype: Dtype = typer.Option(Dtype.auto, "--dtype", "-dt", "--force-module-dtype",
                           help="precision of weights and activations; auto keeps the checkpoint's (bf16 -> f16)"),
    f32_norm: bool = typer.Option(False, "--f32-norm", "-f32-norm", "--force-f32-normalization",
                             help="compute normalisations in f32"),
    f32_attn: bool = typer.Option(False, "--f32-attn", "-f32-attn", "--force-f32-attention",
                             help="compute attention in f32"),
    f32_lin_acc: bool = typer.Option(False, "--f32-lin-acc", "-f32-lin-acc", "--force-f32-linear-accumulator",
                                help="accumulate f16 linear layers in f32"),
    compression: Optional[Compression] = typer.Option(None, "--compression", "-c", "--compression-method",
                                                 help="pack weights (torch_to_nnef's names accepted)"),
    keep_float: list[str] = typer.Option([], "--keep-float", metavar="GLOB",
                                    help="weights (by name, e.g. 'lm_head.*') never compressed; repeatable"),
    with_tokenizer_and_config: bool = typer.Option(False, "--with-tokenizer-and-config", "-dwtac",
                                              "--dump-with-tokenizer-and-conf",
                                              help="copy tokenizer files and config.json beside the model"),
    check_io: Level = typer.Option(Level(DEFAULT_LEVEL), "--check-io", "-tt", "--tract-check-io-tolerance",
                              help="run the test cases in tract and compare at this tract tolerance level"),
    no_verify: bool = typer.Option(False, "--no-verify", "-nv", help="do not run the test cases in tract"),
    num_logits_to_keep: int = typer.Option(1, "--num-logits-to-keep", min=0,
                                      help="logits of the last N positions (0: every position)"),
    sample_tokens: int = typer.Option(8, "--sample-generation-total-size", "-sgts", min=2,
                                 help="prompt length of the reference test cases"),
    layout: Layout = typer.Option(Layout.deep, "--export-dir-struct",
                             help="deep: OUT/model and OUT/tokenizer; flat: everything in OUT"),
    dump_ir: Optional[Path] = typer.Option(None, "--dump-ir", help="write the IR after every pass here"),
    check_passes: bool = typer.Option(False, "--check-passes",
                                      help="evaluate the graph after every pass and name the first that changes "
                                           "the outputs beyond --check-io's level"),
    dry_run: bool = typer.Option(False, "--dry-run", help="trace and plan only; write nothing"),
    force: bool = typer.Option(False, "--force", "-iaed", "--ignore-already-exist-dir",
                          help="replace an existing export folder (the old one stays until the new one is complete)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="also print the time and rule hits of every pass"),
    merge_peft: bool = typer.Option(False, "--merge-peft", "-mp", help="merge a LoRA adapter folder into its base"),
    attention: Attention = typer.Option(Attention.auto, "--attention",
                                        help="how fused attention runs in tract: matmul (matmuls + softmax), sdpa "
                                             "(tract's sdpa operator), auto (matmul, measured faster; sdpa for keys "
                                             "concatenated along the head dimension, which tract fails to split)"),
    attn_implementation: str = typer.Option("auto", "--attn-implementation", "--transformers-attn-implementation",
                                       help="transformers attention to trace: auto (sdpa where supported), sdpa "
                                            "or eager"),
    trace_every_layer: bool = typer.Option(False, "--trace-every-layer",
                                           help="trace every decoder layer (default: layers that look alike are "
                                                "traced once and copied in the graph)"),
    tract_specific_path: Optional[Path] = typer.Option(None, "--tract-specific-path", hidden=True, help="ignored"),
    tract_specific_version: Optional[str] = typer.Option(None, "--tract-specific-version", hidden=True, help="ignored"),
    naming_scheme: Optional[str] = typer.Option(None, "-n", "--naming-scheme", hidden=True, help="ignored"),
    reify_sdpa_operator: bool = typer.Option(False, "--reify-sdpa-operator",
                                             help="torch_to_nnef's name for --attention sdpa"),
    device_map: Optional[str] = typer.Option(None, "--device-map", hidden=True, help="ignored"),
    hf_download_n_retries: Optional[int] = typer.Option(None, "--hf-download-n-retries", hidden=True, help="ignored"),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code/--no-trust-remote-code", hidden=True,
                                                     help="ignored"),
    test_display_token_gens: bool = typer.Option(False, "-td", "--test-display-token-gens", hidden=True,
                                                 help="ignored"),
    force_inputs_dtype: Optional[str] = typer.Option(None, "-idt", "--force-inputs-dtype", hidden=True,
                                                     help="refused"),
    upcast_quant: Optional[str] = typer.Option(None, "--upcast-quant", hidden=True, help="refused"),
    compression_registry: Optional[str] = typer.Option(None, "--compression-registry", hidden=True, help="refused"),
) -> None:
    """Export a Hugging Face causal LM (a local folder, or a model id in the local cache) to a tract package."""
    from t2ir.llm.checkpoint import resolve_model_slug
    from t2ir.llm.exporter import export_llm
    from t2ir.options import LLMExportOptions
    from t2ir.progress import Reporter

    reporter = Reporter(quiet=quiet)
    given = locals()
    for flag, why in REFUSED_T2N_FLAGS.items():
        if given[flag] is not None:
            fail(f"--{flag.replace('_', '-')} is not supported: {why}")
    for flag, why in IGNORED_T2N_FLAGS.items():
        if given[flag] not in (None, False):
            reporter.line(f"note: --{flag.replace('_', '-')} has no effect: {why}")
    if (model_dir is None) == (model_slug is None):
        fail("give exactly one of -d/--model-dir (a local folder) and -s/--model-slug (a model id)")
    try:
        folder = model_dir if model_dir is not None else resolve_model_slug(model_slug)
        opts = LLMExportOptions(
            model_dir=folder, out_dir=export_dir, dtype=dtype.value, f32_norm=f32_norm, f32_attn=f32_attn,
            f32_linear_acc=f32_lin_acc,
            compression=T2N_COMPRESSION.get(compression.value, compression.value) if compression else None,
            keep_float=tuple(keep_float), with_tokenizer_and_config=with_tokenizer_and_config,
            check_io=None if no_verify else check_io.value, num_logits_to_keep=num_logits_to_keep,
            sample_tokens=sample_tokens, layout=layout.value, dump_ir=dump_ir, check_passes=check_passes,
            dry_run=dry_run, overwrite=force,
            merge_peft=merge_peft, attn_implementation=attn_implementation,
            attention="sdpa" if reify_sdpa_operator else attention.value, trace_every_layer=trace_every_layer)
        summary = export_llm(opts, reporter)
    except T2IRError as e:
        fail(str(e))
    if dry_run:
        return
    _print_summary(reporter, summary, opts, quiet, verbose)


def _print_summary(reporter, summary, opts, quiet: bool, verbose: bool) -> None:
    reporter.line(f"exported to {summary.out_dir} ({summary.output_bytes / 1e6:.1f} MB; weights in: "
                  f"{summary.weight_bytes / 1e6:.1f} MB)")
    reporter.line("time per phase: " + ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.items()))
    reporter.line(f"ops: {sum(summary.ops_before.values())} after lifting, {sum(summary.ops_after.values())} after passes")
    for line in summary.fusion_lines():
        reporter.line("  " + line)
    if summary.op_report is not None:
        reporter.line("op report:")
        for line in summary.op_report.lines():
            reporter.line("  " + line)
    if summary.pass_checks:
        reporter.line("check-passes (max |diff| from the model's outputs after each pass):")
        for c in summary.pass_checks:
            reporter.line(f"  {c.name:<24} {c.max_abs_diff:.3g}")
    if verbose:
        for r in summary.passes:
            hits = ", ".join(f"{k} {v}" for k, v in r.result.stats.items())
            reporter.line(f"  pass {r.name}: {r.seconds:.2f}s" + (f" ({hits})" if hits else ""))
    if summary.quant_report is not None and not quiet:
        summary.quant_report.print(reporter.stream)
    if summary.checks:
        worst: dict[str, float] = {}
        for c in summary.checks:
            worst[c.output] = max(worst.get(c.output, 0.0), c.max_abs_diff)
        reporter.line(f"check-io ({opts.check_io}): " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
        if not summary.check_passed:
            failed = [f"{c.case}:{c.output} (max |diff| {c.max_abs_diff:.3g}, {c.failed}/{c.total} values)"
                      for c in summary.checks if not c.passed]
            fail(f"tract's outputs differ from PyTorch beyond --check-io {opts.check_io}: {', '.join(failed)}; "
                 "try a looser level (very, super, ultra) or --f32-norm/--f32-attn", code=1)
