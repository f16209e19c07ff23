"""``RUN/cv_results.csv``: one row per model, target, fold and selection protocol.

Columns :data:`CV_COLUMNS`; ``mse``, ``mae`` and ``r2`` are computed on targets
standardized with the training-part scaler of the fold. ``protocol`` is ``honest``
(selection on the validation part) or ``paper-leaky`` (selection on the test fold, only to
measure the inflation of the paper's protocol).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pretrain.atomic import write_csv_atomic

CV_COLUMNS: tuple[str, ...] = (
    "experiment", "model", "target", "fold", "protocol", "mse", "mae", "r2",
)  # fmt: skip
CV_SCHEMA: dict[str, type[pl.DataType]] = {
    "experiment": pl.Utf8, "model": pl.Utf8, "target": pl.Utf8, "fold": pl.Int64,
    "protocol": pl.Utf8, "mse": pl.Float64, "mae": pl.Float64, "r2": pl.Float64,
}  # fmt: skip
HONEST = "honest"
LEAKY = "paper-leaky"


def read_cv_results(path: str | Path) -> pl.DataFrame:
    """The results file, or an empty frame with its columns."""
    path = Path(path)
    if not path.exists():
        return pl.DataFrame(schema=CV_SCHEMA)
    return pl.read_csv(path, schema_overrides=CV_SCHEMA).select(CV_COLUMNS)


def merge_cv_results(path: str | Path, rows: pl.DataFrame) -> pl.DataFrame:
    """Write ``rows`` into the file, replacing earlier rows of the same experiment, model,
    target and protocol (a rerun does not duplicate); returns the whole file."""
    rows = rows.select(CV_COLUMNS).cast(CV_SCHEMA)
    keys = ["experiment", "model", "target", "protocol"]
    old = read_cv_results(path).join(rows.select(keys).unique(), on=keys, how="anti")
    merged = pl.concat([old, rows])
    write_csv_atomic(merged, path)
    return merged
