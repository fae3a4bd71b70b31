"""The one ordered list of passes, and the runner that dumps the IR after each of them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from t2ir.errors import PassError, T2IRError
from t2ir.ir import Graph
from t2ir.options import ExportOptions
from t2ir.passes.base import Pass, PassResult
from t2ir.passes.cleanup import Cleanup
from t2ir.passes.convert_dtypes import ConvertDtypes
from t2ir.passes.fold_kv_cache import FoldKvCache
from t2ir.passes.fuse_attention import FuseAttention
from t2ir.passes.fuse_transformer_ops import FuseTransformerOps
from t2ir.passes.lower_to_nnef import LowerToNnef
from t2ir.passes.pack_weights import CompressWeights
from t2ir.passes.upcast_f32 import UpcastF32
from t2ir.verify import verify


@dataclass(frozen=True)
class Stage:
    """A pass and the condition (on the options) under which it runs."""

    make: Callable[[], Pass]
    when: Callable[[ExportOptions], bool] = lambda o: True


def _stages() -> list[Stage]:
    return [
        Stage(Cleanup),
        Stage(ConvertDtypes),
        Stage(FoldKvCache),  # a no-op on graphs without KV-cache IO
        Stage(FuseAttention, when=lambda o: o.fuse_attention),
        Stage(FuseTransformerOps, when=lambda o: o.fuse_transformer_ops),
        # after the fusions (it finds t2ir.sdpa / t2ir.rms_norm) and convert-dtypes (bf16 is f16 by then)
        Stage(UpcastF32, when=lambda o: o.f32_norm or o.f32_attn),
        Stage(LowerToNnef),
        Stage(Cleanup),
        # last: it marks the final weights, so no later rewrite may move or fold them
        Stage(CompressWeights, when=lambda o: bool(o.compression)),
    ]


def passes_by_name() -> dict[str, type[Pass]]:
    """Every pass class the pipeline knows, by its name (for tests and tools)."""
    return {s.make.name: s.make for s in _stages() if isinstance(s.make, type)}


@dataclass
class PassRecord:
    name: str
    result: PassResult
    seconds: float
    nodes_after: int


def dump_name(index: int, name: str) -> str:
    return f"{index:02d}-{name}.t2ir"


def run_pipeline(graph: Graph, options: ExportOptions, *, dump_dir: Optional[Path] = None,
                 check: bool = True, on_pass: Optional[Callable[[str], None]] = None) -> list[PassRecord]:
    """Run the enabled passes in order. `dump_dir` gets `00-lift.t2ir`, `01-<pass>.t2ir`, ..."""
    if dump_dir is not None:
        dump_dir = Path(dump_dir)
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / dump_name(0, "lift")).write_text(str(graph))
    records: list[PassRecord] = []
    ensured: set[str] = set()
    passes = [s.make() for s in _stages() if s.when(options)]
    for i, p in enumerate(passes, 1):
        missing = p.requires - ensured
        if missing:
            raise PassError(f"pass {p.name} requires {sorted(missing)}, which no earlier pass ensures")
        if on_pass:
            on_pass(p.name)
        start = time.perf_counter()
        try:
            result = p.run(graph, options)
            if check:
                verify(graph)
        except T2IRError:
            raise
        except Exception as e:
            before = ", ".join(r.name for r in records) or "none"
            raise PassError(f"pass {p.name!r} failed ({type(e).__name__}: {e}); passes run before it: {before}") from e
        ensured |= p.ensures
        records.append(PassRecord(p.name, result, time.perf_counter() - start, len(graph)))
        if dump_dir is not None:
            (dump_dir / dump_name(i, p.name)).write_text(str(graph))
    return records
