"""Model inputs of the tabular (tree-ensemble) members: features plus condition columns.

One row per measurement (training) or per candidate at the screen's condition (screening),
built by the same function in both flows so a tree model never sees a column in another
order or unit than it was trained on:

==============================  =============================================================
columns                         meaning
==============================  =============================================================
the 14 :data:`FEATURE_NAMES`    Table 1 features of the composition (:func:`featurize`)
``temperature_c``               test temperature, °C
``processing_<ROUTE>``          one-hot processing route, one column per
                                :class:`~hea_screen.conditions.Processing` member
``grain_inv_sqrt``              d^-1/2 of the mean grain size d in µm (µm^-1/2), the
                                Hall-Petch variable (σ = σ0 + k·d^-1/2; Hall 1951, Petch
                                1953); 0 where the grain size is not stated
``grain_log10``                 log10(d / 1 µm); 0 where not stated
``grain_missing``               1 where the grain size is not stated, else 0
==============================  =============================================================

A grain size not stated is a *missing indicator*, not a default size: over 10 grouped
partitions of MPEA's tensile rows the indicator beat a per-route default grain size on UTS,
YS and elongation (docs/results.md). Strength models are constrained to be monotonic in
:data:`GRAIN_MONOTONIC` (finer grains never predict a lower strength).

The matrix is float32, what ONNX Runtime's tree-ensemble operators read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from hea_screen.compositions.features import FEATURE_NAMES
from hea_screen.conditions import Condition, Processing
from hea_screen.errors import UserInputError

GRAIN_COLUMNS: tuple[str, ...] = ("grain_inv_sqrt", "grain_log10", "grain_missing")

CONDITION_COLUMNS: tuple[str, ...] = (
    "temperature_c",
    *(f"processing_{p.value}" for p in Processing),
    *GRAIN_COLUMNS,
)

#: Column names of :func:`design_matrix`, in order.
DESIGN_COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, *CONDITION_COLUMNS)

#: Monotonic direction of strength in each grain column (+1 rising, -1 falling; Hall-Petch):
#: strength rises with d^-1/2 and falls with log10 d.
GRAIN_MONOTONIC: dict[str, int] = {"grain_inv_sqrt": 1, "grain_log10": -1}


def monotonic_constraints() -> list[int]:
    """Per :data:`DESIGN_COLUMNS`, the monotonic constraint of a strength model (scikit-learn's
    ``monotonic_cst``): :data:`GRAIN_MONOTONIC` on the grain columns, 0 elsewhere."""
    return [GRAIN_MONOTONIC.get(c, 0) for c in DESIGN_COLUMNS]


def grain_columns(grain_size_um: np.ndarray | float | None, n: int) -> np.ndarray:
    """(n, 3) float32 :data:`GRAIN_COLUMNS` of grain sizes in µm (NaN or ``None``: not
    stated). Sizes are checked by :func:`hea_screen.conditions.check_grain_size` upstream."""
    d = np.broadcast_to(
        np.asarray(np.nan if grain_size_um is None else grain_size_um, dtype=np.float64), (n,)
    )
    missing = ~np.isfinite(d)
    safe = np.where(missing, 1.0, d)
    return np.column_stack(
        [np.where(missing, 0.0, safe**-0.5), np.where(missing, 0.0, np.log10(safe)), missing]
    ).astype(np.float32)


def design_matrix(
    features: pl.DataFrame,
    temperature_c: np.ndarray | float,
    processing: Sequence[Processing | str] | Processing,
    grain_size_um: np.ndarray | float | None = None,
) -> np.ndarray:
    """(rows, :data:`DESIGN_COLUMNS`) float32 matrix.

    ``features`` is a :func:`~hea_screen.featurize` frame; ``temperature_c``,
    ``processing`` and ``grain_size_um`` (µm, NaN or ``None`` where not stated) are one
    value for every row or one per row.
    """
    n = features.height
    feats = features.select(FEATURE_NAMES).to_numpy().astype(np.float32, copy=False)
    temps = np.broadcast_to(np.asarray(temperature_c, dtype=np.float32), (n,))
    routes = list(Processing)
    if isinstance(processing, (Processing, str)):
        codes = np.full(n, routes.index(Processing.parse(processing)))
    else:
        if len(processing) != n:
            raise UserInputError(f"{len(processing)} processing routes for {n} rows")
        lookup = {p.value: i for i, p in enumerate(routes)}
        codes = np.array([lookup[Processing.parse(p).value] for p in processing], dtype=np.int64)
    onehot = np.zeros((n, len(routes)), dtype=np.float32)
    onehot[np.arange(n), codes] = 1.0
    return np.hstack([feats, temps[:, None], onehot, grain_columns(grain_size_um, n)])


def condition_matrix(features: pl.DataFrame, condition: Condition) -> np.ndarray:
    """:func:`design_matrix` of every row at one :class:`Condition` (the screen's case)."""
    return design_matrix(
        features, condition.temperature_c, condition.processing, condition.grain_size_um
    )
