"""`t2ir view`: the layout groups nodes by module path, and the page renders in a real browser
(headless Chromium screenshot) with the diff colours where the diff says things changed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import t2ir
from t2ir.cli import _register, app
from t2ir.tools.view import NAMESPACE_COLOURS, STATUS_COLOURS, layout

_register()
runner = CliRunner()


class Tower(torch.nn.Module):
    """Two residual blocks with attention and an MLP each: module paths two levels deep."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict({"attn": torch.nn.MultiheadAttention(16, 2, batch_first=True),
                                 "mlp": torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(),
                                                            torch.nn.Linear(32, 16))}) for _ in range(2))

    def forward(self, x):
        for b in self.blocks:
            x = x + b["attn"](x, x, x, need_weights=False)[0]
            x = x + b["mlp"](x)
        return x


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tower") / "dumps"
    t2ir.export(Tower().eval(), (torch.randn(1, 5, 16),), folder.parent / "m.nnef.tgz", dump_ir=folder)
    return folder


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("the picture tests need headless Chromium: `apt-get install -y chromium` (.ci/run installs it)")
    return exe


def screenshot(page: Path, png: Path, size=(1600, 2400)) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="t2ir-chromium-") as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--no-first-run", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                        f"--screenshot={png}", page.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def pixels_of(image: np.ndarray, colour: str) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image - rgb).sum(-1) < 12).sum())


def test_layout_bands_follow_module_paths(dumps):
    g = t2ir.load_ir(dumps, after="lift")
    lay = layout(g)
    by_module: dict[str, list] = {}
    for b in lay.boxes:
        if b.module:
            by_module.setdefault(b.module, []).append(b)
    assert {"blocks.0.attn", "blocks.1.mlp.0"} <= set(by_module)
    paths = {grp.path for grp in lay.groups}
    assert {"blocks", "blocks.0", "blocks.1.attn", "blocks.1.mlp", "blocks.1.mlp.2"} <= paths
    for depth in {grp.depth for grp in lay.groups}:  # bands of one depth never overlap
        spans = sorted(grp.rows for grp in lay.groups if grp.depth == depth)
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
    for grp in lay.groups:  # a box holds every node of its module run
        inside = [b for b in lay.boxes if b.module == grp.path or b.module.startswith(grp.path + ".")]
        assert any(grp.rows[0] <= b.row <= grp.rows[1] for b in inside)
    for p, i in lay.edges:  # edges run downwards
        assert lay.boxes[p].row < lay.boxes[i].row


def test_diff_page_renders_in_chromium_with_its_colours(dumps, tmp_path):
    page = tmp_path / "diff.html"
    result = runner.invoke(app, ["view", str(dumps), "--pass", "lower-to-nnef", "-o", str(page), "--no-open"])
    assert result.exit_code == 0, result.output
    d = t2ir.diff(*[t2ir.load_ir(dumps, after=p) for p in ("fuse-transformer-ops", "lower-to-nnef")])
    shown = set(d.status("a").values()) | set(d.status("b").values())
    assert {"added", "changed"} <= shown
    image = screenshot(page, tmp_path / "diff.png")
    for status in shown:
        assert pixels_of(image, STATUS_COLOURS[status]) > 200, f"no {status} node drawn"


def test_plain_page_renders_nodes_and_module_boxes(dumps, tmp_path):
    page = tmp_path / "view.html"
    result = runner.invoke(app, ["view", str(dumps.parent / "m.nnef.tgz"), "-o", str(page), "--no-open"])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "<svg" in text and "http" not in text.replace("http://www.w3.org/2000/svg", "")  # self-contained
    image = screenshot(page, tmp_path / "view.png")
    assert pixels_of(image, NAMESPACE_COLOURS["nnef"]) > 1000  # the NNEF-level nodes' fill
    assert not any(pixels_of(image, c) > 50 for c in STATUS_COLOURS.values())  # no diff colours on a plain page
