"""Inline SVG charts (no network, no plotting library in the page)."""

from __future__ import annotations

from html import escape

import numpy as np


def histogram(series: dict[str, list[float]], title: str, bins: int = 30, width: int = 460, height: int = 160) -> str:
    """Overlaid histograms of one or two series (e.g. before / after) as an SVG string."""
    values = [v for vs in series.values() for v in vs if np.isfinite(v)]
    if not values:
        return ""
    low, high = float(np.min(values)), float(np.max(values))
    if high == low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    colours = ["#8fa8c8", "#d9822b", "#5b9a68"]
    counts = {name: np.histogram([v for v in vs if np.isfinite(v)], bins=edges)[0] for name, vs in series.items()}
    top = max(int(c.max()) for c in counts.values()) or 1
    bar = (width - 40) / bins
    parts = [f'<svg class="chart" width="{width}" height="{height + 40}" role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="14" class="chart-title">{escape(title)}</text>']
    for k, (name, count) in enumerate(counts.items()):
        colour = colours[k % len(colours)]
        for i, c in enumerate(count):
            h = (height - 30) * c / top
            parts.append(f'<rect x="{30 + i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                         f'height="{h:.1f}" fill="{colour}" fill-opacity="0.6"><title>{escape(name)}: {c} in '
                         f'[{edges[i]:.3g}, {edges[i + 1]:.3g})</title></rect>')
        parts.append(f'<rect x="{40 + k * 120}" y="{height + 22}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{54 + k * 120}" y="{height + 31}" class="legend">{escape(name)} ({sum(count)})</text>')
    parts.append(f'<text x="30" y="{height + 14}" class="axis">{low:.3g}</text>'
                 f'<text x="{width - 10}" y="{height + 14}" class="axis" text-anchor="end">{high:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars(series: dict[str, dict[str, int]], title: str, width: int = 460) -> str:
    """Grouped horizontal bars of category counts (e.g. before / after)."""
    labels = sorted({k for counts in series.values() for k in counts})
    if not labels:
        return ""
    colours = ["#8fa8c8", "#d9822b", "#5b9a68", "#c0504d"]
    top = max(v for counts in series.values() for v in counts.values()) or 1
    row = 14 * len(series) + 6
    legend = 18 if len(series) > 1 else 0
    parts = [f'<svg class="chart" width="{width}" height="{30 + row * len(labels) + legend}" role="img" '
             f'aria-label="{escape(title)}"><text x="4" y="14" class="chart-title">{escape(title)}</text>']
    if legend:
        y = 30 + row * len(labels)
        parts += [f'<rect x="{130 + k * 110}" y="{y}" width="10" height="10" fill="{colours[k % len(colours)]}"/>'
                  f'<text x="{144 + k * 110}" y="{y + 9}" class="legend">{escape(name[:14])}</text>'
                  for k, name in enumerate(series)]
    for i, label in enumerate(labels):
        y = 24 + i * row
        parts.append(f'<text x="4" y="{y + 11}" class="axis">{escape(label[:18])}</text>')
        for k, (name, counts) in enumerate(series.items()):
            value = counts.get(label, 0)
            parts.append(f'<rect x="130" y="{y + k * 14}" width="{(width - 190) * value / top:.1f}" height="12" '
                         f'fill="{colours[k % len(colours)]}"><title>{escape(name)}: {value}</title></rect>'
                         f'<text x="{134 + (width - 190) * value / top:.1f}" y="{y + k * 14 + 10}" class="axis">'
                         f'{value}</text>')
    parts.append("</svg>")
    return "".join(parts)


def scatter(groups: dict[str, list[tuple[float, float]]], title: str, size: int = 460) -> str:
    """Points by group (e.g. kept / dropped) on a square SVG; at most 5,000 points a group are drawn."""
    points = [p for pts in groups.values() for p in pts]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx, sy = (size - 20) / ((x1 - x0) or 1), (size - 50) / ((y1 - y0) or 1)
    colours = {"kept": "#5b9a68", "dropped": "#c0504d"}
    parts = [f'<svg class="chart" width="{size}" height="{size}" role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="14" class="chart-title">{escape(title)}</text>']
    for k, (name, pts) in enumerate(groups.items()):
        colour = colours.get(name, "#8fa8c8")
        step = max(1, len(pts) // 5000)
        parts += [f'<circle cx="{10 + (x - x0) * sx:.1f}" cy="{30 + (y - y0) * sy:.1f}" r="2" fill="{colour}" '
                  f'fill-opacity="0.6"/>' for x, y in pts[::step]]
        parts.append(f'<rect x="{10 + k * 120}" y="{size - 14}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{24 + k * 120}" y="{size - 5}" class="legend">{escape(name)} ({len(pts)})</text>')
    parts.append("</svg>")
    return "".join(parts)


def lines(series: dict[str, list[float | None]], labels: list[str], title: str, width: int = 460,
          height: int = 200) -> str:
    """One line per series over the same x labels (e.g. held-out loss per round); None leaves a gap."""
    values = [v for vs in series.values() for v in vs if v is not None and np.isfinite(v)]
    if not values or not labels:
        return ""
    low, high = float(np.min(values)), float(np.max(values))
    if high == low:
        low, high = low - 0.5, high + 0.5
    colours = ["#1f4e79", "#d9822b", "#5b9a68", "#c0504d", "#8064a2", "#4bacc6", "#9b9b3a", "#777777"]
    left, right, top, bottom = 44, 120, 24, height - 24
    sx = (width - left - right) / max(len(labels) - 1, 1)
    y = lambda v: bottom - (bottom - top) * (v - low) / (high - low)  # noqa: E731
    parts = [f'<svg class="chart" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="14" class="chart-title">{escape(title)}</text>',
             f'<text x="{left - 4}" y="{top + 4}" class="axis" text-anchor="end">{high:.3g}</text>',
             f'<text x="{left - 4}" y="{bottom}" class="axis" text-anchor="end">{low:.3g}</text>']
    parts += [f'<text x="{left + i * sx:.1f}" y="{height - 6}" class="axis" text-anchor="middle">{escape(label)}</text>'
              for i, label in enumerate(labels)]
    for k, (name, vs) in enumerate(series.items()):
        colour = colours[k % len(colours)]
        points = [(left + i * sx, y(v), v) for i, v in enumerate(vs) if v is not None and np.isfinite(v)]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                         f'stroke-width="{2.5 if k == 0 else 1.5}"/>')
        parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"><title>{escape(name)}: {v:.4g}'
                  f'</title></circle>' for px, py, v in points]
        parts.append(f'<rect x="{width - right + 8}" y="{top + k * 15}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{width - right + 22}" y="{top + 9 + k * 15}" class="legend">{escape(name[:16])}</text>')
    parts.append("</svg>")
    return "".join(parts)
