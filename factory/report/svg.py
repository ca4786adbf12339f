"""Small inline-SVG plots (no plotting library): a histogram with threshold lines, horizontal
bars, and a heatmap over time. Each returns one `<svg class="plot">` element as a string.

Elements carry classes the tests (and a reader's stylesheet) can find: `bar`, `threshold`,
`cell`, `axis`.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

import numpy as np

KEPT, REJECTED, THRESHOLD = "#4e79a7", "#f28e2b", "#d62728"
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac"]
FONT = 'font-family="sans-serif" font-size="11"'


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e6 or abs(v) < 1e-3:
        return f"{v:.2g}"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.4g}" if abs(v) < 1 else f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


class _Frame:
    """Plot area inside margins, with data -> pixel maps."""

    def __init__(self, width: int, height: int, x: tuple[float, float], y: tuple[float, float],
                 left: int = 46, right: int = 12, top: int = 26, bottom: int = 34):
        self.w, self.h = width, height
        self.x0, self.x1, self.y0, self.y1 = left, width - right, top, height - bottom
        self.xlo, self.xhi = x
        self.ylo, self.yhi = y

    def px(self, v: float) -> float:
        return self.x0 + (v - self.xlo) / ((self.xhi - self.xlo) or 1) * (self.x1 - self.x0)

    def py(self, v: float) -> float:
        return self.y1 - (v - self.ylo) / ((self.yhi - self.ylo) or 1) * (self.y1 - self.y0)

    def axes(self, xlabel: str, ylabel: str, xticks: Sequence[float], yticks: Sequence[float]) -> list[str]:
        parts = [f'<g class="axis" stroke="#333" {FONT}>',
                 f'<line x1="{self.x0}" y1="{self.y1}" x2="{self.x1}" y2="{self.y1}"/>',
                 f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}"/>']
        for t in xticks:
            x = self.px(t)
            parts.append(f'<line x1="{x:.1f}" y1="{self.y1}" x2="{x:.1f}" y2="{self.y1 + 4}"/>'
                         f'<text x="{x:.1f}" y="{self.y1 + 15}" text-anchor="middle" stroke="none">{fmt(t)}</text>')
        for t in yticks:
            y = self.py(t)
            parts.append(f'<line x1="{self.x0 - 4}" y1="{y:.1f}" x2="{self.x0}" y2="{y:.1f}"/>'
                         f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" stroke="#ddd"/>'
                         f'<text x="{self.x0 - 6}" y="{y + 4:.1f}" text-anchor="end" stroke="none">{fmt(t)}</text>')
        parts.append(f'<text x="{(self.x0 + self.x1) / 2:.1f}" y="{self.h - 4}" text-anchor="middle" '
                     f'stroke="none">{escape(xlabel)}</text>')
        parts.append(f'<text transform="translate(11,{(self.y0 + self.y1) / 2:.1f}) rotate(-90)" '
                     f'text-anchor="middle" stroke="none">{escape(ylabel)}</text></g>')
        return parts


def short(label: str, n: int = 40) -> str:
    """A label cut to `n` characters (the full one goes in the element's tooltip)."""
    return label if len(label) <= n else label[: n - 1] + "\u2026"


def _svg(width: int, height: int, title: str, body: list[str], label: str = "") -> str:
    return (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" aria-label="{escape(label or title)}"><title>{escape(label or title)}</title>'
            f'<rect width="{width}" height="{height}" fill="#fff"/>'
            f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-family="sans-serif" font-size="13" '
            f'font-weight="bold">{escape(title)}</text>' + "".join(body) + "</svg>")


def _empty(width: int, height: int, title: str, text: str) -> str:
    return _svg(width, height, title, [f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" '
                                       f'{FONT} fill="#777">{escape(text)}</text>'])


def histogram(kept: Sequence[float], rejected: Sequence[float], title: str,
              thresholds: Sequence[tuple[str, float]] = (), bins: int = 24,
              width: int = 400, height: int = 230) -> str:
    """Stacked histogram of kept and rejected pairs' values, a dashed line at each threshold
    (`(op, value)`: what a kept pair satisfies), the failing side shaded."""
    kept = np.asarray([v for v in kept if v is not None and math.isfinite(v)], dtype=float)
    rejected = np.asarray([v for v in rejected if v is not None and math.isfinite(v)], dtype=float)
    values = np.concatenate([kept, rejected])
    if not len(values):
        return _empty(width, height, title, "no values recorded")
    marks = [v for _, v in thresholds]
    lo, hi = min([float(values.min()), *marks]), max([float(values.max()), *marks])
    pad = (hi - lo) * 0.05 or max(abs(lo) * 0.05, 0.5)
    lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    nk, _ = np.histogram(kept, edges)
    nr, _ = np.histogram(rejected, edges)
    top = max(1, int((nk + nr).max()))
    yticks = [t for t in nice_ticks(0, top, 4) if t == int(t)]
    f = _Frame(width, height, (lo, hi), (0, top * 1.1), top=36)
    body = f.axes(title.split(" (")[0], "pairs", nice_ticks(lo, hi, 5), yticks)
    for op, value in thresholds:  # the failing side, under the bars
        x = f.px(value)
        a, b = (f.x0, x) if op.startswith(">") else (x, f.x1)
        body.append(f'<rect class="fail-side" x="{a:.1f}" y="{f.y0}" width="{max(0.0, b - a):.1f}" '
                    f'height="{f.y1 - f.y0}" fill="{THRESHOLD}" fill-opacity="0.06"/>')
    for i in range(bins):
        x, w = f.px(edges[i]), f.px(edges[i + 1]) - f.px(edges[i])
        for n, base, colour, what in ((nk[i], 0, KEPT, "kept"), (nr[i], nk[i], REJECTED, "rejected")):
            if n:
                y0, y1 = f.py(base), f.py(base + n)
                body.append(f'<rect class="bar {what}" x="{x + 0.5:.1f}" y="{y1:.1f}" width="{max(0.5, w - 1):.1f}" '
                            f'height="{y0 - y1:.1f}" fill="{colour}"><title>{n} {what}, '
                            f'{fmt(edges[i])} to {fmt(edges[i + 1])}</title></rect>')
    for op, value in thresholds:
        x = f.px(value)
        right = x < (f.x0 + f.x1) / 2  # the label on the side with room
        body.append(f'<line class="threshold" x1="{x:.1f}" y1="{f.y0}" x2="{x:.1f}" y2="{f.y1}" '
                    f'stroke="{THRESHOLD}" stroke-width="2" stroke-dasharray="5,3"/>'
                    f'<text x="{x + 3 if right else x - 3:.1f}" y="{f.y0 + 10}" text-anchor="{"start" if right else "end"}" '
                    f'{FONT} fill="{THRESHOLD}">keep {escape(op)} {fmt(value)}</text>')
    ly = f.y0 - 12  # above the plot area, under the title
    legend = [f'<g {FONT}><rect x="{f.x1 - 130}" y="{ly}" width="9" height="9" fill="{KEPT}"/>'
              f'<text x="{f.x1 - 118}" y="{ly + 8}">kept {len(kept)}</text>'
              f'<rect x="{f.x1 - 65}" y="{ly}" width="9" height="9" fill="{REJECTED}"/>'
              f'<text x="{f.x1 - 53}" y="{ly + 8}">rejected {len(rejected)}</text></g>']
    return _svg(width, height, title, body + legend)


def hbars(items: Sequence[tuple[str, float]], title: str, width: int = 640, unit: str = "") -> str:
    """One horizontal bar per (label, value), in the given order."""
    if not items:
        return _empty(width, 60, title, "none")
    row, left = 20, min(280, 12 + 6.5 * max(len(short(label)) for label, _ in items))
    height = 30 + row * len(items) + 8
    top = max(v for _, v in items) or 1
    span = width - left - 60
    body = [f'<g {FONT}>']
    for i, (label, value) in enumerate(items):
        y = 28 + i * row
        w = span * value / top
        body.append(f'<text x="{left - 6:.0f}" y="{y + 12}" text-anchor="end">{escape(short(label))}</text>'
                    f'<rect class="bar" x="{left:.0f}" y="{y}" width="{max(1.0, w):.1f}" height="{row - 5}" '
                    f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)}: {fmt(value)}{unit}</title></rect>'
                    f'<text x="{left + w + 5:.1f}" y="{y + 12}">{fmt(value)}{escape(unit)}</text>')
    body.append("</g>")
    return _svg(width, height, title, body)


def heatmap(rows: Sequence[tuple[str, Sequence[float]]], step: float, title: str, xlabel: str,
            unit: str = "/s", width: int = 760) -> str:
    """One row per name, one cell per time step of `step` units; the cell's colour is its value
    against the largest (white: none). Right of each row: its peak and its mean over active cells."""
    if not rows or not any(any(v) for _, v in rows):
        return _empty(width, 60, title, "nothing recorded")
    n = max(len(v) for _, v in rows)
    top = max(max(v) for _, v in rows if len(v)) or 1
    row_h, left, right = 18, min(280, 12 + 6.5 * max(len(short(name)) for name, _ in rows)), 150
    height = 30 + row_h * len(rows) + 34
    f = _Frame(width, height, (0, n * step), (0, 1), left=int(left), right=right, top=30, bottom=34)
    cell = (f.x1 - f.x0) / n
    body = [f'<g {FONT}>']
    for r, (name, values) in enumerate(rows):
        y = f.y0 + r * row_h
        body.append(f'<text x="{f.x0 - 6}" y="{y + 12}" text-anchor="end">{escape(short(name))}'
                    f'<title>{escape(name)}</title></text>'
                    f'<rect x="{f.x0}" y="{y}" width="{f.x1 - f.x0:.1f}" height="{row_h - 3}" fill="#f4f4f4"/>')
        for i, v in enumerate(values):
            if v > 0:
                a = 0.15 + 0.85 * v / top
                body.append(f'<rect class="cell" x="{f.x0 + i * cell:.1f}" y="{y}" width="{cell + 0.3:.1f}" '
                            f'height="{row_h - 3}" fill="{KEPT}" fill-opacity="{a:.2f}"><title>{escape(name)}: '
                            f'{fmt(v)}{escape(unit)} at {fmt(i * step)} to {fmt((i + 1) * step)}</title></rect>')
        active = [v for v in values if v > 0]
        mean = sum(active) / len(active) if active else 0.0
        body.append(f'<text x="{f.x1 + 6}" y="{y + 12}">peak {fmt(max(values, default=0))}, mean {fmt(mean)}{escape(unit)}</text>')
    body.append("</g>")
    f.y1 = f.y0 + row_h * len(rows)  # the axis under the last row
    ticks = nice_ticks(0, n * step, 6)
    axis = [f'<g class="axis" stroke="#333" {FONT}><line x1="{f.x0}" y1="{f.y1}" x2="{f.x1}" y2="{f.y1}"/>']
    for t in ticks:
        x = f.px(t)
        axis.append(f'<line x1="{x:.1f}" y1="{f.y1}" x2="{x:.1f}" y2="{f.y1 + 4}"/><text x="{x:.1f}" '
                    f'y="{f.y1 + 15}" text-anchor="middle" stroke="none">{fmt(t)}</text>')
    axis.append(f'<text x="{(f.x0 + f.x1) / 2:.1f}" y="{f.y1 + 29}" text-anchor="middle" stroke="none">'
                f'{escape(xlabel)}</text></g>')
    return _svg(width, height, title, body + axis)
