"""The lab sheet: a plan (or a screen's top candidates) as CSV and as one self-contained
HTML page a metallurgist reads at a glance and prints on A4.

The HTML opens from disk in any browser: no script, no external file, no network; charts
are inline SVG (:mod:`hea_screen.planning.charts`). At a 1,280–1,400 px window the page
needs no sideways scrolling; printed, it fits an A4 page width (print CSS). It holds

- the condition, the objective, the incumbents, the constraints and the model's SHA-256;
- predicted strength against ductility of the candidates with their Pareto front, and the
  picks (or top ranks) numbered, with light 90 % interval whiskers;
- where the picks (or the top candidates) sit in composition: atomic percent per element;
- one row per pick (or rank): predictions as ``mean [90 %]`` with units, the expected gain
  over the best measured value, the nearest measured alloy, the phase rules and flags, the
  weigh-out; for a plan, the reason in words below each row.

Column headers and number formats come from :mod:`hea_screen.screening.columns`, so a task
or flag added upstream shows here without a change.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from hea_screen.compositions.phase_rules import REFERENCES
from hea_screen.conditions import TASKS_BY_NAME, Task
from hea_screen.output import atomic_write, csv_safe
from hea_screen.planning.acquisition import table_of
from hea_screen.planning.charts import INK, MARK, Points, composition_svg, scatter_svg
from hea_screen.planning.reasons import TOP
from hea_screen.screening import columns as col

#: Candidates shown in a screen page's composition chart and table.
SCREEN_TOP = 100
SCREEN_ROWS = 25
SCREEN_MARKS = 10

_CSS = f"""
*{{box-sizing:border-box}}
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:{INK};margin:0;background:#f5f7fa}}
main{{max-width:1360px;margin:0 auto;padding:24px 28px;background:#fff}}
h1{{font-size:24px;margin:0 0 4px}} h2{{font-size:17px;margin:26px 0 8px}}
.sub{{color:#52606d;margin:0 0 14px}}
dl.facts{{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:0;
font-size:13px}}
dl.facts dt{{color:#52606d}} dl.facts dd{{margin:0;overflow-wrap:anywhere}}
.figs{{display:grid;grid-template-columns:58fr 42fr;gap:20px;margin-top:18px}}
figure{{margin:0;min-width:0}} figcaption{{font-size:12.5px;color:#52606d;margin-top:4px}}
svg.chart{{width:100%;height:auto;display:block;font-family:inherit}}
.tick{{font-size:12px;fill:#52606d}} .axis{{font-size:13.5px;fill:{INK};font-weight:600}}
.legend{{font-size:12px;fill:{INK}}} .cloud{{fill:#9aa5b1;fill-opacity:.55}}
.front{{fill:none;stroke:#d9480f;stroke-width:2.2}}
.whisker{{stroke:#4c6fb1;stroke-opacity:.3;stroke-width:1.3}}
.leader{{stroke:{MARK};stroke-width:1}} .num{{fill:#fff;font-size:11px;font-weight:700}}
table{{border-collapse:collapse;width:100%;font-size:13px}}
th{{text-align:left;font-weight:600;color:#3e4c59;border-bottom:2px solid {INK};
padding:6px 8px;vertical-align:bottom}}
td{{padding:6px 8px;vertical-align:top;border-bottom:1px solid #e4e7eb}}
td.n,th.n,td.r{{text-align:right;font-variant-numeric:tabular-nums}} td.n{{white-space:nowrap}}
.line{{white-space:nowrap}}
tr.why td{{color:#52606d;font-size:12.5px;padding-top:0;border-bottom:1px solid #cbd2d9}}
tr.has-why td{{border-bottom:none}}
.chip{{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;
font-weight:600;white-space:nowrap}}
.exploit{{background:#d3f9d8;color:#2b8a3e}} .explore{{background:#d0ebff;color:#1864ab}}
.both{{background:#fff3bf;color:#8a6d00}}
.comp{{font-weight:600;display:inline-block;min-width:12.5em}} .wrap{{overflow-x:auto}}
.small{{font-size:12px;color:#52606d}}
.grams{{display:grid;grid-template-columns:repeat(2,max-content);gap:0 12px;
font-variant-numeric:tabular-nums;font-size:12.5px;white-space:nowrap}}
.warn{{color:#c92a2a;font-weight:600}}
.notes{{font-size:12.5px;color:#3e4c59}} .notes li{{margin:2px 0}}
@media (max-width:1100px){{.figs{{grid-template-columns:1fr}}}}
@page{{size:A4 portrait;margin:12mm}}
@media print{{body{{background:#fff;font-size:10px}} main{{max-width:none;padding:0}}
h1{{font-size:17px}} h2{{font-size:13px;margin:12px 0 4px}} .sub{{font-size:10px}}
dl.facts,figcaption,.notes{{font-size:9px}}
.figs{{grid-template-columns:1fr;gap:6px;justify-items:center}} figure{{width:88%}}
figure+figure{{width:62%}} .chip{{font-size:8px;padding:0 4px}}
.grams{{grid-template-columns:max-content}} .comp{{min-width:6em}}
table{{font-size:9px}} th,td{{padding:3px 4px}} .grams,.small,tr.why td{{font-size:8.5px}}
tr,figure{{break-inside:avoid}} thead{{display:table-header-group}}}}
"""


def _page(title: str, subtitle: str, facts: Sequence[str], body: str) -> str:
    items = []
    for line in facts:
        key, _, value = line.partition(": ")
        items.append(f"<dt>{html.escape(key)}</dt><dd>{html.escape(value)}</dd>")
    refs = "".join(f"<li>{html.escape(r)}</li>" for r in REFERENCES)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>
<dl class="facts">{"".join(items)}</dl>
{body}
<section class="notes"><h2>Phase rules</h2><ul>{refs}</ul></section>
</main></body></html>
"""


def _axes(frame: pl.DataFrame, tasks: Sequence[str]) -> tuple[Task, Task] | None:
    have = [TASKS_BY_NAME[t] for t in tasks if t in {x.name for x in col.tasks_in(frame)}]
    return (have[0], have[1]) if len(have) >= 2 else None


def _marks(frame: pl.DataFrame, x: Task, y: Task, labels: Sequence[str]) -> Points:
    def arr(task: Task, s: str) -> np.ndarray:
        return frame[f"{task.name}_{s}"].cast(pl.Float64).to_numpy()

    return Points(
        labels,
        arr(x, "mean"),
        arr(x, "lo"),
        arr(x, "hi"),
        arr(y, "mean"),
        arr(y, "lo"),
        arr(y, "hi"),
        [col.at_pct(c) for c in frame["composition"]],
    )


def _figures(
    cloud: pl.DataFrame,
    marked: pl.DataFrame,
    labels: Sequence[str],
    tasks: Sequence[str],
    mark_name: str,
    comp_rows: pl.DataFrame,
    highlight: pl.DataFrame | None,
    captions: tuple[str, str],
) -> str:
    axes = _axes(marked, tasks)
    if axes is None:
        scatter = "<p>(no strength and ductility predictions to plot)</p>"
    else:
        x, y = axes
        scatter = scatter_svg(
            cloud[f"{x.name}_mean"].cast(pl.Float64).to_numpy(),
            cloud[f"{y.name}_mean"].cast(pl.Float64).to_numpy(),
            _marks(marked, x, y, labels),
            (f"predicted {x.label}", f"predicted {y.label}"),
            mark_name,
        )
    table = table_of(comp_rows["composition"])
    picked = None
    if highlight is not None:
        hl = table_of(highlight["composition"])
        picked = np.stack(
            [
                hl.fractions[:, hl.elements.index(e)] if e in hl.elements else np.zeros(len(hl))
                for e in table.elements
            ],
            axis=1,
        )
    comp = composition_svg(table.fractions, table.elements, picked)
    return (
        f'<section class="figs"><figure>{scatter}<figcaption>{captions[0]}</figcaption>'
        f"</figure><figure>{comp}<figcaption>{captions[1]}</figcaption></figure></section>"
    )


def _table(head: str, rows: Sequence[str]) -> str:
    """A table in a box that scrolls by itself if a table ever outgrows the page (the page
    never does; the width test checks the box too)."""
    return (
        f'<div class="wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _th(text: str, numeric: bool = False) -> str:
    return f'<th class="n">{text}</th>' if numeric else f"<th>{text}</th>"


def _td(text: str, numeric: bool = False, raw: bool = False) -> str:
    body = text if raw else html.escape(text)
    return f'<td class="n">{body}</td>' if numeric else f"<td>{body}</td>"


def _weigh_out(text: object) -> str:
    if not text:
        return "–"
    cells = "".join(
        f"<span>{html.escape(part.removesuffix(' g'))}</span>" for part in str(text).split(", ")
    )
    return f'<div class="grams">{cells}</div>'


def _phase(row: dict[str, object], flags: Sequence[str]) -> str:
    text = html.escape(col.flags_text(row, flags))
    if row.get("solid_solution") is False or any(row.get(f) for f in flags):
        text = f'<span class="warn">{text}</span>'
    rules, learned = [], []
    if row.get("omega") is not None:
        rules.append(f"Ω {col.scalar('omega', row['omega'])}")
    if row.get("delta_r") is not None:
        rules.append(f"δ {col.scalar('delta_r', row['delta_r'])} %")
    for c in ("phase_fcc_prob", "phase_bcc_prob"):
        if row.get(c) is not None:
            learned.append(f"{col.SCALARS[c].header} {col.scalar(c, row[c])}")
    lines = "".join(
        f'<div class="small line">{html.escape(" · ".join(x))}</div>' for x in (rules, learned) if x
    )
    return f'<div class="line">{text}</div>{lines}'


def _task_cells(row: dict[str, object], tasks: Sequence[Task]) -> str:
    return "".join(
        _td(
            col.interval(row[f"{t.name}_mean"], row[f"{t.name}_lo"], row[f"{t.name}_hi"], t.unit),
            numeric=True,
        )
        for t in tasks
    )


def _ordered_tasks(frame: pl.DataFrame, first: Sequence[str]) -> list[Task]:
    present = col.tasks_in(frame)
    return sorted(present, key=lambda t: (t.name not in first, list(present).index(t)))


def _gain_cell(row: dict[str, object], tasks: Sequence[str]) -> str:
    lines = []
    for name in tasks:
        gain, chance = row.get(f"{name}_expected_gain"), row.get(f"{name}_chance_to_beat_best")
        if gain is None or chance is None:
            continue
        task = TASKS_BY_NAME[name]
        lines.append(
            f'<div class="line">{html.escape(col.short_name(task))} '
            f"+{col.quantity(gain, task.unit)} {task.unit} "
            f'<span class="small">({100 * float(chance):.0f} %)</span></div>'  # type: ignore[arg-type]
        )
    return "".join(lines) or "–"


def plan_table_html(plan: pl.DataFrame, objective_tasks: Sequence[str]) -> str:
    """The pick table: one row per pick and its reason in words below it."""
    tasks = _ordered_tasks(plan, objective_tasks)
    flags = col.flag_columns(plan)
    head = (
        _th("#", True)
        + _th("composition, at.%")
        + _th("reason")
        + "".join(_th(html.escape(col.interval_header(t)), True) for t in tasks)
        + _th("expected gain over the best measured (chance)")
        + _th("nearest measured alloy, L1", True)
        + _th("phase rules and flags")
        + _th("weigh-out, g")
    )
    rows = []
    span = 7 + len(tasks)
    for row in plan.iter_rows(named=True):
        nearest = row.get("nearest_measured")
        near = f'<div class="line">{col.number(row["distance_to_measured"], 2)}</div>' + (
            f'<div class="small">{html.escape(col.at_pct(nearest))}</div>' if nearest else ""
        )
        reason = str(row["reason"])
        rows.append(
            '<tr class="pick-row has-why">'
            + _td(str(row["pick"]), True)
            + _td(
                f'<span class="comp">{html.escape(col.at_pct(row["composition"]))}</span>', raw=True
            )
            + _td(f'<span class="chip {reason}">{reason}</span>', raw=True)
            + _task_cells(row, tasks)
            + _td(_gain_cell(row, objective_tasks), raw=True)
            + f'<td class="r">{near}</td>'
            + _td(_phase(row, flags), raw=True)
            + _td(_weigh_out(row.get("weigh_out_g")), raw=True)
            + "</tr>"
            + f'<tr class="why"><td></td><td colspan="{span - 1}">{html.escape(str(row["why"]))}'
            "</td></tr>"
        )
    return _table(head, rows)


def plan_html(
    plan: pl.DataFrame,
    candidates: pl.DataFrame,
    objective_tasks: Sequence[str],
    axes: Sequence[str],
    header: Sequence[str],
) -> str:
    """The plan's page (module docstring); ``header`` lines (``key: value``) go on top."""
    top = f"{100 * (1 - TOP):.0f} %"
    figs = _figures(
        candidates,
        plan,
        [str(p) for p in plan["pick"]],
        axes,
        "picks, numbered",
        candidates.head(max(SCREEN_TOP, plan.height)),
        plan,
        (
            f"Grey: the {candidates.height:,} candidates (a sample of 2,000 when there are more);"
            " orange: their Pareto front; numbered: the picks. Axes span the predicted means; "
            "the picks' 90 % intervals are far wider and are clipped at the edge.",
            f"Blue: the first {min(candidates.height, SCREEN_TOP)} candidates of the input, in "
            "its order (darker: earlier); orange rings: the picks; below each element, how "
            "many of them hold it.",
        ),
    )
    notes = (
        '<section class="notes"><h2>Reading the plan</h2><ul>'
        "<li><b>expected gain</b>: E[max(y − best, 0)] in the task's unit, y normal with the "
        "predicted mean and σ from the upper half of the calibrated 90 % interval; the "
        "chance is P(y &gt; best).</li>"
        f"<li><b>exploit</b>: picked mainly for its predicted mean (it ranks higher among the "
        f"feasible candidates than its uncertainty does); <b>explore</b>: mainly for its "
        f"uncertainty (measuring it teaches the model most); <b>both</b>: mean and "
        f"uncertainty both in the top {top} of the feasible candidates.</li>"
        "<li><b>L1</b>: Σ|x_i − y_i| over atomic fractions (0 identical, 2 nothing in "
        "common).</li><li><b>SS</b>: solid solution by the Ω and δ rules; VEC class by "
        "Guo's rule (references below).</li></ul></section>"
    )
    body = figs + f"<h2>Picks and weigh-outs</h2>{plan_table_html(plan, objective_tasks)}" + notes
    subtitle = f"{plan.height} alloys picked from {candidates.height:,} candidates"
    return _page(f"Experimental plan: {plan.height} alloys", subtitle, header, body)


def screen_table_html(table: pl.DataFrame, ranked_tasks: Sequence[str]) -> str:
    """The top rows of a screen: rank, composition, score, predictions, nearest data,
    phase rules and flags, weigh-out."""
    tasks = _ordered_tasks(table, ranked_tasks)
    flags = col.flag_columns(table)
    nearest = [t for t in tasks if f"{t.name}_nearest_measured" in table.columns]
    head = (
        _th("rank", True)
        + _th("composition, at.%")
        + _th("Pareto front")
        + _th("score", True)
        + "".join(_th(html.escape(col.interval_header(t)), True) for t in tasks)
        + "".join(
            _th(html.escape(f"nearest measured {col.short_name(t)}, {t.unit} (L1)"), True)
            for t in nearest
        )
        + _th("phase rules and flags")
        + _th("weigh-out, g")
    )
    rows = []
    for row in table.iter_rows(named=True):
        near = "".join(
            _td(
                f"{col.quantity(row[f'{t.name}_nearest_measured'], t.unit)} "
                f"({col.number(row[f'{t.name}_nearest_distance'], 2)})",
                True,
            )
            for t in nearest
        )
        rows.append(
            '<tr class="rank-row">'
            + _td(str(row.get("rank", "")), True)
            + _td(
                f'<span class="comp">{html.escape(col.at_pct(row["composition"]))}</span>',
                raw=True,
            )
            + _td("yes" if row.get("pareto") else "")
            + _td(col.scalar("score", row.get("score")), True)
            + _task_cells(row, tasks)
            + near
            + _td(_phase(row, flags), raw=True)
            + _td(_weigh_out(row.get("weigh_out_g")), raw=True)
            + "</tr>"
        )
    return _table(head, rows)


def screen_html(
    table: pl.DataFrame, ranked_tasks: Sequence[str], header: Sequence[str], candidates: int
) -> str:
    """A screen's page: its ranked rows against each other, where the top ones sit in
    composition, and the top rows as a table."""
    top = table.head(SCREEN_TOP)
    marks = table.head(SCREEN_MARKS)
    figs = _figures(
        table,
        marks,
        [str(r) for r in marks["rank"]],
        ranked_tasks,
        f"top {marks.height}, by rank",
        top,
        None,
        (
            f"Grey: the {table.height:,} ranked candidates; orange: their Pareto front; "
            f"numbered: the top {marks.height} by rank with their 90 % intervals (clipped at "
            "the edge).",
            f"Atomic percent of each element in the top {top.height} candidates (darker: better "
            "ranked); black bar: median among those holding it; below each element, how many "
            "do.",
        ),
    )
    body = (
        figs
        + f"<h2>Top {min(SCREEN_ROWS, table.height)} of {table.height:,} ranked</h2>"
        + screen_table_html(table.head(SCREEN_ROWS), ranked_tasks)
    )
    subtitle = f"{table.height:,} ranked of {candidates:,} candidates screened"
    return _page("Screen: top candidates", subtitle, header, body)


def write_html(path: str | Path, text: str) -> Path:
    """Write a page atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_lab_sheet(
    plan: pl.DataFrame,
    candidates: pl.DataFrame,
    csv_path: str | Path,
    html_path: str | Path | None,
    objective_tasks: Sequence[str],
    axes: Sequence[str],
    header: Sequence[str],
) -> list[Path]:
    """Write the plan as CSV and (when ``html_path``) its page, atomically."""
    written = [atomic_write(csv_path, csv_safe(plan).write_csv)]
    if html_path is not None:
        written.append(
            write_html(html_path, plan_html(plan, candidates, objective_tasks, axes, header))
        )
    return written
