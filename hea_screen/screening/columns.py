"""What output columns mean to a person: headers with units and rounded values.

The printed tables (:mod:`hea_screen.cli.tables`) and the HTML pages
(:mod:`hea_screen.planning.lab_sheet`) read a screen's, a prediction's or a plan's columns
through this module, so a column added upstream (a new task of
:mod:`hea_screen.conditions`, a new phase or physics flag) gets a header and a format here
once, not in each view:

- every regression task of :data:`hea_screen.conditions.TASKS` whose ``<task>_mean``,
  ``_lo`` and ``_hi`` a frame holds is shown as ``mean [lo–hi]`` in the task's unit under
  ``tensile UTS, MPa: mean [90 %]``;
- ``<task>_nearest_measured`` / ``_nearest_distance`` as ``721 at L1 0.13``;
- known scalar columns (:data:`SCALARS`) with their symbol, unit and digits;
- any other boolean column is a *flag*: :func:`flags_text` names those that are true
  (``solid_solution`` is the one flag whose *false* value is the warning).

Rounding: MPa and HV to whole numbers (the calibrated 90 % intervals are hundreds of MPa
wide, so a decimal would be noise), % to whole numbers above 10 and one decimal below,
dimensionless quantities to the digits given in :data:`SCALARS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from hea_screen.conditions import TASKS, Task

#: Columns that are flags but not warnings when true (shown as their own column).
NOT_WARNINGS: frozenset[str] = frozenset({"pareto", "solid_solution"})


@dataclass(frozen=True)
class Scalar:
    """A plain numeric column: human header, unit ('' for none), decimals."""

    header: str
    unit: str
    digits: int


#: Known scalar columns of screens, predictions and plans.
SCALARS: dict[str, Scalar] = {
    "score": Scalar("score", "", 2),
    "omega": Scalar("Ω", "", 1),
    "delta_r": Scalar("δ", "%", 1),
    "vec": Scalar("VEC", "e/atom", 2),
    "phase_fcc_prob": Scalar("P(FCC)", "", 2),
    "phase_bcc_prob": Scalar("P(BCC)", "", 2),
    "phase_other_prob": Scalar("P(other)", "", 2),
    "distance_to_measured": Scalar("L1 to nearest measured", "", 2),
    "distance_to_picks": Scalar("L1 to earlier picks", "", 2),
    "n_elements": Scalar("elements", "", 0),
}


#: Short names for narrow places (terminal headers), the test type being stated in the
#: condition line above every table; other tasks use :func:`task_name`.
SHORT_NAMES: dict[str, str] = {
    "uts_tension_mpa": "UTS",
    "uts_compression_mpa": "fracture strength",
    "ys_tension_mpa": "YS",
    "ys_compression_mpa": "YS",
    "elongation_tension_pct": "elongation",
    "fracture_strain_compression_pct": "fracture strain",
    "hardness_hv": "hardness",
}


def short_name(task: Task) -> str:
    """``UTS`` for tensile UTS (:data:`SHORT_NAMES`), else :func:`task_name`."""
    return SHORT_NAMES.get(task.name, task_name(task))


def task_name(task: Task) -> str:
    """``tensile UTS`` from the task's label ``tensile UTS (MPa)``."""
    return task.label.split(" (")[0]


def interval_header(task: Task, interval: str = "90 %") -> str:
    """``tensile UTS, MPa: mean [90 %]``."""
    return f"{task_name(task)}, {task.unit}: mean [{interval}]"


def tasks_in(frame: pl.DataFrame | Sequence[str]) -> list[Task]:
    """Regression tasks whose mean and interval ``frame`` (or a list of columns) holds, in
    the vocabulary's order."""
    columns = set(frame.columns if isinstance(frame, pl.DataFrame) else frame)
    return [
        t
        for t in TASKS
        if t.is_regression and {f"{t.name}_{s}" for s in ("mean", "lo", "hi")} <= columns
    ]


def digits_for(unit: str, value: float) -> int:
    """Decimals of a value in ``unit`` (module docstring)."""
    if unit == "%":
        return 1 if abs(value) < 10 else 0
    return 0


def number(value: object, digits: int = 0) -> str:
    """``1,233`` / ``0.13``; ``–`` for a missing or non-finite value."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else str(value)
    v = float(value)  # type: ignore[arg-type]
    if not math.isfinite(v):
        return "–"
    text = f"{v:,.{digits}f}"
    return "0" if text in ("-0", "-0.0") and digits == 0 else text


def quantity(value: object, unit: str) -> str:
    """A value in a task unit, rounded by :func:`digits_for`: ``591`` or ``6.5``."""
    if value is None:
        return "–"
    return number(value, digits_for(unit, float(value)))  # type: ignore[arg-type]


def interval(mean: object, lo: object, hi: object, unit: str) -> str:
    """``591 [0–1,233]``: the mean and its interval in the task's unit."""
    return f"{quantity(mean, unit)} [{quantity(lo, unit)}–{quantity(hi, unit)}]"


def scalar(column: str, value: object) -> str:
    """A known scalar column's value (:data:`SCALARS`), rounded."""
    spec = SCALARS.get(column)
    if isinstance(value, float) and spec is not None:
        return number(value, spec.digits)
    if isinstance(value, float):
        return f"{value:.3g}"
    return "–" if value is None else str(value)


def scalar_header(column: str) -> str:
    """``δ, %`` for a known scalar column, else the column name with spaces."""
    spec = SCALARS.get(column)
    if spec is None:
        return column.replace("_", " ")
    return f"{spec.header}, {spec.unit}" if spec.unit else spec.header


def at_pct(composition: str) -> str:
    """``Co30 Cr15 Fe30 Ni25`` (at.%, at most two decimals) from the canonical text
    ``Co0.3 Cr0.15 Fe0.3 Ni0.25``; another text is returned as it is."""
    parts = []
    for part in str(composition).split():
        match = re.fullmatch(r"([A-Z][a-z]?)([0-9.]+)", part)
        if match is None:
            return str(composition)
        el, pct = match[1], float(match[2]) * 100
        parts.append(f"{el}{pct:.2f}".rstrip("0").rstrip("."))
    return " ".join(parts)


def flag_columns(frame: pl.DataFrame) -> list[str]:
    """Boolean columns that are warnings when true (every boolean column but
    :data:`NOT_WARNINGS`): the physics flags of a screen, whatever adds them."""
    return [c for c, dtype in frame.schema.items() if dtype == pl.Boolean and c not in NOT_WARNINGS]


def flags_text(row: dict[str, object], flags: Iterable[str]) -> str:
    """The phase screen and the true warning flags of one row: ``FCC, SS`` or
    ``BCC, not SS, brittle``."""
    out = []
    if row.get("vec_phase") is not None:
        out.append(str(row["vec_phase"]))
    if row.get("solid_solution") is not None:
        out.append("SS" if row["solid_solution"] else "not SS")
    out += [f.replace("_", " ") for f in flags if row.get(f)]
    return ", ".join(out)
