"""SVG drawings computed in Python: the computation graph, small charts, scatter plots.

No JavaScript layout library: nodes are placed in layers by their longest
distance from an input, edges are straight lines. All text goes through
html.escape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    return ticks


def _padded(values: Sequence[float]) -> tuple[float, float]:
    """An axis range around the values; equal values get a margin instead of a zero span."""
    low, high = min(values), max(values)
    if high == low:
        margin = abs(low) * 0.1 or 1.0
        return low - margin, high + margin
    margin = (high - low) * 0.08
    return low - margin, high + margin


def _tick_label(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class ScatterPoint:
    """One candidate in a scatter plot: `front` and `selected` change how it is drawn."""

    id: str
    x: float
    y: float
    tooltip: str
    front: bool = False
    selected: bool = False


def scatter_plot(
    title: str,
    points: Sequence[ScatterPoint],
    *,
    x_label: str,
    y_label: str,
    width: int = 380,
    height: int = 280,
) -> str:
    """Points with axes, ticks and a <title> tooltip each; the selected one ringed and labelled."""
    left, right, top, bottom = 56, 18, 40, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart scatter" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">'
        f'<text x="10" y="16" font-size="13" font-weight="bold">{escape(title)}</text>'
        f'<text x="10" y="31" font-size="10" fill="#555">'
        f'<tspan fill="#1565c0">●</tspan> Pareto front  '
        f'<tspan fill="#888">○</tspan> dominated  '
        f'<tspan fill="#e65100">◎</tspan> selected</text>'
    ]
    if not points:
        parts.append(
            f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" font-size="12" fill="#777" '
            'text-anchor="middle">no candidate has both values</text></svg>'
        )
        return "".join(parts)
    x_low, x_high = _padded([p.x for p in points])
    y_low, y_high = _padded([p.y for p in points])

    def sx(v: float) -> float:
        return left + (v - x_low) / (x_high - x_low) * plot_w

    def sy(v: float) -> float:
        return top + plot_h - (v - y_low) / (y_high - y_low) * plot_h

    base = top + plot_h
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>'
    )
    x_floor = 0.0 if min(p.x for p in points) >= 0 else -math.inf  # no negative cost ticks
    y_floor = 0.0 if min(p.y for p in points) >= 0 else -math.inf

    def ticks(values: list[float], low: float, high: float) -> list[float]:
        # all equal: one tick at the value says so; else round values across the range
        return [values[0]] if min(values) == max(values) else nice_ticks(low, high)

    for t in ticks([p.x for p in points], x_low, x_high):
        if t < x_floor:
            continue
        x = sx(t)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{base}" stroke="#eee"/>'
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#777"/>'
            f'<text class="tick" x="{x:.1f}" y="{base + 15}" font-size="10" '
            f'text-anchor="middle">{escape(_tick_label(t))}</text>'
        )
    for t in ticks([p.y for p in points], y_low, y_high):
        if t < y_floor:
            continue
        y = sy(t)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
            f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#777"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 3:.1f}" font-size="10" '
            f'text-anchor="end">{escape(_tick_label(t))}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{left + plot_w / 2:.0f}" y="{height - 8}" '
        f'font-size="11" text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="axis-label" x="12" y="{top + plot_h / 2:.0f}" font-size="11" '
        f'text-anchor="middle" transform="rotate(-90 12 {top + plot_h / 2:.0f})">'
        f"{escape(y_label)}</text>"
    )
    # dominated first, then the front, the selected point last: it stays on top
    for p in sorted(points, key=lambda p: (p.selected, p.front)):
        x, y = sx(p.x), sy(p.y)
        kind = "front" if p.front else "dominated"
        shape = (
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#1565c0" stroke="#0d47a1"/>'
            if p.front
            else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="#fff" stroke="#888" '
            'stroke-width="1.5"/>'
        )
        if p.selected:
            shape += (
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="#e65100" '
                'stroke-width="2.5"/>'
            )
        parts.append(
            f'<g class="point {kind}{" selected" if p.selected else ""}" '
            f'data-id="{escape(p.id)}">{shape}<title>{escape(p.tooltip)}</title></g>'
        )
    for p in points:
        if p.selected:
            x, y = sx(p.x), sy(p.y)
            anchor, dx = ("end", -12) if x > left + plot_w * 0.6 else ("start", 12)
            ly = y - 10 if y > top + 14 else y + 20
            parts.append(
                f'<text class="selected-label" x="{x + dx:.1f}" y="{ly:.1f}" font-size="11" '
                f'font-weight="bold" fill="#e65100" text-anchor="{anchor}">'
                f"selected {escape(p.id)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)
