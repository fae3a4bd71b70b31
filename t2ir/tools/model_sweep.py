"""Model sweeps: torchvision's models (weights=None) and one model per timm family
(pretrained=False), each exported with a dynamic batch (and dynamic image size where the model
allows it) and checked in tract at two sizes against PyTorch eager.

    python -m t2ir.tools.model_sweep run --suite torchvision --out bench/results/models.jsonl
    python -m t2ir.tools.model_sweep run --suite timm --out bench/results/models.jsonl
    python -m t2ir.tools.model_sweep report bench/results/models.jsonl > docs/models.md

Each model runs in its own process (a crash or a memory blow-up stays there) under a time
limit, and appends one JSON line: the model, its status (passed / failed), what was dynamic,
the sizes checked, the largest difference, the time taken, and a one-line reason.

Which timm models: timm registers ~1400 names in ~100 modules (its families); the sweep takes
the smallest model (by parameter count, counted on the meta device) of each module.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional


# tract passes when max |tract - torch| <= TOLERANCE * max |torch| for every output (random
# weights give outputs of any scale, so the bound follows the output's own)
TOLERANCE = 1e-3


@dataclass
class ModelSpec:
    suite: str       # torchvision / timm
    kind: str        # classification, segmentation, detection-backbone, video, timm
    name: str
    shape: tuple     # the traced example's shape (batch 1)
    spatial: tuple   # the axes that may be dynamic besides the batch
    native: tuple = ()  # the size the model is made for, when the sweep tries a smaller one first


@dataclass
class SweepResult:
    suite: str
    kind: str
    name: str
    status: str = "failed"
    reason: str = ""
    dynamic: list[str] = field(default_factory=list)
    sizes: list[list[int]] = field(default_factory=list)
    max_diff: Optional[float] = None   # largest |tract - torch| over outputs and sizes
    rel_diff: Optional[float] = None   # the same, relative to the output's largest |value|
    seconds: float = 0.0
    params: int = 0
    note: str = ""                     # why the image size was kept static, when it was


# ---- the models -------------------------------------------------------------------------------

SIDE = {"classification": 128, "segmentation": 128, "detection-backbone": 160, "video": 112}  # image side

def torchvision_specs() -> list[ModelSpec]:
    from t2ir.tools.torchvision_compat import import_torchvision

    tv = import_torchvision()
    M = tv.models
    out = []
    for kind, module in (("classification", M), ("segmentation", M.segmentation), ("detection-backbone", M.detection),
                         ("video", M.video)):
        for name in M.list_models(module=module):
            weights = list(M.get_model_weights(name))
            meta = weights[0]
            # the smallest size any of its weights takes (ViT-H's first weights are 518 px, its default 224)
            min_h, min_w = min((w.meta.get("min_size", (1, 1)) for w in weights), key=lambda s: s[0] * s[1])
            # the smallest size the model takes, at least SIDE (the check is about numbers, not accuracy)
            h, w = max(min_h, SIDE[kind]), max(min_w, SIDE[kind])
            if kind == "detection-backbone":  # the size the detector resizes its images to, if fixed (SSD)
                fixed_h, fixed_w = _fixed_size(M, name)
                h, w = max(h, fixed_h), max(w, fixed_w)
            if kind == "video":
                t = meta.meta.get("min_temporal_size", 8)
                out.append(ModelSpec("torchvision", kind, name, (1, 3, max(t, 8), h, w), (2, 3, 4)))
            else:
                out.append(ModelSpec("torchvision", kind, name, (1, 3, h, w), (2, 3)))
    return out


def _fixed_size(models, name: str) -> tuple[int, int]:
    """The image size a detector's transform resizes to when it is fixed, else (0, 0)."""
    import torch

    with torch.device("meta"):
        detector = models.get_model(name, weights=None, weights_backbone=None)
    return tuple(getattr(detector.transform, "fixed_size", None) or (0, 0))


def timm_specs() -> list[ModelSpec]:
    """The smallest model of each timm module (family)."""
    import torch

    timm = _import_timm()

    best: dict[str, tuple[int, str]] = {}
    for module in timm.list_modules():
        for name in timm.list_models(module=module):
            try:
                with torch.device("meta"):
                    m = timm.create_model(name, pretrained=False)
            except Exception:
                continue
            n = sum(p.numel() for p in m.parameters())
            if module not in best or n < best[module][0]:
                best[module] = (n, name)
    out = []
    for module, (_, name) in sorted(best.items()):
        cfg = timm.models.get_pretrained_cfg(name)
        c, h, w = (cfg.input_size if cfg is not None and cfg.input_size else (3, 224, 224))
        if not (cfg is not None and cfg.fixed_input_size):  # any size works: a small one, in whole patches
            patch = _patch_size(timm, name)
            h, w = (min(side, -(-SIDE["classification"] // p) * p) for side, p in zip((h, w), patch))
        native = (1, *cfg.input_size) if cfg is not None and cfg.input_size else (1, 3, 224, 224)
        out.append(ModelSpec("timm", "timm", name, (1, c, h, w), (2, 3), native if native != (1, c, h, w) else ()))
    return out


def _patch_size(timm, name: str) -> tuple[int, int]:
    """A patch-embedding model takes images in whole patches (14 x 14 for some ViTs)."""
    import torch

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    patch = next((m.patch_size for m in model.modules() if type(m).__name__ == "PatchEmbed"
                  and hasattr(m, "patch_size")), None) or 1
    return tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)


def _import_timm():
    """timm imports torchvision: through the compat import (see torchvision_compat)."""
    from t2ir.tools.torchvision_compat import import_torchvision

    import_torchvision()
    import timm

    return timm


def build(spec: ModelSpec):
    """The module to export (eval mode, no pretrained weights)."""
    import torch

    torch.manual_seed(0)
    if spec.suite == "timm":
        return _import_timm().create_model(spec.name, pretrained=False).eval()
    from t2ir.tools.torchvision_compat import import_torchvision

    M = import_torchvision().models
    if spec.kind == "segmentation":  # returns {"out": ..., "aux": ...}: both are outputs
        return M.get_model(spec.name, weights=None, weights_backbone=None).eval()
    if spec.kind == "detection-backbone":
        return M.get_model(spec.name, weights=None, weights_backbone=None).backbone.eval()
    return M.get_model(spec.name, weights=None).eval()


# ---- one model --------------------------------------------------------------------------------

def _sizes(spec: ModelSpec, dynamic_spatial: bool) -> list[tuple]:
    """The traced example's shape and a second one: batch 2, and other image sizes when dynamic."""
    second = list(spec.shape)
    second[0] = 2
    if dynamic_spatial:
        for axis in spec.spatial:
            second[axis] += 32 if axis >= len(spec.shape) - 2 else 2
    return [tuple(spec.shape), tuple(second)]


def _axes(spec: ModelSpec, dynamic_spatial: bool) -> dict:
    names = {0: "batch"}
    if dynamic_spatial:
        names.update({a: n for a, n in zip(spec.spatial, ("T", "H", "W")[-len(spec.spatial):])})
    return {"x": names}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = lines[0] if lines else type(e).__name__
    detail = next((line[2:] for line in lines[1:] if line.startswith("- ")), "")
    text = f"{head} {detail}".strip()
    if " / " in text:
        links = text.split(" / ")
        text = links[0][:60] + " ... " + " / ".join(links[-2:])
    return text[:300]


def run_one(spec: ModelSpec, workdir: Path, dynamic_spatial: bool) -> SweepResult:
    """One attempt: export (with a dynamic image size or the batch dynamic only), then compare
    tract with eager at two sizes. A batch-only attempt that fails at the sweep's small size is
    tried again at the model's own size when it has one."""
    import torch

    began = time.time()
    res = SweepResult(spec.suite, spec.kind, spec.name)
    try:
        model = build(spec)
    except Exception as e:
        res.reason = f"could not build the model: {_first_line(e)}"
        return res
    res.params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    try:
        _export_and_check(model, spec, dynamic_spatial, workdir, gen, res)
        res.status = "passed"
    except Exception as e:
        res.reason = _first_line(e)
    if res.status != "passed" and not dynamic_spatial and spec.native:  # some take only their own size (halo blocks)
        native = replace(spec, shape=spec.native, native=())
        res.dynamic, res.sizes = [], []
        try:
            _export_and_check(model, native, False, workdir, gen, res)
            res.status = "passed"
            res.note = f"at its own size {list(spec.native)[1:]}: at {list(spec.shape)[1:]}: {res.reason}"
            res.reason = res.note
        except Exception as e:
            res.reason = f"{res.reason}; at its own size {list(spec.native)[1:]}: {_first_line(e)}"
    res.seconds = round(time.time() - began, 1)
    return res


# torch.export's shape reasoning can take many minutes on some models with a dynamic image size
# (Swin's shifted windows); past this, the batch-only export is tried within the model's time limit.
SPATIAL_SECONDS = 150


def _export_and_check(model, spec: ModelSpec, dynamic_spatial: bool, workdir: Path, gen, res: SweepResult) -> None:
    """Export, run in tract at the traced size and a second one, compare with eager (relative to
    each output's scale); raises on the first failure."""
    import numpy as np
    import torch

    from t2ir.api import export
    from t2ir.tract_run import load_runnable, run_tract

    x = torch.randn(*spec.shape, generator=gen)
    result = export(model, (x,), workdir / "model", input_names=["x"], dynamic_axes=_axes(spec, dynamic_spatial),
                    overwrite=True)
    res.dynamic = sorted(set(result.graph.symbols))
    runnable = load_runnable(result.path)
    worst, worst_rel = 0.0, 0.0
    for shape in _sizes(spec, dynamic_spatial):
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            want = [t.numpy() for t in torch.utils._pytree.tree_leaves(model(x)) if isinstance(t, torch.Tensor)]
        got = run_tract(runnable, [x.numpy()])
        res.sizes.append(list(shape))
        if len(got) != len(want):
            raise AssertionError(f"{len(got)} outputs, torch has {len(want)}")
        for g, w in zip(got, want):
            if g.shape != w.shape:
                raise AssertionError(f"at {list(shape)}: tract gave shape {list(g.shape)}, torch {list(w.shape)}")
            diff = float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()) if w.size else 0.0
            scale = float(np.abs(w).max()) if w.size else 0.0
            rel = diff / scale if scale else diff
            worst, worst_rel = max(worst, diff), max(worst_rel, rel)
            if rel > TOLERANCE:
                raise AssertionError(f"at {list(shape)}: max |diff| {diff:.3g} is {rel:.2g} of the output's "
                                     f"scale {scale:.3g}")
    res.max_diff, res.rel_diff = worst, worst_rel


# ---- driver -----------------------------------------------------------------------------------

def specs(suite: str) -> list[ModelSpec]:
    return (torchvision_specs() if suite in ("torchvision", "all") else []) + \
        (timm_specs() if suite in ("timm", "all") else [])


def run(suite: str, out: Path, names: list[str], timeout: int, skip_done: bool, spatial_seconds: int = 0) -> None:
    """Each model of the suite (only `names`, in that order, when given), each attempt in its own
    process: a time limit holds even inside tract's optimizer, which a signal cannot interrupt."""
    done = set()
    if skip_done and out.exists():
        done = {(r["suite"], r["name"]) for r in map(json.loads, out.read_text().splitlines()) if r}
    todo = [s for s in specs(suite) if (not names or s.name in names) and (s.suite, s.name) not in done]
    todo.sort(key=lambda s: names.index(s.name) if names else 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(todo, 1):
        result = sweep_model(spec, timeout, spatial_seconds or SPATIAL_SECONDS)
        with open(out, "a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"[{i}/{len(todo)}] {spec.suite} {spec.name}: {result['status']} {result['reason'][:120]}", flush=True)


def sweep_model(spec: ModelSpec, timeout: int, spatial_seconds: int) -> dict:
    """With a dynamic image size first (within `spatial_seconds`), then the batch dynamic only
    (within what is left of `timeout`); the first failure is kept as the row's note."""
    began = time.time()
    if not spec.spatial:
        result = _attempt(spec, False, timeout)
    else:
        result = _attempt(spec, True, min(spatial_seconds, timeout))
        if result["status"] != "passed":
            why = result["reason"]
            if why.startswith("took more than"):
                why = f"the export with a dynamic image size {why}"
            note = f"image size static: {why}"
            result = _attempt(spec, False, max(1, int(timeout - (time.time() - began))))
            result["note"] = f"{note}; {result['note']}" if result.get("note") else note
            if result["status"] == "passed":
                result["reason"] = result["note"]
    result["seconds"] = round(time.time() - began, 1)
    return result


def _attempt(spec: ModelSpec, dynamic_spatial: bool, timeout: int) -> dict:
    """One run_one in a fresh process, killed after `timeout` seconds."""
    args = [sys.executable, "-m", "t2ir.tools.model_sweep", "one", json.dumps(asdict(spec))]
    args += ["--dynamic-image"] if dynamic_spatial else []
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return asdict(SweepResult(spec.suite, spec.kind, spec.name, reason=f"took more than {timeout} s"))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return asdict(SweepResult(spec.suite, spec.kind, spec.name,
                              reason=f"the process died (exit {proc.returncode}): {tail[:200]}"))


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="sweep models, appending results")
    r.add_argument("--suite", choices=("torchvision", "timm", "all"), default="all")
    r.add_argument("--out", type=Path, default=Path("bench/results/models.jsonl"))
    r.add_argument("--models", default="", help="only these names (comma-separated)")
    r.add_argument("--timeout", type=int, default=900, help="seconds per model")
    r.add_argument("--skip-done", action="store_true", help="skip models already in --out")
    r.add_argument("--spatial-seconds", type=int, default=SPATIAL_SECONDS,
                   help="time for the export with a dynamic image size before the batch-only one")
    o = sub.add_parser("one", help=argparse.SUPPRESS)
    o.add_argument("spec")
    o.add_argument("--dynamic-image", action="store_true", help="the image size dynamic too")
    rep = sub.add_parser("report", help="docs/models.md from results")
    rep.add_argument("results", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "one":
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
        d = json.loads(a.spec)
        spec = ModelSpec(d["suite"], d["kind"], d["name"], tuple(d["shape"]), tuple(d["spatial"]),
                         tuple(d.get("native", ())))
        with tempfile.TemporaryDirectory(prefix="t2ir-sweep-") as work:
            print(json.dumps(asdict(run_one(spec, Path(work), a.dynamic_image))), flush=True)
    elif a.cmd == "run":
        run(a.suite, a.out, [n for n in a.models.split(",") if n], a.timeout, a.skip_done, a.spatial_seconds)
    else:
        from t2ir.tools.models_doc import render

        planned = {}
        for suite in ("torchvision", "timm"):
            try:
                planned[suite] = len(specs(suite))
            except ImportError:  # not installed: the coverage of that suite is not known
                pass
        sys.stdout.write(render([json.loads(l) for l in a.results.read_text().splitlines() if l.strip()], planned))


if __name__ == "__main__":
    main()
