# SPDX-License-Identifier: AGPL-3.0-or-later
"""Small bar charts as plain SVG, built on the server: no script, no style sheet, no library.

Used by the public transparency page, where every chart sits above a table with the same
numbers. Text is escaped (markupsafe); colours are SVG presentation attributes, which the
page's Content-Security-Policy allows (no ``style`` attribute, no inline CSS). A value of None
is a suppressed count: no bar is drawn, only a hollow mark at the base line whose tooltip
(``<title>``) says what it means — never a number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

COLOURS = ("#1f5f8b", "#b35c1e", "#3a7d44", "#7a4d9b", "#9b2f47", "#4d6b73", "#8a7a1f")
AXIS = "#555555"
GRID = "#d9d9d9"
FONT = "font-family=\"sans-serif\" font-size=\"11\""


@dataclass(frozen=True)
class Bar:
    """One bar: its label (axis text), value (None: suppressed) and tooltip text."""

    label: str
    value: float | None
    tooltip: str


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    while power > value:
        power /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def column_chart(bars: Sequence[Bar], *, title: str, chart_id: str, colour: str = COLOURS[0],
                 max_value: float | None = None, percent: bool = False, height: int = 180,
                 suppressed_text: str = "") -> Markup:
    """Vertical bars over labelled slots (months); ``percent``: values are 0–100 and the axis is
    fixed at 100 %."""
    slot = 34 if len(bars) <= 12 else 22
    left, right, top, bottom = 60, 8, 10, 52
    width = left + right + slot * max(1, len(bars))
    plot_h = height - top - bottom
    shown = [b.value for b in bars if b.value is not None]
    top_value = 100.0 if percent else _nice_max(max_value if max_value is not None else max(shown, default=0))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-labelledby="{escape(chart_id)}-title" {FONT}>',
             f'<title id="{escape(chart_id)}-title">{escape(title)}</title>']
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        value = top_value * frac
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{GRID if frac else AXIS}" stroke-width="1"/>')
        label = _fmt(value) + (" %" if percent else "")
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="{AXIS}">'
                     f'{escape(label)}</text>')
    for i, bar in enumerate(bars):
        x = left + i * slot
        cx = x + slot / 2
        if bar.value is None:
            parts.append(f'<circle cx="{cx:.1f}" cy="{top + plot_h - 4:.1f}" r="3" fill="none" '
                         f'stroke="{AXIS}" stroke-width="1" class="suppressed">'
                         f'<title>{escape(bar.label)}: {escape(suppressed_text)}</title></circle>')
        else:
            h = plot_h * min(bar.value, top_value) / top_value
            parts.append(f'<rect x="{x + 3:.1f}" y="{top + plot_h - h:.1f}" width="{slot - 6}" '
                         f'height="{h:.1f}" fill="{escape(colour)}"><title>{escape(bar.tooltip)}'
                         f'</title></rect>')
        parts.append(f'<text x="{cx:.1f}" y="{height - bottom + 14}" text-anchor="end" '
                     f'transform="rotate(-45 {cx:.1f} {height - bottom + 14})" fill="{AXIS}">'
                     f'{escape(bar.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 # nosec B704 - every text above is escaped


def bar_chart(bars: Sequence[Bar], *, title: str, chart_id: str, colour: str = COLOURS[0],
              suppressed_text: str = "") -> Markup:
    """Horizontal bars, one labelled row each (outcomes, places)."""
    row, label_w, right, top = 22, 230, 60, 6
    plot_w = 300
    width = label_w + plot_w + right
    height = top * 2 + row * max(1, len(bars))
    top_value = _nice_max(max((b.value for b in bars if b.value is not None), default=0))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-labelledby="{escape(chart_id)}-title" {FONT}>',
             f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
             f'<line x1="{label_w}" x2="{label_w}" y1="{top}" y2="{height - top}" stroke="{AXIS}"/>']
    for i, bar in enumerate(bars):
        y = top + i * row
        parts.append(f'<text x="{label_w - 6}" y="{y + row / 2 + 4:.1f}" text-anchor="end" '
                     f'fill="#222222">{escape(bar.label)}</text>')
        if bar.value is None:
            parts.append(f'<circle cx="{label_w + 6}" cy="{y + row / 2:.1f}" r="3" fill="none" '
                         f'stroke="{AXIS}" class="suppressed"><title>{escape(bar.label)}: '
                         f'{escape(suppressed_text)}</title></circle>')
            continue
        w = plot_w * bar.value / top_value
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="{escape(colour)}"><title>{escape(bar.tooltip)}</title></rect>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + row / 2 + 4:.1f}" fill="#222222">'
                     f'{escape(_fmt(bar.value))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 # nosec B704 - every text above is escaped
