"""SVG drawings computed in Python: the computation graph and small charts.

No JavaScript layout library: nodes are placed in layers by their longest
distance from an input, edges are straight lines. All text goes through
html.escape.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from textgraph._text import shorten

KIND_COLOURS = {
    "parameter": "#ffd59e",
    "input": "#e0e0e0",
    "llm_output": "#b5d8ff",
    "intermediate": "#d9f2d9",
    "loss": "#ffb3b3",
}
NODE_W, NODE_H, GAP_X, GAP_Y = 170, 46, 24, 70


def layout(record: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Top-left corner of each node: layer = longest path from an input."""
    preds: dict[str, list[str]] = {n["id"]: [] for n in record["nodes"]}
    for e in record["edges"]:
        preds[e["target"]].append(e["source"])
    layer: dict[str, int] = {}
    for n in record["nodes"]:  # nodes come in topological order (inputs first)
        layer[n["id"]] = 1 + max((layer[p] for p in preds[n["id"]]), default=-1)
    rows: dict[int, list[str]] = {}
    for node_id, depth in layer.items():
        rows.setdefault(depth, []).append(node_id)
    width = max(len(r) for r in rows.values()) if rows else 1
    positions = {}
    for depth, ids in rows.items():
        offset = (width - len(ids)) * (NODE_W + GAP_X) / 2
        for i, node_id in enumerate(ids):
            positions[node_id] = (20 + offset + i * (NODE_W + GAP_X), 20 + depth * (NODE_H + GAP_Y))
    return positions


def graph_svg(record: dict[str, Any], *, element_id: str = "graph") -> str:
    pos = layout(record)
    if not pos:
        return "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'></svg>"
    width = max(x for x, _ in pos.values()) + NODE_W + 20
    height = max(y for _, y in pos.values()) + NODE_H + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(element_id)}" class="graph" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker>'
        "</defs>",
    ]
    for e in record["edges"]:
        (x1, y1), (x2, y2) = pos[e["source"]], pos[e["target"]]
        parts.append(
            f'<line class="edge" x1="{x1 + NODE_W / 2:.0f}" y1="{y1 + NODE_H:.0f}" '
            f'x2="{x2 + NODE_W / 2:.0f}" y2="{y2:.0f}" stroke="#888" marker-end="url(#arrow)">'
            f"<title>{escape(e.get('op') or '')}</title></line>"
        )
    for n in record["nodes"]:
        x, y = pos[n["id"]]
        kind = n.get("kind", "input")
        label = shorten(n.get("role", n["id"]), 26)
        value = shorten(n.get("value", ""), 28)
        grads = len(n.get("gradients", []))
        badge = f" · {grads} critique{'s' if grads != 1 else ''}" if grads else ""
        parts.append(
            f'<g class="node kind-{escape(kind)}" data-id="{escape(n["id"])}" tabindex="0" '
            f'transform="translate({x:.0f},{y:.0f})">'
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="6" '
            f'fill="{KIND_COLOURS.get(kind, "#fff")}" stroke="#555"/>'
            f'<text x="8" y="18" font-size="12" font-weight="bold">{escape(label)}</text>'
            f'<text x="8" y="36" font-size="11">{escape(value)}{escape(badge)}</text>'
            f"<title>{escape(n.get('role', ''))} ({escape(kind)})</title></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    title: str,
    series: dict[str, Sequence[float | None]],
    labels: Sequence[str],
    *,
    width: int = 460,
    height: int = 200,
) -> str:
    """A small SVG line chart; None values are gaps."""
    values = [v for s in series.values() for v in s if v is not None]
    top = max(values, default=1.0) or 1.0
    bottom = min(0.0, min(values, default=0.0))
    span = (top - bottom) or 1.0
    n = max(len(labels), 2)
    x = lambda i: 40 + i * (width - 60) / (n - 1)  # noqa: E731
    y = lambda v: height - 30 - (v - bottom) / span * (height - 60)  # noqa: E731
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}"><text x="10" y="16" font-size="13" font-weight="bold">'
        f"{escape(title)}</text>",
        f'<line x1="40" y1="{height - 30}" x2="{width - 20}" y2="{height - 30}" stroke="#999"/>',
        f'<text x="4" y="{y(top) + 4:.0f}" font-size="10">{top:.3g}</text>',
        f'<text x="4" y="{y(bottom) + 4:.0f}" font-size="10">{bottom:.3g}</text>',
    ]
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{x(i):.0f}" y="{height - 14}" font-size="10" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    for (name, points), colour in zip(series.items(), colours, strict=False):
        coords = [(x(i), y(v)) for i, v in enumerate(points) if v is not None]
        if len(coords) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'
            )
        for a, b in coords:
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>')
        index = list(series).index(name)
        parts.append(
            f'<text x="{width - 150}" y="{16 + 14 * index}" font-size="11" '
            f'fill="{colour}">● {escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, values: dict[str, float], *, width: int = 460, unit: str = "") -> str:
    """Horizontal bars, one per label."""
    top = max(values.values(), default=1.0) or 1.0
    height = 30 + 22 * max(len(values), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}"><text x="10" y="16" font-size="13" font-weight="bold">'
        f"{escape(title)}</text>"
    ]
    for i, (label, value) in enumerate(values.items()):
        y = 26 + 22 * i
        length = (width - 230) * value / top
        parts.append(
            f'<text x="10" y="{y + 13}" font-size="11">{escape(label)}</text>'
            f'<rect x="110" y="{y}" width="{length:.1f}" height="16" fill="#1f77b4"/>'
            f'<text x="{116 + length:.0f}" y="{y + 13}" font-size="11">'
            f"{escape(f'{value:,.4g}{unit}')}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
