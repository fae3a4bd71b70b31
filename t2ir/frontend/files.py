"""Saved models as t2ir reads them from disk: an ExportedProgram (`torch.export.save`, `.pt2`)
or a TorchScript module (`torch.jit.save` / `torch.jit.trace(...).save`), told apart by what
their zip archives hold, and example inputs for them."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional, Sequence

import torch

from t2ir.errors import ExportError, Problem, T2IRError


def load_model_file(path: Path):
    """The ExportedProgram or ScriptModule saved in `path`."""
    path = Path(path)
    if not path.is_file():
        raise T2IRError(f"{path} is not a file")
    names = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    try:
        if any(n.endswith("archive_format") for n in names) or path.suffix == ".pt2":
            return torch.export.load(path)
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise T2IRError(f"{path} could not be loaded: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}") \
            from None
    raise T2IRError(f"{path} is neither an ExportedProgram (.pt2, torch.export.save) nor a TorchScript file "
                    "(torch.jit.save); a state_dict or a pickled module carries no graph to export")


def program_example_inputs(ep: torch.export.ExportedProgram) -> Optional[tuple]:
    """The inputs a .pt2 was exported with, when it kept them."""
    saved = getattr(ep, "example_inputs", None)
    if saved is None:
        return None
    args, kwargs = saved
    return tuple(args) + tuple(kwargs.values())


def make_inputs(shapes: Sequence[tuple[str, Sequence[int], str]], seed: int = 0) -> tuple:
    """Random inputs (normal floats, small non-negative integers, random bools) of the given
    names, shapes and dtypes; `(name, shape, dtype)` each."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, shape, dtype in shapes:
        try:
            dt = getattr(torch, {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64",
                                 "i32": "int32", "bool": "bool"}[dtype])
        except KeyError:
            raise ExportError("invalid --input:", [Problem(f"unknown dtype {dtype!r} for input {name!r}",
                                                           hint="use f32, f16, f64, i64, i32 or bool")]) from None
        if dt.is_floating_point:
            out.append(torch.randn(*shape, generator=gen).to(dt))
        elif dt == torch.bool:
            out.append(torch.rand(*shape, generator=gen) > 0.5)
        else:
            out.append(torch.randint(0, 10, tuple(shape), generator=gen, dtype=dt))
    return tuple(out)
