"""The lab sheet of a plan: a CSV and a self-contained HTML report (inline SVG, no server).

The HTML opens from disk in any browser: no script, no external file, no network. It holds

- the condition, the objective, the model's SHA-256 and the phase rules' references;
- a scatter plot of predicted strength against ductility of the candidates (a seeded
  sample of :data:`MAX_POINTS` when there are more), the picks highlighted and numbered with
  their calibrated intervals as error bars on both axes, and the Pareto front of all
  candidates drawn as a line;
- one row per pick: why it was picked, predictions, phase flags and the weigh-out masses.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from hea_screen.compositions.phase_rules import REFERENCES
from hea_screen.output import atomic_write

#: Candidates drawn in the plot (a seeded sample beyond; the front and picks always).
MAX_POINTS = 2000

_W, _H, _PAD = 720, 480, 60

#: Columns of the pick table in the report, when present.
_TABLE_COLUMNS: tuple[str, ...] = (
    "pick",
    "composition",
    "reason",
    "why",
    "omega",
    "delta_r",
    "vec_phase",
    "solid_solution",
    "phase_fcc_prob",
    "phase_bcc_prob",
    "at_pct",
    "weigh_out_g",
)


def front_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points no other point beats on both x and y (larger is better)."""
    order = np.lexsort((-y, -x))  # x descending, then y descending
    ys = y[order]
    before = np.r_[-np.inf, np.maximum.accumulate(ys)[:-1]]
    keep = np.zeros(len(x), dtype=bool)
    keep[order] = ys > before
    return keep


class _Axes:
    """Linear map from data to SVG pixels."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x0, self.x1 = _span(x)
        self.y0, self.y1 = _span(y)

    def px(self, x: float) -> float:
        return _PAD + (x - self.x0) / (self.x1 - self.x0) * (_W - 2 * _PAD)

    def py(self, y: float) -> float:
        return _H - _PAD - (y - self.y0) / (self.y1 - self.y0) * (_H - 2 * _PAD)


def _span(v: np.ndarray) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 1.0
    return lo - pad, hi + pad


def scatter_svg(
    cand: pl.DataFrame, plan: pl.DataFrame, x_task: str, y_task: str, labels: Sequence[str]
) -> str:
    """Strength (x) against ductility (y): candidates, Pareto front, picks with intervals."""
    all_x, all_y = cand[f"{x_task}_mean"].to_numpy(), cand[f"{y_task}_mean"].to_numpy()
    ok = np.isfinite(all_x) & np.isfinite(all_y)
    front = np.flatnonzero(ok)[front_mask(all_x[ok], all_y[ok])]
    front = front[np.argsort(all_x[front])]
    fx, fy = all_x[front], all_y[front]
    shown = np.flatnonzero(ok)
    if len(shown) > MAX_POINTS:
        shown = np.random.default_rng(0).choice(shown, MAX_POINTS, replace=False)
    xs, ys = all_x[shown], all_y[shown]
    px_, py_ = plan[f"{x_task}_mean"].to_numpy(), plan[f"{y_task}_mean"].to_numpy()
    ax = _Axes(
        np.r_[xs, plan[f"{x_task}_lo"].to_numpy(), plan[f"{x_task}_hi"].to_numpy()],
        np.r_[ys, plan[f"{y_task}_lo"].to_numpy(), plan[f"{y_task}_hi"].to_numpy()],
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="strength vs ductility">',
        f'<rect x="{_PAD}" y="{_PAD}" width="{_W - 2 * _PAD}" height="{_H - 2 * _PAD}" '
        'fill="none" stroke="#444"/>',
    ]
    parts += _ticks(ax)
    parts += [
        f'<circle cx="{ax.px(a):.1f}" cy="{ax.py(b):.1f}" r="2" fill="#9ab"/>'
        for a, b in zip(xs, ys)
    ]
    steps = " ".join(f"{ax.px(a):.1f},{ax.py(b):.1f}" for a, b in zip(fx, fy))
    parts.append(f'<polyline class="front" points="{steps}" fill="none" stroke="#d62"/>')
    for j, (a, b) in enumerate(zip(px_, py_)):
        xl, xh = plan[f"{x_task}_lo"][j], plan[f"{x_task}_hi"][j]
        yl, yh = plan[f"{y_task}_lo"][j], plan[f"{y_task}_hi"][j]
        parts += [
            f'<line x1="{ax.px(xl):.1f}" y1="{ax.py(b):.1f}" x2="{ax.px(xh):.1f}" '
            f'y2="{ax.py(b):.1f}" stroke="#036"/>',
            f'<line x1="{ax.px(a):.1f}" y1="{ax.py(yl):.1f}" x2="{ax.px(a):.1f}" '
            f'y2="{ax.py(yh):.1f}" stroke="#036"/>',
            f'<circle class="pick" cx="{ax.px(a):.1f}" cy="{ax.py(b):.1f}" r="6" '
            f'fill="#fc0" stroke="#036"><title>{html.escape(str(plan["composition"][j]))}'
            "</title></circle>",
            f'<text x="{ax.px(a) + 8:.1f}" y="{ax.py(b) - 8:.1f}" font-size="12">{j + 1}</text>',
        ]
    parts += [
        f'<text x="{_W / 2}" y="{_H - 15}" text-anchor="middle" font-size="13">'
        f"{html.escape(labels[0])}</text>",
        f'<text x="15" y="{_H / 2}" text-anchor="middle" font-size="13" '
        f'transform="rotate(-90 15 {_H / 2})">{html.escape(labels[1])}</text>',
        "</svg>",
    ]
    return "\n".join(parts)


def _ticks(ax: _Axes) -> list[str]:
    out = []
    for v in np.linspace(ax.x0, ax.x1, 6):
        out.append(
            f'<text x="{ax.px(v):.1f}" y="{_H - _PAD + 16}" text-anchor="middle" '
            f'font-size="11">{v:.4g}</text>'
        )
    for v in np.linspace(ax.y0, ax.y1, 6):
        out.append(
            f'<text x="{_PAD - 6}" y="{ax.py(v) + 4:.1f}" text-anchor="end" '
            f'font-size="11">{v:.4g}</text>'
        )
    return out


def _table(plan: pl.DataFrame, tasks: Sequence[str]) -> str:
    cols = [c for c in _TABLE_COLUMNS[:4] if c in plan.columns]
    cols += [f"{t}_{s}" for t in tasks for s in ("mean", "lo", "hi") if f"{t}_mean" in plan.columns]
    cols += [c for c in _TABLE_COLUMNS[4:] if c in plan.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for row in plan.select(cols).iter_rows():
        cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row)
        rows.append(f'<tr class="pick-row">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report_html(
    plan: pl.DataFrame,
    candidates: pl.DataFrame,
    strength: str,
    ductility: str,
    header: Sequence[str],
    labels: Sequence[str],
) -> str:
    """The self-contained report (module docstring); ``header`` lines go on top."""
    have_axes = all(
        f"{t}_{s}" in plan.columns for t in (strength, ductility) for s in ("mean", "lo", "hi")
    )
    plot = (
        scatter_svg(candidates, plan, strength, ductility, labels)
        if have_axes
        else "<p>(no strength and ductility predictions to plot)</p>"
    )
    lines = "".join(f"<li>{html.escape(h)}</li>" for h in header)
    refs = "".join(f"<li>{html.escape(r)}</li>" for r in REFERENCES)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hea-screen plan</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #bbb;padding:3px 6px;vertical-align:top}}</style></head>
<body><h1>Experimental plan: {plan.height} alloys</h1><ul>{lines}</ul>
<h2>Predicted strength vs ductility</h2>
<p>Grey: {min(candidates.height, MAX_POINTS):,} of the {candidates.height:,} candidates;
red line: the Pareto front of all of them; yellow, numbered: the picks, with their
calibrated intervals as error bars.</p>
{plot}
<h2>Picks and weigh-outs</h2>
{_table(plan, (strength, ductility))}
<h2>Phase rules</h2><ul>{refs}</ul>
</body></html>
"""


def write_lab_sheet(
    plan: pl.DataFrame,
    candidates: pl.DataFrame,
    csv_path: str | Path,
    html_path: str | Path | None,
    axes: tuple[str, str],
    header: Sequence[str],
    labels: Sequence[str],
) -> list[Path]:
    """Write the plan as CSV and (when ``html_path``) the HTML report, atomically."""
    written = [atomic_write(csv_path, plan.write_csv)]
    if html_path is not None:
        text = report_html(plan, candidates, axes[0], axes[1], header, labels)
        written.append(atomic_write(html_path, lambda p: p.write_text(text, encoding="utf-8")))
    return written
