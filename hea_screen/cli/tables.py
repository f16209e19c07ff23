"""Tables printed to the terminal: as wide as the terminal, values rounded with units.

The width is ``COLUMNS`` when set, else the terminal's (:func:`shutil.get_terminal_size`),
80 when neither is known. Columns are kept by priority (identity first: rank, composition;
then the predictions; then the rest) while they fit; a long text column (a composition) is
cut with ``…`` before a column is dropped; a footnote names what was left out and where the
whole table is (``--out``). Headers and values come from
:mod:`hea_screen.screening.columns`, so columns other issues add (tasks, flags) appear
here without a change.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from hea_screen.conditions import TASKS_BY_NAME
from hea_screen.screening import columns as col

GAP = "  "
MIN_WIDTH = 40
HEADER_WRAP = 14


@dataclass(frozen=True)
class Column:
    """One printed column: header lines, cells, priority (lower is kept first), alignment,
    and the width a long cell may be cut to (``None``: never cut)."""

    header: str
    cells: Sequence[str]
    priority: int = 0
    right: bool = False
    cut_to: int | None = None

    @property
    def lines(self) -> list[str]:
        """Header lines: each ``\n``-separated part wrapped at the cells' width (at least
        :data:`HEADER_WRAP`)."""
        width = max([HEADER_WRAP] + [len(c) for c in self.cells])
        return [line for part in self.header.split("\n") for line in _wrap(part, width)]

    @property
    def natural(self) -> int:
        return max([len(x) for x in self.lines] + [len(c) for c in self.cells])

    @property
    def least(self) -> int:
        if self.cut_to is None:
            return self.natural
        return min(self.natural, max(self.cut_to, *(len(x) for x in self.lines)))


def terminal_width() -> int:
    """``COLUMNS``, else the terminal's width (80 if unknown), at least :data:`MIN_WIDTH`."""
    return max(shutil.get_terminal_size((80, 24)).columns, MIN_WIDTH)


def _fit(columns: Sequence[Column], width: int) -> tuple[list[int], list[int]]:
    """Indices of the columns kept (in table order) and their widths: priority-0 columns
    always (cut where a cell may be cut, if they alone are too wide), the others in
    priority order while they fit whole."""
    kept = [i for i, c in enumerate(columns) if c.priority == 0]
    for i in sorted(range(len(columns)), key=lambda i: (columns[i].priority, i)):
        if i in kept:
            continue
        trial = sorted([*kept, i])
        if sum(columns[j].natural for j in trial) + len(GAP) * (len(trial) - 1) <= width:
            kept = trial
    widths = [columns[j].natural for j in kept]
    excess = sum(widths) + len(GAP) * (len(kept) - 1) - width
    for n, j in enumerate(kept):
        if excess <= 0:
            break
        give = min(excess, widths[n] - columns[j].least)
        widths[n] -= give
        excess -= give
    return kept, widths


def _cell(text: str, width: int, right: bool) -> str:
    text = " ".join(text.split())  # a user's note may hold line breaks or tabs
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.rjust(width) if right else text.ljust(width)


def render(columns: Sequence[Column], width: int | None = None, whole: str = "") -> str:
    """The table as text no line of which is wider than ``width`` (default: the terminal);
    ``whole`` says where the full table is, for the footnote on left-out columns."""
    width = terminal_width() if width is None else width
    kept, widths = _fit(columns, width)
    heads = {j: columns[j].lines for j in kept}
    depth = max(len(h) for h in heads.values())
    out = []
    for k in range(depth):
        line = []
        for j, w in zip(kept, widths):
            lines = heads[j]
            text = lines[k - (depth - len(lines))] if k >= depth - len(lines) else ""
            line.append(_cell(text, w, columns[j].right))
        out.append(GAP.join(line).rstrip())
    out.append(GAP.join("─" * w for w in widths))
    rows = len(columns[0].cells) if columns else 0
    for r in range(rows):
        line = [_cell(columns[j].cells[r], w, columns[j].right) for j, w in zip(kept, widths)]
        out.append(GAP.join(line).rstrip())
    left = [columns[j].header.replace("\n", " ") for j in range(len(columns)) if j not in kept]
    if left:
        note = f"not shown at width {width}: {'; '.join(left)}"
        out += _wrap(note + (f" ({whole})" if whole else ""), width)
    return "\n".join(out)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return [x[:width] for x in lines]


def task_columns(frame: pl.DataFrame, tasks: Sequence[str], priority: int) -> list[Column]:
    """Each task as ``mean [lo–hi]`` under ``tensile UTS, MPa`` / ``mean [90 %]``."""
    out = []
    for name in tasks:
        task = TASKS_BY_NAME[name]
        if f"{name}_mean" not in frame.columns:
            continue
        cells = [
            col.interval(m, lo, hi, task.unit)
            for m, lo, hi in frame.select(f"{name}_{s}" for s in ("mean", "lo", "hi")).iter_rows()
        ]
        header = f"{col.short_name(task)}, {task.unit}\nmean [90 %]"
        out.append(Column(header, cells, priority, right=True))
    return out


def composition_column(frame: pl.DataFrame, priority: int = 0) -> Column:
    cells = [col.at_pct(c) for c in frame["composition"]]
    return Column("composition\nat.%", cells, priority, cut_to=18)


def scalar_column(frame: pl.DataFrame, name: str, priority: int) -> Column:
    cells = [col.scalar(name, v) for v in frame[name]]
    return Column(col.scalar_header(name), cells, priority, right=True)


def nearest_columns(frame: pl.DataFrame, tasks: Sequence[str], priority: int) -> list[Column]:
    """Per task: the nearest training datum's value and L1 distance, ``721 at 0.13``, among
    the alloys measured at the stated route and temperature band (``none at powder, hot``
    when no alloy was)."""
    out = []
    for name in tasks:
        value, dist = f"{name}_nearest_measured", f"{name}_nearest_distance"
        if value not in frame.columns or dist not in frame.columns:
            continue
        task = TASKS_BY_NAME[name]
        where = f"{name}_nearest_condition"
        conditions = frame[where] if where in frame.columns else [None] * frame.height
        cells = [
            f"{col.quantity(v, task.unit)} at {col.number(d, 2)}"
            if v is not None or c is None
            else c.replace("none measured at", "none at")
            for (v, d), c in zip(frame.select(value, dist).iter_rows(), conditions)
        ]
        header = f"nearest datum\n{col.short_name(task)}, {task.unit} at L1"
        out.append(Column(header, cells, priority, right=True))
    return out


def flags_column(frame: pl.DataFrame, priority: int) -> list[Column]:
    """Phase screen and warning flags (``FCC, SS``), when the frame has any."""
    flags = col.flag_columns(frame)
    if not {"vec_phase", "solid_solution", *flags} & set(frame.columns):
        return []
    cells = [col.flags_text(row, flags) for row in frame.iter_rows(named=True)]
    return [Column("phase rules\nand flags", cells, priority)]


def ranked_table(
    frame: pl.DataFrame, tasks: Sequence[str], rows: int, ids: Sequence[str] = ()
) -> list[Column]:
    """A screen's or a prediction's printed columns: ``ids`` (e.g. ``row`` and the user's
    own columns), rank, composition, score, Pareto front, tasks, nearest data, flags."""
    frame = frame.head(rows)
    out = [Column(c, [col.scalar(c, v) for v in frame[c]], 1) for c in ids]
    if "rank" in frame.columns:
        out.append(Column("rank", [str(v) for v in frame["rank"]], 0, right=True))
    out.append(composition_column(frame))
    out += task_columns(frame, tasks, 2)
    if "score" in frame.columns:
        out.append(scalar_column(frame, "score", 3))
    if "pareto" in frame.columns:
        out.append(Column("Pareto\nfront", ["yes" if v else "" for v in frame["pareto"]], 4))
    out += nearest_columns(frame, tasks, 5)
    out += flags_column(frame, 6)
    return out


def plan_table(plan: pl.DataFrame, tasks: Sequence[str]) -> list[Column]:
    """A plan's printed columns: pick, composition, reason, expected gain per task, the
    predictions, distance to the nearest measured alloy, flags."""
    out = [
        Column("pick", [str(v) for v in plan["pick"]], 0, right=True),
        composition_column(plan),
        Column("reason", list(plan["reason"]), 1),
    ]
    out += task_columns(plan, tasks, 2)
    for name in tasks:
        gain = f"{name}_expected_gain"
        if gain in plan.columns:
            task = TASKS_BY_NAME[name]
            cells = [f"+{col.quantity(v, task.unit)}" if v is not None else "–" for v in plan[gain]]
            header = f"expected gain\n{col.short_name(task)}, {task.unit}"
            out.append(Column(header, cells, 3, right=True))
    out.append(scalar_column(plan, "distance_to_measured", 4))
    out += flags_column(plan, 5)
    return out


def movement_table(moved: pl.DataFrame, tasks: Sequence[str]) -> list[Column]:
    """``update``'s before -> after table: mean and 90 % interval width per task."""
    out = [composition_column(moved)]
    for n, name in enumerate(tasks):
        task = TASKS_BY_NAME[name]
        for what, label in (("mean", "mean"), ("width", "90 % width")):
            pairs = moved.select(f"{name}_{what}_before", f"{name}_{what}_after").iter_rows()
            cells = [
                f"{col.quantity(a, task.unit)} → {col.quantity(b, task.unit)}" for a, b in pairs
            ]
            header = f"{col.short_name(task)}, {task.unit}\n{label}"
            out.append(Column(header, cells, 1 + n, right=True))
    return out
