"""Line charts as inline SVG for the report: real axes, labelled ticks, and a fixed scale
(the spec's bounds, 0 to 1 for the score), so a flat cfg of 7 sits at 7, not on the floor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

W, H = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 22, 28


def line_chart(title: str, labels: Sequence[str], values: Sequence[float | None],
               low: float, high: float, colour: str) -> str:
    """One series over the iterations; a None (no verdict) leaves a gap in the line."""
    if not values:
        return ""
    span = (high - low) or 1.0
    x = _xs(len(values))

    def y(v: float) -> float:
        return TOP + (1 - (min(max(v, low), high) - low) / span) * (H - TOP - BOTTOM)

    runs, run = [], []
    for i, v in enumerate(values):
        if v is None:
            runs, run = runs + [run] if run else runs, []
        else:
            run.append(f"{x[i]:.1f},{y(v):.1f}")
    runs += [run] if run else []
    lines = "".join(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                    f'points="{" ".join(r)}"/>' for r in runs)
    dots = "".join(f'<circle cx="{x[i]:.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}">'
                   f"<title>{escape(labels[i])}: {v:g}</title></circle>"
                   for i, v in enumerate(values) if v is not None)
    return (f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'aria-label="{escape(title)}"><text x="{LEFT}" y="14" class="title">'
            f"{escape(title)}</text>{_y_axis(low, high, y)}{_x_axis(labels, x)}{lines}{dots}"
            "</svg>")


def _xs(n: int) -> list[float]:
    width = W - LEFT - RIGHT
    return [LEFT + (i * width / (n - 1) if n > 1 else width / 2) for i in range(n)]


def _y_axis(low: float, high: float, y: Callable[[float], float]) -> str:
    ticks = [low + (high - low) * k / 4 for k in range(5)]
    return f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" class="axis"/>' + \
        "".join(f'<line x1="{LEFT - 4}" x2="{W - RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                f'class="grid"/><text x="{LEFT - 6}" y="{y(t) + 4:.1f}" '
                f'text-anchor="end">{t:.3g}</text>' for t in ticks)


def _x_axis(labels: Sequence[str], x: Sequence[float]) -> str:
    every = max(1, len(labels) // 12)  # at most a dozen labels, however long the run
    return f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" ' \
        'class="axis"/>' + "".join(
            f'<text x="{x[i]:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
            f"{escape(labels[i])}</text>" for i in range(0, len(labels), every))
