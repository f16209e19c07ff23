"""Score a user's own list of compositions: ``hea-screen predict FILE``.

The file is a CSV or Parquet table (the compositions in the column ``--column``; default
``composition``, or the only column) or any other file read as text, one composition per
line. Rows are numbered from 1: the line number in a text file, the data row (header not
counted) in a table. Texts are parsed in bulk (:mod:`hea_screen.compositions.bulk_parse`); a row is
bad
when it does not parse or holds an element (or element pair) without property data. The
output has the columns of a screen (:func:`hea_screen.screening.engine.result_columns`) after
``row``,
at the stated condition, every row ranked (``rank``, ``pareto`` on the front of the file's
rows), in input or rank order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from hea_screen.compositions.bulk_parse import parse_texts
from hea_screen.compositions.elements import mixing_matrix, supported_elements
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import UserInputError
from hea_screen.screening.engine import decorate
from hea_screen.screening.model_ref import ModelRef, predicted_tasks, predictor_for
from hea_screen.screening.ranking import (
    FRONT_X,
    FRONT_Y,
    Ranking,
    Reference,
    order,
    pareto_front,
    score,
)

ORDERS: tuple[str, ...] = ("input", "ranked")

#: Columns of a bad-rows file.
BAD_COLUMNS: tuple[str, ...] = ("row", "text", "reason")


@dataclass(frozen=True)
class Inputs:
    """The parsed rows of a file: their table and row numbers, and the bad rows."""

    table: CompositionTable
    rows: np.ndarray
    bad: pl.DataFrame


def read_texts(path: str | Path, column: str | None = None) -> pl.Series:
    """The composition texts of ``path`` (see module docstring), one per row."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"input {str(path)!r} is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        if column is not None:
            raise UserInputError(
                f"--column {column!r}: {str(path)!r} is not a CSV or Parquet table"
            )
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise UserInputError(f"input {str(path)!r} is not UTF-8 text: {exc}") from None
        return pl.Series("composition", lines, dtype=pl.Utf8)
    try:
        frame = pl.read_csv(path, infer_schema=False) if suffix == ".csv" else pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UserInputError(f"cannot read {str(path)!r} as {suffix[1:]}: {exc}") from None
    return _column(frame, column, path).cast(pl.Utf8)


def _column(frame: pl.DataFrame, column: str | None, path: Path) -> pl.Series:
    if column is None:
        column = "composition" if "composition" in frame.columns or frame.width != 1 else None
        column = column or frame.columns[0]
    if column not in frame.columns:
        raise UserInputError(
            f"{str(path)!r} has no column {column!r}: its columns are "
            f"{', '.join(frame.columns)} (choose one with --column)"
        )
    return frame[column]


def parse_inputs(texts: pl.Series) -> Inputs:
    """Parse ``texts``; rows that do not parse or lack element data are bad (row from 1)."""
    parsed = parse_texts(texts)
    table = CompositionTable(parsed.elements, parsed.micro)
    reasons = _element_reasons(table)
    unsupported = reasons != ""
    bad = pl.concat(
        [
            parsed.bad.with_columns(pl.col("row") + 1),
            pl.DataFrame(
                {
                    "row": parsed.rows[unsupported] + 1,
                    "text": texts.gather(parsed.rows[unsupported]),
                    "reason": reasons[unsupported],
                },
                schema={"row": pl.Int64, "text": pl.Utf8, "reason": pl.Utf8},
            ),
        ]
    ).sort("row")
    good = np.flatnonzero(~unsupported)
    table = table.take(good)
    used = table.micro.any(axis=0)
    table = CompositionTable(
        tuple(el for el, u in zip(table.elements, used) if u), table.micro[:, used]
    )
    return Inputs(table, parsed.rows[good] + 1, bad)


def _element_reasons(table: CompositionTable) -> np.ndarray:
    """Per row, why its features cannot be computed ("" where they can)."""
    supported = set(supported_elements())
    reasons = np.full(len(table), "", dtype=object)
    present = table.micro > 0
    known = [el for el in table.elements if el in supported]
    for j, el in enumerate(table.elements):
        if el not in supported:
            reasons[present[:, j] & (reasons == "")] = (
                f"no property data for {el}: supported elements are {', '.join(sorted(supported))}"
            )
    dh = mixing_matrix(known)
    index = {el: table.elements.index(el) for el in known}
    for a in range(len(known)):
        for b in range(a + 1, len(known)):
            if np.isnan(dh[a, b]):
                both = present[:, index[known[a]]] & present[:, index[known[b]]]
                reasons[both & (reasons == "")] = (
                    f"no mixing enthalpy for {known[a]}-{known[b]} in Takeuchi & Inoue (2005)"
                )
    return reasons.astype(str)


def predict_rows(
    inputs: Inputs,
    model: ModelRef,
    ranking: Ranking,
    reference: Reference,
    *,
    order_by: str = "input",
    ingot_mass_g: float = 50.0,
    model_sha256: str | None = None,
) -> pl.DataFrame:
    """Every fold model of the ranked tasks and phase on every row, in batches of the
    model's batch size; ``row`` first, then the columns of a screen."""
    if order_by not in ORDERS:
        raise UserInputError(f"order {order_by!r}: choose one of {', '.join(ORDERS)}")
    predictor = predictor_for(model)
    tasks = predicted_tasks(ranking, predictor.tasks)
    frames = []
    for start in range(0, len(inputs.table), model.batch_size):
        part = inputs.table.take(np.arange(start, min(start + model.batch_size, len(inputs.table))))
        frames.append(predictor.predict(part, ranking.condition, tasks))
    scored = score(pl.concat(frames), ranking, reference).with_columns(
        pl.Series("row", inputs.rows, dtype=pl.Int64)
    )
    front = pareto_front(scored)["row"]
    ranked = order(scored).with_columns(
        pl.int_range(1, scored.height + 1, dtype=pl.Int64).alias("rank"),
        pl.col("row").is_in(front.implode()).alias("pareto"),
    )
    table = decorate(ranked.drop(FRONT_X, FRONT_Y), ranking, ingot_mass_g, model_sha256)
    table = table.select("row", pl.exclude("row"))
    return table.sort("row") if order_by == "input" else table
