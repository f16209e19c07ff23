"""The MPEA database as measurements: one row per (alloy, task, condition, value).

:func:`measurements` turns each MPEA row (a test of one alloy: test type, temperature,
processing, and any of YS, UTS, elongation, HV, phase) into one row per measured task of
:mod:`hea_screen.conditions`:

==================  ==============================================================
column              meaning
==================  ==============================================================
``mpea_row``        row number in ``MPEA_dataset.csv`` (0-based, header excluded)
``composition``     the formula as written in MPEA
``canonical``       canonical composition text (:func:`hea_screen.parse`)
``task``            task name, e.g. ``uts_tension_mpa``
``temperature_c``   test temperature in °C (hardness and phase: 25)
``processing``      processing route (a missing route is ``OTHER``)
``grain_size_um``   mean grain size in µm where MPEA gives one (``grain size (μm)``),
                    else null: the state of the tested material, an input of the models
                    (:mod:`hea_screen.conditions`); a non-positive size is read as null
``value``           the measured value in the task's unit; for ``phase`` the index
                    into :data:`~hea_screen.conditions.PHASES`
==================  ==============================================================

A value measured in compression lands only in a compression task (``uts_compression_mpa``,
``ys_compression_mpa``, ``fracture_strain_compression_pct``), never in a tensile one. Rows
with a strength or strain but no test temperature are dropped (every MPEA strength row has
one). A hardness value is taken at room temperature (see :mod:`hea_screen.conditions`).

The paper's fine-tuning sets add nothing: all 158 UTS rows and the elongation rows are MPEA
rows of the same alloy and value (``tests/test_measurements.py`` counts them).
"""

from __future__ import annotations

import polars as pl

from hea_screen.compositions.composition import parse
from hea_screen.conditions import (
    PHASE,
    PHASES,
    REGRESSION_TASKS,
    ROOM_TEMPERATURE_C,
    Processing,
)
from hea_screen.datasets.sources import load_mpea

COLUMNS: tuple[str, ...] = (
    "mpea_row",
    "composition",
    "canonical",
    "task",
    "temperature_c",
    "processing",
    "grain_size_um",
    "value",
)


def measurements(mpea: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every MPEA measurement as one row per task (see module docstring), in file order."""
    mpea = load_mpea() if mpea is None else mpea
    base = mpea.with_row_index("mpea_row").with_columns(
        pl.col("processing").fill_null(Processing.OTHER.value),
        pl.when(pl.col("grain_size_um").cast(pl.Float64) > 0)
        .then(pl.col("grain_size_um").cast(pl.Float64))
        .alias("grain_size_um"),
    )
    texts = base["formula"].unique().to_list()
    canonical = {t: str(parse(t)) for t in texts}
    base = base.with_columns(
        pl.col("formula").replace_strict(canonical, return_dtype=pl.Utf8).alias("canonical")
    )
    parts = []
    for task in REGRESSION_TASKS:
        rows = base.filter(pl.col(task.mpea_column).is_not_null())
        if task.test_type is not None:
            rows = rows.filter(
                (pl.col("test_type") == task.test_type.mpea_code)
                & pl.col("test_temperature_c").is_not_null()
            )
            temperature = pl.col("test_temperature_c").cast(pl.Float64)
        else:
            temperature = pl.lit(ROOM_TEMPERATURE_C)
        parts.append(
            rows.select(
                "mpea_row",
                pl.col("formula").alias("composition"),
                "canonical",
                pl.lit(task.name).alias("task"),
                temperature.alias("temperature_c"),
                "processing",
                "grain_size_um",
                pl.col(task.mpea_column).cast(pl.Float64).alias("value"),
            )
        )
    phase_index = {p: float(i) for i, p in enumerate(PHASES)}
    parts.append(
        base.filter(pl.col("phase").is_in(PHASES)).select(
            "mpea_row",
            pl.col("formula").alias("composition"),
            "canonical",
            pl.lit(PHASE.name).alias("task"),
            pl.lit(ROOM_TEMPERATURE_C).alias("temperature_c"),
            "processing",
            "grain_size_um",
            pl.col("phase").replace_strict(phase_index, return_dtype=pl.Float64).alias("value"),
        )
    )
    out = pl.concat(parts).sort("mpea_row", "task")
    return out.select(COLUMNS)
