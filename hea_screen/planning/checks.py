"""Validation of the values planning reads from files: a screen's output given to ``plan``,
the lab's results given to ``update``, and the records of the measurement store.

A file is edited, truncated or simply not what it claims to be as easily as a flag is
mistyped, so every value read from one passes the checks the command line applies to its
own: the right type, finite, within the accepted range (:data:`LIMITS`) and, for a
prediction, ordered ``lo <= mean <= hi``. The first problem raises
:class:`~hea_screen.errors.UserInputError` naming the file, the row (counted from 0) and the
column, quoting at most the offending value.
"""

from __future__ import annotations

import math

import polars as pl

from hea_screen.compositions.phase_rules import PHASE_FLAG_COLUMNS
from hea_screen.conditions import TASKS_BY_NAME
from hea_screen.errors import UserInputError

#: Accepted range of each measured property (inclusive); beyond is absurd.
LIMITS: dict[str, tuple[float, float]] = {
    "uts": (1.0, 10000.0),
    "ys": (1.0, 10000.0),
    "elongation": (0.0, 300.0),
    "hardness": (1.0, 2500.0),
}

#: Accepted test temperatures, °C.
TEMPERATURE_RANGE_C: tuple[float, float] = (-273.15, 2500.0)

#: The dtype each phase-rule column of a screen's output must have.
_PHASE_FLAG_TYPES: dict[str, tuple[type[pl.DataType], ...]] = {
    "omega": (pl.Float64, pl.Float32),
    "delta_r": (pl.Float64, pl.Float32),
    "solid_solution": (pl.Boolean,),
    "vec": (pl.Float64, pl.Float32),
    "vec_phase": (pl.Utf8,),
    "brittle_risk": (pl.Boolean,),
    "sigma_risk": (pl.Boolean,),
    "laves_risk": (pl.Boolean,),
    "risk_flags": (pl.Utf8,),
}
assert set(_PHASE_FLAG_TYPES) == set(PHASE_FLAG_COLUMNS)


def check_text_column(frame: pl.DataFrame, column: str, where: str) -> None:
    """``frame[column]`` holds text (a Parquet list or number column is refused)."""
    dtype = frame.schema[column]
    if dtype != pl.Utf8:
        raise UserInputError(f"{where}: column {column!r} is of type {dtype}, not text")


def _first_bad(mask: pl.Series) -> int | None:
    hits = mask.fill_null(True).arg_true()
    return int(hits[0]) if len(hits) else None


def check_predictions(frame: pl.DataFrame, tasks: list[str] | tuple[str, ...], where: str) -> None:
    """The ``<task>_mean``, ``_lo`` and ``_hi`` columns of ``tasks`` (those present) are
    numbers, finite and ordered ``lo <= mean <= hi`` on every row; the phase-rule columns
    present have their types."""
    for task in tasks:
        present = [f"{task}_{s}" for s in ("mean", "lo", "hi") if f"{task}_{s}" in frame.columns]
        for name in present:
            if not frame.schema[name].is_numeric():
                raise UserInputError(
                    f"{where}: column {name!r} is of type {frame.schema[name]}, not a number"
                )
            row = _first_bad(~frame[name].cast(pl.Float64).is_finite())
            if row is not None:
                raise UserInputError(
                    f"{where}: row {row}: {name} {frame[name][row]!r} is not a finite number"
                )
        if len(present) < 3:
            continue
        lo, mean, hi = (frame[f"{task}_{s}"].cast(pl.Float64) for s in ("lo", "mean", "hi"))
        row = _first_bad(~((lo <= mean) & (mean <= hi)))
        if row is not None:
            raise UserInputError(
                f"{where}: row {row}: {task} interval [{lo[row]:g}, {hi[row]:g}] does not hold "
                f"its mean {mean[row]:g}: need {task}_lo <= _mean <= _hi (an edited file?)"
            )
    for name, kinds in _PHASE_FLAG_TYPES.items():
        if name in frame.columns and not isinstance(frame.schema[name], kinds):
            raise UserInputError(
                f"{where}: column {name!r} is of type {frame.schema[name]}, expected "
                f"{' or '.join(k.__name__ for k in kinds)}"
            )


def property_limits(task: str) -> tuple[float, float]:
    """The accepted range of a measured value of ``task`` (:data:`LIMITS`)."""
    return LIMITS[TASKS_BY_NAME[task].property]


def within(value: object, lo: float, hi: float) -> bool:
    """Whether ``value`` is a finite number within ``[lo, hi]`` (``None``: no)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and lo <= value <= hi
