"""Line charts as hand-written SVG: a log-scale x axis (sizes), linear or log y, a legend."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

Series = dict[str, list[tuple[float, float]]]
COLORS = "#1f77b4 #d62728 #2ca02c #ff7f0e #9467bd #8c564b #e377c2 #7f7f7f #bcbd22 #17becf".split()
W, H = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 90


def _ticks(low: float, high: float, log: bool) -> list[float]:
    if log:
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        return [10.0**e for e in range(first, last + 1)]
    step = 10 ** math.floor(math.log10(max(high - low, 1e-9)))
    if (high - low) / step < 4:
        step /= 2
    start = math.floor(low / step) * step
    return [start + i * step for i in range(int((high - start) / step) + 2)]


def _label(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def line_chart(
    path: Path, title: str, x_label: str, y_label: str, series: Series, *, log_y: bool = False
) -> None:
    """Write an SVG chart of `series` (name -> points) to `path`."""
    # Taller by a legend row for every two series past six.
    height = H + 16 * max(0, (len(series) + 1) // 2 - 3)
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points if not log_y or y > 0]
    x_ticks = _ticks(min(xs), max(xs), True)
    y_ticks = _ticks(min(ys) if log_y else 0.0, max(ys) * 1.1, log_y)
    x0, x1 = math.log10(x_ticks[0]), math.log10(x_ticks[-1])
    y0, y1 = y_ticks[0], y_ticks[-1]
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    y0, y1 = fy(y0), fy(y1)

    def px(x: float) -> float:
        return LEFT + (math.log10(x) - x0) / (x1 - x0 or 1) * (W - LEFT - RIGHT)

    def py(y: float) -> float:
        return H - BOTTOM - (fy(y) - y0) / (y1 - y0 or 1) * (H - TOP - BOTTOM)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{height}" fill="white"/>',
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for t in x_ticks:
        out.append(
            f'<line x1="{px(t):.1f}" y1="{TOP}" x2="{px(t):.1f}" y2="{H - BOTTOM}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{px(t):.1f}" y="{H - BOTTOM + 15}" text-anchor="middle">{_label(t)}</text>'
        )
    for t in y_ticks:
        out.append(
            f'<line x1="{LEFT}" y1="{py(t):.1f}" x2="{W - RIGHT}" y2="{py(t):.1f}" stroke="#ddd"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(
        f'<text x="{W / 2}" y="{H - BOTTOM + 32}" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text x="16" y="{(H - BOTTOM + TOP) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(H - BOTTOM + TOP) / 2})">{escape(y_label)}</text>'
    )
    for i, (name, points) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        shown = [(x, y) for x, y in points if not log_y or y > 0]
        path_d = " ".join(
            f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(shown)
        )
        out.append(f'<path d="{path_d}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in shown:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        ly = H - BOTTOM + 48 + (i // 2) * 16
        lx = LEFT + (i % 2) * 280
        out.append(f'<rect x="{lx}" y="{ly - 8}" width="12" height="3" fill="{color}"/>')
        out.append(f'<text x="{lx + 18}" y="{ly - 3}">{escape(name)}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
