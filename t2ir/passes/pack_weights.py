"""compress-weights: hands each weight to the chosen compression method and reports every decision."""

from __future__ import annotations

import fnmatch
import warnings
from typing import Optional, Sequence

from t2ir.compression.methods import CompressionMethod, Skip, Weight, find_weights, get_method, weight_uses
from t2ir.compression.report import KEPT, PACKED, QuantReport
from t2ir.ir import Derived, Graph, Value
from t2ir.options import ExportOptions
from t2ir.passes.base import Pass, PassResult
from t2ir.types import TensorType

QUANT_REPORT = "quant_report"  # the artifact key of the report in PipelineRun.artifacts


class CompressionWarning(UserWarning):
    """Weights a compression method could have been expected to pack but left float."""


def _reads_as_kn(v: Value) -> bool:
    """Every read of `v` is the right operand of a plain matmul `x @ w` (w is [K, N])."""
    uses = weight_uses(v)
    return bool(uses) and all(
        u.node is not None and u.node.op == "nnef.matmul" and not u.node.attrs.get("transposeB")
        and not u.node.attrs.get("transposeA") and u.node.inputs[1] is (u.via[-1].output if u.via else v)
        for u in uses)


def transpose_kn_weights(graph: Graph) -> list[str]:
    """Constants read only as `x @ w` with w [K, N] (GPT-2's Conv1D) are stored [N, K] and read
    with transposeB, the linear layout whose blocks run along K. Returns their labels."""
    done = []
    for v in graph.consts:
        if v.rank != 2 or not v.dtype.is_float or not _reads_as_kn(v):
            continue
        k, n = v.shape
        v.type = TensorType(v.dtype, (n, k))
        v.const.source = Derived(lambda t: t.t().contiguous(), (v.const.source,), what="transposed [K, N] -> [N, K]")
        for u in weight_uses(v):
            for unsqueeze in u.via:
                out = unsqueeze.output
                out.type = out.type.with_shape(tuple(out.shape[:-2]) + (n, k))
            u.node.attrs["transposeB"] = True
        done.append(v.const.label)
    return done


def keep_float_match(label: str, patterns: Sequence[str]) -> Optional[str]:
    """The first `keep_float` glob matching the constant's label, if any."""
    return next((p for p in patterns if fnmatch.fnmatchcase(label, p)), None)


class CompressWeights(Pass):
    """Runs when `options.compression` names a method (`q4_0`, `q4_0_with_embeddings`, or one
    registered by the user). It reads no weight data: it marks or rewrites constants, and the
    emitter packs them while streaming and measures their error. Weights left unpacked are in the
    report with their reason; the unexpected ones (K % 32, tied, mixed uses) also raise one warning.
    """

    name = "compress-weights"
    requires = frozenset({"nnef-level"})

    def run(self, graph: Graph, options: ExportOptions) -> PassResult:
        if not options.compression:
            return PassResult(False)
        method = get_method(options.compression, options)
        report = QuantReport(method.name)
        unexpected: list[str] = []
        keep_float = options.keep_float
        keep_float = (keep_float,) if isinstance(keep_float, str) else tuple(keep_float)
        transposed = transpose_kn_weights(graph) if method.transposes_kn else []
        for weight in find_weights(graph):
            skip = self.decide(weight, method, keep_float)
            if skip is not None:
                report.add(weight.value, KEPT, reason=skip.reason)
                if skip.warn:
                    unexpected.append(f"{weight.label} ({skip.reason})")
                continue
            consts = method.apply(graph, weight)
            report.add(weight.value, PACKED, encoding=method.stored_as, consts=consts)
        if unexpected:
            warnings.warn(f"compression {method.name!r} left {len(unexpected)} weight(s) unpacked: "
                          + "; ".join(unexpected), CompressionWarning, stacklevel=2)
        stats = {"packed": len(report.packed), "kept": len(report.kept)}
        if transposed:
            stats["transposed"] = len(transposed)
        return PassResult(bool(report.packed), stats, {QUANT_REPORT: report})

    @staticmethod
    def decide(weight: Weight, method: CompressionMethod, keep_float: Sequence[str]) -> Optional[Skip]:
        pattern = keep_float_match(weight.label, keep_float)
        if pattern is not None:
            return Skip(f"kept float by keep_float pattern {pattern!r}", warn=False)
        return method.refuse(weight)
