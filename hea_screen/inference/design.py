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
==============================  =============================================================

The matrix is float32, what ONNX Runtime's tree-ensemble operators read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from hea_screen.compositions.features import FEATURE_NAMES
from hea_screen.conditions import Condition, Processing
from hea_screen.errors import UserInputError

CONDITION_COLUMNS: tuple[str, ...] = (
    "temperature_c",
    *(f"processing_{p.value}" for p in Processing),
)

#: Column names of :func:`design_matrix`, in order.
DESIGN_COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, *CONDITION_COLUMNS)


def design_matrix(
    features: pl.DataFrame,
    temperature_c: np.ndarray | float,
    processing: Sequence[Processing | str] | Processing,
) -> np.ndarray:
    """(rows, :data:`DESIGN_COLUMNS`) float32 matrix.

    ``features`` is a :func:`~hea_screen.featurize` frame; ``temperature_c`` and
    ``processing`` are one value for every row or one per row.
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
    return np.hstack([feats, temps[:, None], onehot])


def condition_matrix(features: pl.DataFrame, condition: Condition) -> np.ndarray:
    """:func:`design_matrix` of every row at one :class:`Condition` (the screen's case)."""
    return design_matrix(features, condition.temperature_c, condition.processing)
