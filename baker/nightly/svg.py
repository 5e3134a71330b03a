"""Small SVG line charts for the report site, drawn at build time (no JavaScript, no CDN):
one series over the nights, with an optional min-max band around it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH, HEIGHT, PAD = 560, 160, 36


@dataclass(frozen=True)
class Point:
    label: str  # the night, shown under the first and last point
    value: float
    low: float | None = None  # the band: the night's fastest and slowest run
    high: float | None = None


def chart(title: str, unit: str, points: Sequence[Point]) -> str:
    """An SVG document: the series as a polyline with a dot per night, the band as a
    translucent polygon, the axis range and the first and last nights as text."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )
    if not points:
        return head + f'<text x="{PAD}" y="{HEIGHT // 2}">no data yet</text></svg>'
    values = [p.value for p in points] + [
        v for p in points for v in (p.low, p.high) if v is not None
    ]
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    step = (WIDTH - 2 * PAD) / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return round(PAD + i * step, 1)

    def y(v: float) -> float:
        return round(HEIGHT - PAD - (v - lo) / (hi - lo) * (HEIGHT - 2 * PAD), 1)

    parts = [head, f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>']
    banded = [(i, p) for i, p in enumerate(points) if p.low is not None and p.high is not None]
    if banded:
        upper = [f"{x(i)},{y(p.high)}" for i, p in banded]  # type: ignore[arg-type]
        lower = [f"{x(i)},{y(p.low)}" for i, p in reversed(banded)]  # type: ignore[arg-type]
        parts.append(
            f'<polygon class="band" points="{" ".join(upper + lower)}" '
            'fill="#4a7bd0" fill-opacity="0.2"/>'
        )
    line = " ".join(f"{x(i)},{y(p.value)}" for i, p in enumerate(points))
    parts.append(
        f'<polyline class="series" points="{line}" fill="none" stroke="#1f4fa0" stroke-width="2"/>'
    )
    parts += [
        f'<circle cx="{x(i)}" cy="{y(p.value)}" r="3" fill="#1f4fa0"><title>'
        f"{escape(p.label)}: {p.value:g}{escape(unit)}</title></circle>"
        for i, p in enumerate(points)
    ]
    parts.append(f'<text x="4" y="{PAD - 8}" font-size="11">{hi:g}{escape(unit)}</text>')
    parts.append(f'<text x="4" y="{HEIGHT - PAD + 14}" font-size="11">{lo:g}{escape(unit)}</text>')
    parts.append(
        f'<text x="{PAD}" y="{HEIGHT - 6}" font-size="11">{escape(points[0].label)}</text>'
    )
    if len(points) > 1:
        parts.append(
            f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" font-size="11" '
            f'text-anchor="end">{escape(points[-1].label)}</text>'
        )
    return "".join(parts) + "</svg>"
