"""`--check-io`: replay every OUT/tests/*_io.npz case in tract and compare with PyTorch's outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2ir.tract_run import load_runnable, run_tract

# level -> (atol, rtol): a value passes when |tract - torch| <= atol + rtol * |torch|.
TOLERANCES: dict[str, tuple[float, float]] = {
    "exact": (0.0, 0.0),
    "ultra": (1e-6, 1e-5),
    "super": (1e-5, 1e-4),
    "very": (1e-4, 1e-3),
    "close": (1e-3, 1e-2),
    "approximate": (1e-2, 5e-2),
}


@dataclass
class OutputCheck:
    case: str
    output: str
    max_abs_diff: float
    passed: bool

    def as_dict(self) -> dict:
        return {"case": self.case, "output": self.output, "max_abs_diff": self.max_abs_diff, "passed": self.passed}


def check_cases(model_path: Path, case_files: list[Path], input_names: list[str], output_names: list[str],
                level: str) -> list[OutputCheck]:
    atol, rtol = TOLERANCES[level]
    runnable = load_runnable(model_path)
    results = []
    for path in case_files:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
        got = run_tract(runnable, [data[n] for n in input_names])
        for name, g in zip(output_names, got):
            w = data[name]
            if g.shape != w.shape:
                results.append(OutputCheck(path.stem, name, float("inf"), False))
                continue
            g64, w64 = g.astype(np.float64), w.astype(np.float64)
            diff = np.abs(g64 - w64)
            ok = bool(np.all(diff <= atol + rtol * np.abs(w64)))
            results.append(OutputCheck(path.stem, name, float(diff.max()) if diff.size else 0.0, ok))
    return results
