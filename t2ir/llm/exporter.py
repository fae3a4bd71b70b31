"""`t2ir export-llm`: a local Hugging Face causal LM folder to a tract package, laid out like
torch_to_nnef's LLM export so its runners read it:

    OUT/model/model.nnef.tgz   OUT/model/config.json   OUT/tokenizer/...   OUT/modes.json
    OUT/tests/{export,prompt,prompt_with_past,text_generation}_{inputs,outputs,io}.npz
    OUT/manifest.json

(`layout="flat"` puts model and tokenizer files in OUT itself.)

The model is built on the meta device and traced there; each weight streams from its safetensors
shard through conversion (and packing) to its .dat, one at a time. The whole OUT folder is staged
next to its final place and moved there at the end.
"""

from __future__ import annotations

import collections
import json
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from t2ir import driver
from t2ir.checkio import OutputCheck
from t2ir.emitters.staging import atomic_output, check_target
from t2ir.errors import T2IRError
from t2ir.ir import Graph
from t2ir.llm.checkpoint import TOKENIZER_FILES, Checkpoint, FileHashes, load_config, open_checkpoint
from t2ir.llm.vision_language import is_vision_language, model_class_for
from t2ir.llm.weight_map import WeightMap
from t2ir.options import LLMExportOptions
from t2ir.passcheck import PassCheck, PassChecker
from t2ir.passes.op_report import OpReport
from t2ir.progress import Reporter

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
MODES_FILE = "modes.json"


@dataclass
class ExportSummary:
    out_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    packed: dict[str, int] = field(default_factory=dict)
    output_bytes: int = 0
    weight_bytes: int = 0
    checks: list[OutputCheck] = field(default_factory=list)
    check_passed: Optional[bool] = None
    quant_report: Optional[object] = None
    passes: list = field(default_factory=list)  # PassRecord per pass run
    op_report: Optional[OpReport] = None
    pass_checks: list[PassCheck] = field(default_factory=list)  # with --check-passes

    def fusion_lines(self) -> list[str]:
        a = self.ops_after
        fused = next((r.result.stats for r in self.passes if r.name == "fuse-attention"), {})
        attention = fused.get("sdpa", 0) + fused.get("eager", 0)
        form = "tract's sdpa" if a.get("tract_transformers.sdpa") else "matmuls + softmax"
        norms = a.get("tract_core.rms_norm", 0) + a.get("tract_core.scaled_rms_norm", 0) + a.get("tract_transformers.rms_norm", 0)
        rope = a.get("tract_transformers.apply_rope", 0)
        return [f"attention layers fused: {attention} (run as {form})", f"rms norms fused: {norms}",
                f"rotary embeddings fused: {rope}", f"matmuls: {a.get('nnef.matmul', 0)}",
                *(f"weights stored as {enc}: {n}" for enc, n in self.packed.items())]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("t2ir", "torch", "transformers", "tract", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _op_counts(g: Graph) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op for n in g.nodes).items()))


def resolve_dtype(dtype: str, ckpt: Checkpoint) -> torch.dtype:
    """The torch dtype to build the model in; "auto" keeps the checkpoint's (by weight count)."""
    if dtype == "auto":
        dtype = ckpt.stored_dtype()
    if dtype not in DTYPES:
        raise T2IRError(f"--dtype {dtype!r} is not supported: use one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def declare_llm_facts(graph: Graph, config) -> None:
    """What tract may assume about the symbols (torch_to_nnef's tract_assert lines): a past of any
    length, at least one new token, positions inside the model's range, and the two scenarios
    runners use: token generation (one new token) and prompt processing (no past); only the facts
    about S for a model without a cache."""
    if "S" not in graph.symbols:
        return
    past = "P" in graph.symbols  # no P: a model without a cache reads the whole sequence each step
    if past:
        graph.add_assertion("P >= 0")
    graph.add_assertion("S >= 1")
    max_positions = getattr(config.get_text_config(decoder=True), "max_position_embeddings", None)
    if isinstance(max_positions, int) and max_positions > 0:
        graph.add_assertion(f"S + P <= {max_positions}" if past else f"S <= {max_positions}")
    if past:
        graph.add_assertion("tg: S == 1")
        graph.add_assertion("pp: P == 0")


@dataclass
class TracedLLM:
    """What tracing produced: the meta model, its config, the cache layout, the weights and the graph."""

    model: torch.nn.Module
    config: object
    layout: list
    weights: WeightMap
    graph: Graph


def trace_graph(ckpt: Checkpoint, opts: LLMExportOptions, reporter: Reporter) -> TracedLLM:
    """Meta-device model -> IR graph whose weights are lazy (converted) safetensors handles."""
    from t2ir.frontend.causal_lm import StampingWarning, build_meta_model, cache_layout_of, lift_causal_lm

    config = load_config(ckpt)
    dtype = resolve_dtype(opts.dtype, ckpt)
    auto_class = model_class_for(config)
    try:
        model = build_meta_model(config, dtype, attn_implementation=opts.attn_implementation, auto_class=auto_class)
        if is_vision_language(model):
            reporter.line(f"note: {type(model).__name__} is a vision-language model: its text path is exported "
                          "(token ids in, logits out, no image input)")
    except ValueError as e:
        raise T2IRError(f"transformers cannot build {config.model_type} with attn_implementation="
                        f"{opts.attn_implementation!r}: {e}") from None
    except T2IRError:
        raise
    except Exception as e:
        raise T2IRError(f"cannot build a {type(config).__name__} causal LM from {ckpt.folder}: {e}") from None
    ckpt.check_shapes(model)
    weights = WeightMap(model, ckpt)
    layout = cache_layout_of(model)
    if not layout:
        reporter.line(f"note: {type(model).__name__} keeps no key/value cache: exported as a graph of the whole "
                      "sequence (input_ids -> logits), each step reads every token")

    def weight_source(target: str, tensor: torch.Tensor):
        if target in weights.sources or tensor.is_meta:
            return weights.source(target)
        return None  # computed buffers (rotary inv_freq, ...) are real tensors already

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StampingWarning)
        graph = lift_causal_lm(model, num_logits_to_keep=opts.num_logits_to_keep, weight_source=weight_source,
                               layout=layout, every_layer=opts.trace_every_layer)
    for w in caught:
        if issubclass(w.category, StampingWarning):
            reporter.line(f"note: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    declare_llm_facts(graph, config)
    return TracedLLM(model, config, layout, weights, graph)


def _predicted_bytes(g: Graph) -> int:
    from t2ir.compression.q4_0 import packed_nbytes

    total = 0
    for v in g.consts:
        shape = [int(d) for d in v.shape]
        n = 1
        for d in shape:
            n *= d
        total += 128 + (packed_nbytes(shape) if v.const.encoding == "q4_0" else n * v.dtype.itemsize)
    return total


def plan_lines(g: Graph, ckpt: Checkpoint) -> list[str]:
    """What --dry-run prints: ops after passes, packing, predicted sizes and memory."""
    largest = max((v for v in g.consts), key=lambda v: v.type.numel() if isinstance(v.type.numel(), int) else 0)
    largest_bytes = int(largest.type.numel()) * 4
    packed = [v.const.label for v in g.consts if v.const.encoding != "plain"]
    lines = ["ops after passes:"] + [f"  {n:5d}  {op}" for op, n in _op_counts(g).items()]
    lines.append(f"weights: {len(g.consts)} tensors, {len(packed)} packed"
                 + (f" ({', '.join(packed[:6])}{', ...' if len(packed) > 6 else ''})" if packed else ""))
    lines.append(f"predicted model size: {_predicted_bytes(g) / 1e6:.1f} MB (checkpoint: {ckpt.tensor_nbytes() / 1e6:.1f} MB)")
    lines.append(f"predicted peak memory for weights: ~{3 * largest_bytes / 1e6:.1f} MB "
                 f"(largest tensor {largest.const.label}, streamed one at a time)")
    return lines


def export_llm(opts: LLMExportOptions, reporter: Optional[Reporter] = None) -> ExportSummary:
    reporter = reporter or Reporter(quiet=True)
    out_dir = Path(opts.out_dir)
    if not opts.dry_run:  # before the work: atomic_output checks again when it starts writing
        check_target(out_dir, opts.overwrite, folder=True)
    summary = ExportSummary(out_dir)
    with reporter.phase("load"):
        ckpt = open_checkpoint(opts.model_dir, merge_peft=opts.merge_peft)
        summary.weight_bytes = ckpt.tensor_nbytes()
    hashes = FileHashes([] if opts.dry_run else ckpt.files)  # for the manifest, on a thread while the export runs
    try:
        return _export(opts, reporter, ckpt, hashes, summary)
    finally:
        hashes.cancel()


def _export(opts: LLMExportOptions, reporter: Reporter, ckpt: Checkpoint, hashes: FileHashes,
            summary: ExportSummary) -> ExportSummary:
    out_dir = summary.out_dir
    with reporter.phase("trace"):
        traced = trace_graph(ckpt, opts, reporter)
        graph = traced.graph
    summary.ops_before = _op_counts(graph)
    checker = _pass_checker(ckpt, traced, opts) if opts.check_passes else None
    with reporter.phase("passes"):
        run = driver.compile_graph(graph, opts, on_pass=lambda name: reporter.advance(name), checker=checker)
    summary.ops_after = _op_counts(graph)
    summary.passes = run.records
    summary.op_report = run.op_report(graph)
    summary.pass_checks = checker.checks if checker is not None else []
    summary.packed = dict(collections.Counter(v.const.encoding for v in graph.consts if v.const.encoding != "plain"))
    if opts.dry_run:
        for line in plan_lines(graph, ckpt):
            reporter.line(line)
        summary.timings = dict(reporter.timings)
        return summary
    with atomic_output(out_dir, overwrite=opts.overwrite) as staged:
        report = driver.quant_report(run)
        model_dir = staged / "model" if opts.layout == "deep" else staged
        with reporter.phase("write", total=len(graph.consts)):
            model_path = model_dir / "model.nnef.tgz"
            driver.write(graph, model_path, run, progress=lambda name, size: reporter.advance(name))
            shutil.copy(ckpt.folder / "config.json", model_dir / "config.json")
            if opts.with_tokenizer_and_config:
                _copy_tokenizer(ckpt.folder, staged / "tokenizer" if opts.layout == "deep" else staged)
        if opts.tests or opts.check_io:
            with reporter.phase("reference"):
                case_files = _write_cases(traced, ckpt, opts, staged, report)
                _write_modes(staged / MODES_FILE)
        if opts.check_io:
            with reporter.phase("check"):
                from t2ir.llm.io_cases import recorded_runs

                inputs = [(v.name, v.dtype.numpy) for v in graph.inputs]
                outputs = [v.name for v in graph.outputs]
                summary.checks = driver.check(model_path, outputs, recorded_runs(case_files, inputs), opts.check_io)
                summary.check_passed = all(c.passed for c in summary.checks)
        summary.quant_report = report
        summary.timings = dict(reporter.timings)
        summary.output_bytes = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
        _write_manifest(staged / "manifest.json", hashes.result(), opts, run.records, summary)
    return summary


def _pass_checker(ckpt: Checkpoint, traced: TracedLLM, opts: LLMExportOptions) -> PassChecker:
    """--check-passes on the traced sizes (3 new tokens after 5 cached ones, random cache); the
    reference is the lifted graph's own evaluation, i.e. the model's aten ops run by PyTorch."""
    from t2ir.frontend.cache_layout import empty_caches
    from t2ir.llm.io_cases import prompt_ids

    g = torch.Generator().manual_seed(0)
    ids = prompt_ids(ckpt.folder, traced.config.get_text_config(decoder=True).vocab_size, 8)[:, 5:8]
    dtype = resolve_dtype(opts.dtype, ckpt)
    cache = [torch.randn(c.shape, generator=g).to(dtype) for c in empty_caches(traced.layout, dtype, length=5)]
    return PassChecker([ids, *cache], None, opts.check_io or driver.DEFAULT_LEVEL)


def _copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    found = [f for f in TOKENIZER_FILES if (src / f).exists()]
    if "tokenizer.json" not in found and "tokenizer.model" not in found:
        raise T2IRError(f"{src} has no tokenizer files (tokenizer.json): save the tokenizer next to the model "
                        "or drop --with-tokenizer-and-config")
    for f in found:
        shutil.copy(src / f, dst / f)
    shutil.copy(src / "config.json", dst / "config.json")


def _write_modes(path: Path) -> None:
    """torch_to_nnef's modes.json: the reference cases runners may replay (its exact bytes)."""
    from t2ir.llm.io_cases import MODES

    path.write_text(json.dumps({"pytorch_supported_modes": list(MODES)}))


def _write_cases(traced: TracedLLM, ckpt: Checkpoint, opts: LLMExportOptions, staged: Path, report) -> list[Path]:
    """PyTorch outputs for the npz cases. With packed weights the reference computes with the
    dequantized weights, so the cases check the export itself, not the quantization error."""
    from t2ir.frontend.causal_lm import CausalLMWithExplicitCache
    from t2ir.llm.io_cases import make_cases, save_cases
    from t2ir.llm.reference import streamed_weights

    transform = _dequantized_reference(report) if report is not None and report.packed else None
    dtype = resolve_dtype(opts.dtype, ckpt)
    model = traced.model
    wrapper = CausalLMWithExplicitCache(model, num_logits_to_keep=opts.num_logits_to_keep, layout=traced.layout).eval()
    vocab = traced.config.get_text_config(decoder=True).vocab_size
    with streamed_weights(model, traced.weights, dtype, transform):
        cases = make_cases(wrapper, layout=traced.layout, vocab_size=vocab, dtype=dtype, tokenizer_dir=ckpt.folder,
                           n_tokens=opts.sample_tokens)
    return save_cases(cases, staged / "tests", [v.name for v in traced.graph.inputs])


def _dequantized_reference(report):
    """transform(name, weight) -> the weight the export computes with: packed weights dequantized,
    stacked experts slice by slice where fuse-moe cut them into tract's layout."""
    from t2ir.compression.methods import dequantized_weight, get_method
    from t2ir.passes.fuse_moe import ExpertSlice

    method = get_method(report.method)
    whole = {entry.name: entry for entry in report.packed}
    slices: dict[str, list[ExpertSlice]] = collections.defaultdict(list)
    for entry in report.packed:
        for c in entry.consts:
            if isinstance(c.source, ExpertSlice):
                slices[c.source.of].append(c.source)

    def transform(name: str, weight: torch.Tensor) -> torch.Tensor:
        if name in whole:
            return dequantized_weight(method, whole[name], weight)
        for part in slices.get(name, ()):
            weight = part.put_back(weight, method.dequantized(part.cut(weight)))
        return weight

    return transform


def _write_manifest(path: Path, input_hashes: dict[str, str], opts: LLMExportOptions, records,
                    summary: ExportSummary) -> None:
    manifest = {
        "versions": _versions(),
        "inputs": input_hashes,
        "options": opts.recorded(),
        "passes": [{"name": r.name, "changed": r.result.changed, "stats": r.result.stats} for r in records],
        "ops_after": summary.ops_after,
        "op_report": summary.op_report.to_dict() if summary.op_report else [],
        "pass_checks": [c.as_dict() for c in summary.pass_checks],
        "check": {"level": opts.check_io, "passed": summary.check_passed,
                  "results": [c.as_dict() for c in summary.checks]},
        "output_bytes": summary.output_bytes,
        # The one entry two exports of the same model with the same options differ in.
        "time": {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "phases": {k: round(v, 3) for k, v in summary.timings.items()},
                 "passes": [round(r.seconds, 3) for r in records]},
    }
    path.write_text(json.dumps(manifest, indent=2, default=str))
