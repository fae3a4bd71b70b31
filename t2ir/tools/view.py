"""`t2ir view`: the IR as a picture, one self-contained HTML page (inline SVG, no network).

Layout: nodes run top to bottom in graph order, grouped by module path: each run of consecutive
nodes from one module gets its own band of rows (drawn as nested boxes, one per module level),
and within a band a node sits one row below its latest input. Constants are not drawn (they are
listed in a node's details). A diff page shows two graphs side by side, coloured by what changed
(`t2ir.diff`'s added / removed / changed / fused).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Optional

from t2ir.ir import Graph, Node
from t2ir.printer import format_node
from t2ir.tools.irdiff import IRDiff

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 170, 36, 24, 26, 14
STATUS_COLOURS = {"added": "#2e9d46", "removed": "#d23c3c", "changed": "#e0a020", "fused": "#8e44c8"}
NAMESPACE_COLOURS = {"aten": "#dfe9f7", "t2ir": "#fbe3c5", "nnef": "#e2f2e2", "tract_core": "#e8e2f4",
                     "tract_transformers": "#f6dbe8", "input": "#ffffff", "output": "#ffffff"}


@dataclass
class Box:
    """A drawn node: its key (first output name), label, position and details."""

    key: str
    label: str
    sub: str
    kind: str  # namespace, "input" or "output"
    x: float = 0.0
    row: int = 0
    module: str = ""
    details: str = ""
    status: str = ""


@dataclass
class Group:
    path: str
    depth: int
    rows: tuple[int, int]
    xs: tuple[float, float]


@dataclass
class Layout:
    boxes: list[Box] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)  # box indices, producer -> reader
    groups: list[Group] = field(default_factory=list)

    @property
    def size(self) -> tuple[float, float]:
        width = max((b.x for b in self.boxes), default=0) + NODE_W + 2 * PAD
        rows = max((b.row for b in self.boxes), default=0) + 1
        return width, rows * (NODE_H + ROW_GAP) + 2 * PAD


def _boxes(g: Graph) -> tuple[list[Box], list[list[int]]]:
    """Inputs, nodes and outputs as boxes, with each box's input boxes."""
    boxes: list[Box] = []
    made_by: dict[str, int] = {}
    preds: list[list[int]] = []
    for v in g.inputs:
        made_by[v.name] = len(boxes)
        boxes.append(Box(v.name, v.name, str(v.type), "input", details=f"input %{v.name} : {v.type}"))
        preds.append([])
    for node in g.nodes:
        index = len(boxes)
        for o in node.outputs:
            made_by[o.name] = index
        boxes.append(_node_box(node))
        preds.append(sorted({made_by[v.name] for v in node.inputs if v.name in made_by}))
    for v in g.outputs:
        boxes.append(Box(f"output:{v.name}", f"output {v.name}", str(v.type), "output",
                         details=f"output %{v.name} : {v.type}"))
        preds.append([made_by[v.name]] if v.name in made_by else [])
    return boxes, preds


def _node_box(node: Node) -> Box:
    consts = [f"  const %{v.name} : {v.type}" + (f" ({v.const.encoding})" if v.const.encoding != "plain" else "")
              for v in node.inputs if v.const is not None]
    details = "\n".join([format_node(node), *consts])
    return Box(node.outputs[0].name, node.op.split(".", 1)[-1], f"%{node.outputs[0].name} : {node.outputs[0].type}",
               node.namespace, module=node.loc.module, details=details)


def layout(g: Graph, status: Optional[dict[str, str]] = None) -> Layout:
    """Rows by module-path bands, columns by the inputs' positions (see the module docstring)."""
    boxes, preds = _boxes(g)
    status = status or {}
    next_row, run_start, run_module = 0, 0, None
    for i, b in enumerate(boxes):
        b.status = status.get(b.key, "")
        if b.module != run_module or i == 0:
            run_start, run_module = next_row, b.module
        inside = [boxes[p].row + 1 for p in preds[i] if boxes[p].row >= run_start]
        b.row = max([run_start, *inside])
        next_row = max(next_row, b.row + 1)
    rows: dict[int, list[int]] = {}
    for i, b in enumerate(boxes):
        rows.setdefault(b.row, []).append(i)
    for members in rows.values():
        target = {i: (sum(boxes[p].x for p in preds[i]) / len(preds[i]) if preds[i] else 0.0) for i in members}
        x = -1e9
        for i in sorted(members, key=lambda i: target[i]):
            x = max(target[i], x + NODE_W + COL_GAP)
            boxes[i].x = x
    shift = -min((b.x for b in boxes), default=0.0)
    for b in boxes:
        b.x += shift
    edges = [(p, i) for i, ps in enumerate(preds) for p in ps]
    return Layout(boxes, edges, _groups(boxes))


def _groups(boxes: list[Box]) -> list[Group]:
    """One box per run of consecutive nodes sharing a module path prefix, at every depth."""
    groups: list[Group] = []
    depth = max((len(b.module.split(".")) for b in boxes if b.module), default=0)
    for d in range(depth):
        run: list[Box] = []
        prefix = None
        for b in boxes + [Box("", "", "", "end")]:
            parts = b.module.split(".") if b.module else []
            key = ".".join(parts[:d + 1]) if len(parts) > d else None
            if key != prefix:
                if prefix is not None and run:
                    groups.append(Group(prefix, d, (min(r.row for r in run), max(r.row for r in run)),
                                        (min(r.x for r in run), max(r.x for r in run))))
                run, prefix = [], key
            if key is not None:
                run.append(b)
    return groups


def _svg(lay: Layout, title: str) -> str:
    width, height = lay.size
    y = lambda row: PAD + row * (NODE_H + ROW_GAP)  # noqa: E731
    parts = [f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'width="{width:.0f}" height="{height:.0f}"><title>{html.escape(title)}</title>']
    for grp in sorted(lay.groups, key=lambda g: g.depth):
        inset = 4 * grp.depth
        x0, x1 = grp.xs[0] + PAD - 8 + inset, grp.xs[1] + PAD + NODE_W + 8 - inset
        y0, y1 = y(grp.rows[0]) - ROW_GAP / 2 + inset, y(grp.rows[1]) + NODE_H + ROW_GAP / 2 - inset
        parts.append(f'<g class="module"><rect x="{x0:.0f}" y="{y0:.0f}" width="{x1 - x0:.0f}" height="{y1 - y0:.0f}" '
                     f'rx="6" fill="rgba(90,110,140,0.07)" stroke="#9aa8ba" stroke-dasharray="4 3"/>'
                     f'<text x="{x1 - 4:.0f}" y="{y0 + 11:.0f}" text-anchor="end" font-size="10" fill="#5a6b80">'
                     f'{html.escape(grp.path.split(".")[-1])}<title>{html.escape(grp.path)}</title></text></g>')
    for p, i in lay.edges:
        a, b = lay.boxes[p], lay.boxes[i]
        x0, y0 = a.x + PAD + NODE_W / 2, y(a.row) + NODE_H
        x1, y1 = b.x + PAD + NODE_W / 2, y(b.row)
        mid = (y0 + y1) / 2
        parts.append(f'<path d="M{x0:.0f},{y0:.0f} C{x0:.0f},{mid:.0f} {x1:.0f},{mid:.0f} {x1:.0f},{y1:.0f}" '
                     f'fill="none" stroke="#7d8794" stroke-opacity="0.6" stroke-width="1.2"/>')
    for b in lay.boxes:
        fill = STATUS_COLOURS.get(b.status) or NAMESPACE_COLOURS.get(b.kind, "#eeeeee")
        text = "#ffffff" if b.status else "#1d2430"
        parts.append(f'<g class="node {b.status}" data-details="{html.escape(b.details)}">'
                     f'<rect x="{b.x + PAD:.0f}" y="{y(b.row):.0f}" width="{NODE_W}" height="{NODE_H}" rx="5" '
                     f'fill="{fill}" stroke="#3b4656" stroke-width="1"/>'
                     f'<text x="{b.x + PAD + NODE_W / 2:.0f}" y="{y(b.row) + 15:.0f}" text-anchor="middle" '
                     f'font-size="12" font-weight="600" fill="{text}">{html.escape(b.label[:24])}</text>'
                     f'<text x="{b.x + PAD + NODE_W / 2:.0f}" y="{y(b.row) + 29:.0f}" text-anchor="middle" '
                     f'font-size="9" fill="{text}">{html.escape(b.sub[:30])}</text>'
                     f'<title>{html.escape(b.details)}</title></g>')
    parts.append("</svg>")
    return "".join(parts)


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 0; background: #f7f8fa; color: #1d2430; }}
header {{ padding: 8px 14px; background: #fff; border-bottom: 1px solid #d5dae1; }}
header h1 {{ font-size: 16px; margin: 0 0 4px 0; }}
.legend span {{ display: inline-block; padding: 1px 8px; margin-right: 6px; border-radius: 4px; color: #fff; font-size: 12px; }}
main {{ display: flex; gap: 10px; padding: 10px; }}
section {{ flex: 1; overflow: auto; background: #fff; border: 1px solid #d5dae1; }}
section h2 {{ font-size: 13px; margin: 6px 10px; }}
pre#details {{ position: fixed; right: 10px; bottom: 10px; max-width: 45%; background: #fff; border: 1px solid #999;
  padding: 6px; font-size: 11px; white-space: pre-wrap; display: none; }}
g.node {{ cursor: pointer; }}
table {{ font-size: 12px; border-collapse: collapse; }} td {{ padding: 0 8px; }}
</style></head><body>
<header><h1>{title}</h1>{summary}</header>
<main>{panels}</main>
<pre id="details"></pre>
<script>
document.querySelectorAll('g.node').forEach(function (g) {{
  g.addEventListener('click', function () {{
    var d = document.getElementById('details'); d.textContent = g.getAttribute('data-details'); d.style.display = 'block';
  }});
}});
document.querySelectorAll('svg.graph').forEach(function (svg) {{
  var scale = 1; var w = svg.width.baseVal.value, h = svg.height.baseVal.value;
  svg.addEventListener('wheel', function (e) {{
    if (!e.ctrlKey) return; e.preventDefault();
    scale = Math.min(4, Math.max(0.1, scale * (e.deltaY < 0 ? 1.1 : 0.9)));
    svg.setAttribute('width', w * scale); svg.setAttribute('height', h * scale);
  }});
}});
</script></body></html>
"""


def _legend() -> str:
    return '<div class="legend">' + "".join(f'<span style="background:{c}">{k}</span>' for k, c in STATUS_COLOURS.items()) \
        + "</div>"


def render_html(g: Graph, title: str = "") -> str:
    """One graph as a page."""
    title = title or f"t2ir graph {g.name}"
    summary = f"{len(g)} nodes, {len(g.consts)} constants; boxes are modules (click a node for its IR line)"
    panel = f"<section>{_svg(layout(g), title)}</section>"
    return _PAGE.format(title=html.escape(title), summary=html.escape(summary), panels=panel)


def render_diff_html(a: Graph, b: Graph, d: IRDiff, title_a: str = "before", title_b: str = "after") -> str:
    """Two graphs side by side, coloured by what changed from `a` to `b`."""
    rows = "".join(f"<tr><td>{html.escape(c.op)}</td><td>{c.before}</td><td>{c.after}</td><td>{c.delta:+d}</td></tr>"
                   for c in d.op_counts if c.delta)
    summary = f"<div>{html.escape(d.summary())}</div>{_legend()}" + \
        (f"<table><tr><th>op</th><th>before</th><th>after</th><th>delta</th></tr>{rows}</table>" if rows else "")
    panels = "".join(f"<section><h2>{html.escape(t)}</h2>{_svg(layout(g, d.status(side)), t)}</section>"
                     for g, side, t in ((a, "a", title_a), (b, "b", title_b)))
    return _PAGE.format(title=html.escape(f"t2ir diff: {title_a} -> {title_b}"), summary=summary, panels=panels)
