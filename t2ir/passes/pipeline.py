"""The one ordered list of passes, and the runner that dumps the IR after each of them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from t2ir.errors import PassError, T2IRError
from t2ir.ir import Graph
from t2ir.ops.registry import check_node
from t2ir.options import ExportOptions
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.broadcast_products import ProductsOfBroadcasts
from t2ir.passes.cleanup import Cleanup
from t2ir.passes.convert_dtypes import ConvertDtypes
from t2ir.passes.counted_means import CountedMeans
from t2ir.passes.cse import Cse
from t2ir.passes.fold_kv_cache import FoldKvCache
from t2ir.passes.fuse_attention import FuseAttention
from t2ir.passes.fuse_moe import FuseMoe
from t2ir.passes.fuse_transformer_ops import FuseTransformerOps
from t2ir.passes.lower_to_nnef import LowerToNnef
from t2ir.passes.op_report import OpReport, Provenance, op_report
from t2ir.passes.pack_weights import CompressWeights
from t2ir.passes.strided_gathers import StridedGathers
from t2ir.passes.upcast_f32 import UpcastF32
from t2ir.verify import verify


def _always(options: ExportOptions) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """A pass and the condition (on the options) under which it runs."""

    pass_: Pass
    when: Callable[[ExportOptions], bool] = _always


def builtin_stages() -> list[Stage]:
    return [
        Stage(Cleanup()),
        Stage(ConvertDtypes()),
        Stage(FoldKvCache()),  # a no-op on graphs without KV-cache IO
        Stage(FuseAttention(), when=lambda o: o.fuse_attention),
        Stage(FuseTransformerOps, when=lambda o: o.fuse_transformer_ops),
        Stage(FuseMoe, when=lambda o: o.fuse_transformer_ops),  # after it: reads t2ir.silu
        # after the fusions (it finds t2ir.sdpa / t2ir.rms_norm) and convert-dtypes (bf16 is f16 by then)
        Stage(UpcastF32, when=lambda o: o.f32_norm or o.f32_attn),
        Stage(LowerToNnef()),
        Stage(Cse()),  # masks and position ranges each attention translation built: once
        Stage(StridedGathers),  # on the lowered graph: it reads the reshapes and convolutions tract sees
        Stage(ProductsOfBroadcasts),  # on the lowered graph: the matmuls and broadcasts tract sees
        Stage(CountedMeans),  # on the lowered graph: every mean_reduce tract would see
        Stage(Cleanup()),
        # last: it marks the final weights, so no later rewrite may move or fold them
        Stage(CompressWeights(), when=lambda o: bool(o.compression)),
    ]


_USER_STAGES: list[tuple[str, Stage]] = []  # (name of the pass it follows, stage)


def register_pass(p: Pass, *, after: str, when: Callable[[ExportOptions], bool] = _always) -> None:
    """Run the user's pass `p` right after the first pass named `after` (see docs/passes.md).

        t2ir.register_pass(RewritePass("my-fusions", [my_rule]), after="fuse-transformer-ops")
    """
    known = {s.pass_.name for s in builtin_stages()} | {s.pass_.name for _, s in _USER_STAGES}
    if after not in known:
        raise ValueError(f"no pass named {after!r}; passes: {', '.join(sorted(known))}")
    if p.name in known:
        raise ValueError(f"a pass named {p.name!r} is already in the pipeline")
    _USER_STAGES.append((after, Stage(p, when)))


def unregister_pass(name: str) -> None:
    _USER_STAGES[:] = [(a, s) for a, s in _USER_STAGES if s.pass_.name != name]


def stages() -> list[Stage]:
    """Built-in passes in order, with each user pass after the one it follows."""
    out = builtin_stages()
    slots: dict[str, int] = {}  # where the next pass following each anchor goes
    for after, stage in _USER_STAGES:
        at = slots.get(after)
        if at is None:
            at = next(i for i, s in enumerate(out) if s.pass_.name == after) + 1
        out.insert(at, stage)
        slots = {k: v + 1 if v >= at else v for k, v in slots.items()}
        slots[after] = at + 1  # passes registered after the same one keep their order
    return out


def passes_by_name() -> dict[str, Pass]:
    """Every pass the pipeline knows, by name (for tests and tools)."""
    return {s.pass_.name: s.pass_ for s in stages()}


@dataclass
class PassRecord:
    name: str
    result: PassResult
    seconds: float
    nodes_after: int


@dataclass
class PipelineRun:
    """What running the passes produced: one record per pass, and the artifacts passes left
    (e.g. compress-weights' quantization report under `QUANT_REPORT`)."""

    records: list[PassRecord] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)

    def op_report(self, graph: Graph) -> OpReport:
        """Each op of `graph` (the graph these passes ran on): nodes, and which passes made them."""
        return op_report(graph, self.provenance)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def __len__(self) -> int:
        return len(self.records)


def dump_name(index: int, name: str) -> str:
    return f"{index:02d}-{name}.t2ir"


def run_pipeline(graph: Graph, options: ExportOptions, *, dump_dir: Optional[Path] = None,
                 check: bool = True, on_pass: Optional[Callable[[str], None]] = None,
                 after_pass: Optional[Callable[[str, Graph], None]] = None) -> PipelineRun:
    """Run the enabled passes in order. `dump_dir` gets `00-lift.t2ir`, `01-<pass>.t2ir`, ...;
    `after_pass(name, graph)` sees the graph after each pass (e.g. to evaluate it)."""
    if dump_dir is not None:
        dump_dir = Path(dump_dir)
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / dump_name(0, "lift")).write_text(str(graph))
    run = PipelineRun()
    ensured: set[str] = set()
    passes = [s.pass_ for s in stages() if s.when(options)]
    for i, p in enumerate(passes, 1):
        missing = p.requires - ensured
        if missing:
            raise PassError(f"pass {p.name} requires {sorted(missing)}, which no earlier pass ensures")
        if on_pass:
            on_pass(p.name)
        start = time.perf_counter()
        try:
            with run.provenance.recording(graph, p.name):
                result = p.run(graph, options)
            if check:
                verify(graph, check_op=check_node)
        except T2IRError:
            raise
        except Exception as e:
            before = ", ".join(r.name for r in run.records) or "none"
            raise PassError(f"pass {p.name!r} failed ({type(e).__name__}: {e}); passes run before it: {before}") from e
        ensured |= p.ensures
        run.records.append(PassRecord(p.name, result, time.perf_counter() - start, len(graph)))
        run.artifacts.update(result.artifacts)
        if dump_dir is not None:
            (dump_dir / dump_name(i, p.name)).write_text(str(graph))
        if after_pass is not None:
            after_pass(p.name, graph)
    return run
