"""Inline SVG charts of the lab sheet: strength against ductility, and where candidates sit
in composition. Plain SVG text (no script, no external file), scaled with its viewBox.

- :func:`scatter_svg`: predicted strength (x) against ductility (y) of the candidates
  (grey), their Pareto front (orange), and numbered highlights (the plan's picks or a
  screen's top ranks) with their calibrated 90 % intervals as light whiskers, clipped at the
  plot's edge (an end without a cap runs beyond it). The axes span the candidates' means,
  not the intervals (which are several times wider and would squeeze the cloud into a
  corner); ticks are round numbers (1, 2, 2.5 or 5 × 10^k). A number that would overlap an
  earlier one moves to the nearest free spot around its point, with a leader line.
- :func:`composition_svg`: per element of the palette, the atomic percent of each of the
  top candidates (dots; the darker, the better ranked), their median (black bar) and how
  many hold the element.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Candidates drawn in the scatter (a seeded sample beyond; the front and highlights always).
MAX_POINTS = 2000

INK, GRID, CLOUD, FRONT, MARK, WHISKER = (
    "#1f2933",
    "#e4e7eb",
    "#9aa5b1",
    "#d9480f",
    "#1c3d7a",
    "#4c6fb1",
)


def nice_step(span: float, count: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 × 10^k) giving about ``count`` intervals over ``span``."""
    raw = span / max(count, 1) if span > 0 else 1.0
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round ticks covering ``[lo, hi]``; the first and last are the axis ends."""
    if not hi > lo:
        lo, hi = lo - 1, hi + 1
    step = nice_step(hi - lo, count)
    start, end = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    n = round((end - start) / step)
    return [start + i * step for i in range(n + 1)]


def tick_text(value: float, step: float) -> str:
    """``1,200`` or ``2.5``: as many decimals as the step needs."""
    digits = next(d for d in range(4) if abs(step * 10**d - round(step * 10**d)) < 1e-6 or d == 3)
    return f"{value:,.{digits}f}"


@dataclass(frozen=True)
class Frame:
    """The plot area inside an SVG of ``width`` × ``height`` and its two data ranges."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    xticks: Sequence[float]
    yticks: Sequence[float]

    def px(self, x: float) -> float:
        x0, x1 = self.xticks[0], self.xticks[-1]
        return self.left + (x - x0) / (x1 - x0) * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        y0, y1 = self.yticks[0], self.yticks[-1]
        return (
            self.height
            - self.bottom
            - (y - y0) / (y1 - y0) * (self.height - self.top - self.bottom)
        )

    @property
    def box(self) -> tuple[float, float, float, float]:
        """x0, y0 (top), x1, y1 (bottom) in pixels."""
        return self.left, self.top, self.width - self.right, self.height - self.bottom

    def ticks_svg(self, horizontal: bool) -> list[str]:
        """Grid lines and round tick labels of the x (``horizontal``) or the y axis."""
        x0, y0, x1, y1 = self.box
        ticks = self.xticks if horizontal else self.yticks
        step = ticks[1] - ticks[0]
        out = []
        for v in ticks:
            if horizontal:
                p = self.px(v)
                ends, at, anchor = (p, y0, p, y1), (p, y1 + 18), "middle"
            else:
                p = self.py(v)
                ends, at, anchor = (x0, p, x1, p), (x0 - 8, p + 4), "end"
            out.append(
                '<line x1="{:.1f}" y1="{:.1f}" x2="{:.1f}" y2="{:.1f}" '.format(*ends)
                + f'stroke="{GRID}"/><text x="{at[0]:.1f}" y="{at[1]:.1f}" '
                f'text-anchor="{anchor}" class="tick">{tick_text(v, step)}</text>'
            )
        return out

    def grid(self, xlabel: str, ylabel: str) -> list[str]:
        """Grid lines, round tick labels and axis titles."""
        x0, y0, x1, y1 = self.box
        out = [f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fff"/>']
        out += self.ticks_svg(horizontal=True) + self.ticks_svg(horizontal=False)
        out.append(
            f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" '
            f'stroke="{INK}" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{(x0 + x1) / 2}" y="{self.height - 8}" text-anchor="middle" '
            f'class="axis">{html.escape(xlabel)}</text>'
        )
        cy = (y0 + y1) / 2
        out.append(
            f'<text x="16" y="{cy}" text-anchor="middle" class="axis" '
            f'transform="rotate(-90 16 {cy})">{html.escape(ylabel)}</text>'
        )
        return out


def _span(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    pad = (hi - lo) * 0.04 or max(abs(hi) * 0.05, 1.0)
    return lo - pad, hi + pad


def front_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points no other point beats on both x and y (larger is better)."""
    order = np.lexsort((-y, -x))  # x descending, then y descending
    ys = y[order]
    before = np.r_[-np.inf, np.maximum.accumulate(ys)[:-1]]
    keep = np.zeros(len(x), dtype=bool)
    keep[order] = ys > before
    return keep


@dataclass(frozen=True)
class Points:
    """Highlighted points: labels, means and interval ends on both axes, tooltips."""

    labels: Sequence[str]
    x: np.ndarray
    x_lo: np.ndarray
    x_hi: np.ndarray
    y: np.ndarray
    y_lo: np.ndarray
    y_hi: np.ndarray
    titles: Sequence[str]


def _whisker(f: Frame, a: float, b: float, at: float, horizontal: bool) -> list[str]:
    """One interval on one axis, clipped to the plot; caps only at ends inside it."""
    lo_end, hi_end = (f.xticks[0], f.xticks[-1]) if horizontal else (f.yticks[0], f.yticks[-1])
    a_c, b_c = max(a, lo_end), min(b, hi_end)
    if not (math.isfinite(a_c) and math.isfinite(b_c)) or b_c < a_c:
        return []
    to = f.px if horizontal else f.py
    p, q = to(a_c), to(b_c)
    c = f.py(at) if horizontal else f.px(at)
    line = (
        f'<line x1="{p:.1f}" y1="{c:.1f}" x2="{q:.1f}" y2="{c:.1f}"'
        if horizontal
        else f'<line x1="{c:.1f}" y1="{p:.1f}" x2="{c:.1f}" y2="{q:.1f}"'
    )
    out = [f'{line} class="whisker"/>']
    for end, clipped in ((p, a > a_c), (q, b > b_c)):
        if not clipped:
            out.append(
                f'<line x1="{end:.1f}" y1="{c - 4:.1f}" x2="{end:.1f}" y2="{c + 4:.1f}" '
                'class="whisker"/>'
                if horizontal
                else f'<line x1="{c - 4:.1f}" y1="{end:.1f}" x2="{c + 4:.1f}" y2="{end:.1f}" '
                'class="whisker"/>'
            )
    return out


_RING = [(math.cos(a), math.sin(a)) for a in np.radians([315, 45, 225, 135, 0, 180, 270, 90])]


def place_labels(
    points: list[tuple[float, float]], box: tuple[float, float, float, float], r: float
) -> list[tuple[float, float]]:
    """A label position per point: on the point if free, else the nearest free spot on
    rings around it (inside ``box``), so no two labels overlap."""
    placed: list[tuple[float, float]] = []
    x0, y0, x1, y1 = box
    for px, py in points:
        spots = [(px, py)] + [
            (px + dx * k * 2.4 * r, py + dy * k * 2.4 * r) for k in (1, 2, 3) for dx, dy in _RING
        ]
        free = [
            (sx, sy)
            for sx, sy in spots
            if x0 + r <= sx <= x1 - r
            and y0 + r <= sy <= y1 - r
            and all(math.hypot(sx - qx, sy - qy) >= 2 * r + 1 for qx, qy in placed)
        ]
        placed.append(free[0] if free else (px, py))
    return placed


def scatter_svg(
    cloud_x: np.ndarray,
    cloud_y: np.ndarray,
    marks: Points,
    labels: tuple[str, str],
    mark_name: str,
    width: int = 760,
    height: int = 520,
) -> str:
    """The strength-ductility chart (module docstring)."""
    ok = np.isfinite(cloud_x) & np.isfinite(cloud_y)
    fx_all, fy_all = cloud_x[ok], cloud_y[ok]
    front = front_mask(fx_all, fy_all) if len(fx_all) else np.zeros(0, dtype=bool)
    order = np.argsort(fx_all[front])
    fx, fy = fx_all[front][order], fy_all[front][order]
    shown = np.flatnonzero(ok)
    if len(shown) > MAX_POINTS:
        shown = np.sort(np.random.default_rng(0).choice(shown, MAX_POINTS, replace=False))
    xs, ys = cloud_x[shown], cloud_y[shown]
    f = Frame(
        width,
        height,
        78,
        20,
        44,
        52,
        nice_ticks(*_span(np.r_[xs, fx, marks.x]), 6),
        nice_ticks(*_span(np.r_[ys, fy, marks.y]), 5),
    )
    x0, y0, x1, y1 = f.box
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'class="chart" role="img" aria-label="{html.escape(labels[0])} against '
        f'{html.escape(labels[1])}">',
        f'<defs><clipPath id="plot"><rect x="{x0}" y="{y0}" width="{x1 - x0}" '
        f'height="{y1 - y0}"/></clipPath></defs>',
        *f.grid(labels[0], labels[1]),
    ]
    for j in range(len(marks.labels)):  # under the cloud: they inform, the cloud stays legible
        parts += _whisker(f, marks.x_lo[j], marks.x_hi[j], marks.y[j], True)
        parts += _whisker(f, marks.y_lo[j], marks.y_hi[j], marks.x[j], False)
    parts += [
        '<g clip-path="url(#plot)">',
        *(
            f'<circle cx="{f.px(a):.1f}" cy="{f.py(b):.1f}" r="2.2" class="cloud"/>'
            for a, b in zip(xs, ys)
        ),
    ]
    if len(fx):
        # the front as a staircase: each point dominates everything below and left of it
        steps = [f"{f.px(fx[0]):.1f},{f.py(fy[0]):.1f}"]
        for a, b, c in zip(fx[1:], fy[:-1], fy[1:]):
            steps += [f"{f.px(a):.1f},{f.py(b):.1f}", f"{f.px(a):.1f},{f.py(c):.1f}"]
        parts.append(f'<polyline points="{" ".join(steps)}" class="front"/>')
    parts.append("</g>")
    r = 10.0
    where = [(f.px(a), f.py(b)) for a, b in zip(marks.x, marks.y)]
    spots = place_labels(where, f.box, r)
    for (px, py), (sx, sy) in zip(where, spots):  # leaders first: no line crosses a number
        if (sx, sy) != (px, py):
            parts.append(
                f'<line x1="{px:.1f}" y1="{py:.1f}" x2="{sx:.1f}" y2="{sy:.1f}" class="leader"/>'
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{MARK}"/>'
            )
    for (sx, sy), label, title in zip(spots, marks.labels, marks.titles):
        parts.append(
            f'<g class="pick"><title>{html.escape(title)}</title>'
            f'<circle cx="{sx:.1f}" cy="{sy:.1f}" r="{r}" fill="{MARK}" stroke="#fff" '
            f'stroke-width="1.5"/><text x="{sx:.1f}" y="{sy + 4:.1f}" text-anchor="middle" '
            f'class="num">{html.escape(label)}</text></g>'
        )
    parts += _legend(f, mark_name)
    parts.append("</svg>")
    return "\n".join(parts)


def _legend(f: Frame, mark_name: str) -> list[str]:
    x, y = f.left, 20
    items = [
        f'<circle cx="{x + 6}" cy="{y}" r="3" class="cloud"/>'
        f'<text x="{x + 14}" y="{y + 4}" class="legend">candidates (predicted mean)</text>',
        f'<line x1="{x + 190}" y1="{y}" x2="{x + 212}" y2="{y}" class="front"/>'
        f'<text x="{x + 218}" y="{y + 4}" class="legend">Pareto front</text>',
        f'<circle cx="{x + 316}" cy="{y}" r="7" fill="{MARK}"/>'
        f'<text x="{x + 328}" y="{y + 4}" class="legend">{html.escape(mark_name)}</text>',
        f'<line x1="{x + 440}" y1="{y}" x2="{x + 470}" y2="{y}" class="whisker"/>'
        f'<line x1="{x + 440}" y1="{y - 4}" x2="{x + 440}" y2="{y + 4}" class="whisker"/>'
        f'<text x="{x + 476}" y="{y + 4}" class="legend">90 % interval (clipped)</text>',
    ]
    return items


def composition_svg(
    fractions: np.ndarray,
    elements: Sequence[str],
    highlight: np.ndarray | None = None,
    width: int = 540,
    height: int = 520,
) -> str:
    """Atomic percent per element of each row of ``fractions`` (rows in rank order; the
    darker, the better ranked), the median of the rows holding the element, and how many
    do. ``highlight`` rows (e.g. the picks) are drawn on top in the mark colour."""
    pct = fractions * 100
    top = float(pct.max()) if pct.size else 50.0
    f = Frame(width, height, 56, 12, 44, 64, [0, len(elements)], nice_ticks(0, top, 5))
    x0, y0, x1, y1 = f.box
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        'class="chart" role="img" aria-label="atomic percent per element">',
        f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fff"/>',
    ]
    parts += f.ticks_svg(horizontal=False)
    n = len(pct)
    shade = np.linspace(0.95, 0.25, max(n, 1))  # opacity by rank
    jitter = ((np.arange(n) * 0.618034) % 1.0 - 0.5) * 0.6
    for j, el in enumerate(elements):
        cx = f.px(j + 0.5)
        if j:
            parts.append(
                f'<line x1="{f.px(j):.1f}" y1="{y0}" x2="{f.px(j):.1f}" y2="{y1}" stroke="{GRID}"/>'
            )
        held = pct[:, j] > 0
        for i in np.flatnonzero(held):
            parts.append(
                f'<circle cx="{f.px(j + 0.5 + jitter[i]):.1f}" cy="{f.py(pct[i, j]):.1f}" r="2.6" '
                f'fill="{WHISKER}" fill-opacity="{shade[i]:.2f}"/>'
            )
        if highlight is not None:
            for i in np.flatnonzero(highlight[:, j] > 0):
                parts.append(
                    f'<circle cx="{cx:.1f}" cy="{f.py(highlight[i, j] * 100):.1f}" r="4.5" '
                    f'fill="none" stroke="{FRONT}" stroke-width="2"/>'
                )
        if held.any():
            med = f.py(float(np.median(pct[held, j])))
            w = (f.px(1) - f.px(0)) * 0.36
            parts.append(
                f'<line x1="{cx - w:.1f}" y1="{med:.1f}" x2="{cx + w:.1f}" y2="{med:.1f}" '
                f'stroke="{INK}" stroke-width="2.5"/>'
            )
        parts.append(
            f'<text x="{cx:.1f}" y="{y1 + 18}" text-anchor="middle" class="axis">'
            f"{html.escape(el)}</text>"
            f'<text x="{cx:.1f}" y="{y1 + 34}" text-anchor="middle" class="tick">'
            f"{int(held.sum())}/{n}</text>"
        )
    parts.append(
        f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="{INK}"/>'
    )
    cy = (y0 + y1) / 2
    parts.append(
        f'<text x="16" y="{cy}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 16 {cy})">atomic percent (at.%)</text>'
    )
    legend = (
        f'<circle cx="{x0 + 6}" cy="20" r="3" fill="{WHISKER}"/>'
        f'<text x="{x0 + 14}" y="24" class="legend">one candidate (darker: better ranked)</text>'
        f'<line x1="{x0 + 262}" y1="20" x2="{x0 + 282}" y2="20" stroke="{INK}" '
        'stroke-width="2.5"/>'
        f'<text x="{x0 + 288}" y="24" class="legend">median</text>'
    )
    if highlight is not None:
        legend += (
            f'<circle cx="{x0 + 352}" cy="20" r="4.5" fill="none" stroke="{FRONT}" '
            f'stroke-width="2"/><text x="{x0 + 362}" y="24" class="legend">picks</text>'
        )
    parts += [legend, "</svg>"]
    return "\n".join(parts)
