"""Parse many composition texts at once: polars string expressions for the common notations,
the full parser (:func:`hea_screen.parse`) for every other row.

The fast path takes a text made only of ``Symbol[amount]`` tokens separated by nothing or by
spaces, with plain decimal amounts (``Co1 Cr1 Fe1 Ni1``, ``CoCrFeNi``, ``Al0.5CoCrFeNi``,
``Co20Cr20Fe20Mn20Ni20``; at most 6 digits before and 6 after the point, at most
:data:`MAX_TOKENS` tokens). It reproduces :func:`~hea_screen.composition.parse` exactly:
each amount becomes an integer over the row's common power of ten (``0.5`` and ``20`` over
10 are ``5`` and ``200``), a repeated element is summed, and the shares are rounded to
millionths by the same largest-remainder rule (floors, then one unit each to the largest
remainders, ties to the alphabetically first element) in int64 arithmetic, which cannot
overflow within these limits. A row the fast path cannot take (groups, exponents, another
notation, an unknown symbol, a zero amount, a share below the resolution) goes to the full
parser, so results and error messages are the full parser's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from hea_screen.composition import PERIODIC_TABLE, SCALE, parse
from hea_screen.errors import CompositionError

#: Most ``Symbol[amount]`` tokens in a row of the fast path (bounds the int64 arithmetic).
MAX_TOKENS = 24

_TOKEN = r"[A-Z][a-z]?(?:[0-9]{1,6}(?:\.[0-9]{1,6})?)?"
_SIMPLE = rf"^ *(?:{_TOKEN} *)+$"


@dataclass(frozen=True)
class BulkParsed:
    """Parsed rows of a column of texts.

    ``elements`` is the sorted palette of the good rows, ``micro`` their (rows, palette)
    millionths in input order, ``rows`` their positions in the input (counting from 0), and
    ``bad`` a frame ``row, text, reason`` of the rows the full parser refused.
    """

    elements: tuple[str, ...]
    micro: np.ndarray
    rows: np.ndarray
    bad: pl.DataFrame


def parse_texts(texts: Sequence[str | None] | pl.Series) -> BulkParsed:
    """Parse every text (see module docstring); bad rows are collected, never raised."""
    series = pl.Series("text", texts, dtype=pl.Utf8)
    frame = series.to_frame().with_row_index("row")
    simple = frame.filter(pl.col("text").str.contains(_SIMPLE).fill_null(False))
    fast, rejected = _fast(simple)
    others = frame.filter(~pl.col("row").is_in(simple["row"].implode()) | pl.col("row").is_in(
        rejected.implode()
    ))
    slow_rows, slow_amounts, bad = _slow(others)
    symbols = sorted(set(fast["symbol"].unique().to_list()) | {s for a in slow_amounts for s in a})
    column = {el: j for j, el in enumerate(symbols)}
    good = np.sort(np.concatenate([fast["row"].unique().to_numpy(), slow_rows]).astype(np.int64))
    position = np.full(len(series), -1, dtype=np.int64)
    position[good] = np.arange(len(good))
    micro = np.zeros((len(good), len(symbols)), dtype=np.int32)
    if fast.height:
        cols = fast["symbol"].replace_strict(column, return_dtype=pl.Int64).to_numpy()
        micro[position[fast["row"].to_numpy()], cols] = fast["micro"].to_numpy()
    for row, amounts in zip(slow_rows, slow_amounts):
        for el, m in amounts.items():
            micro[position[row], column[el]] = m
    return BulkParsed(tuple(symbols), micro, good, bad)


def _fast(simple: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """``row, symbol, micro`` of the rows the fast path takes, and the rows it gives up."""
    tokens = (
        simple.lazy()
        .select("row", pl.col("text").str.extract_all(_TOKEN).alias("token"))
        .filter(pl.col("token").list.len() <= MAX_TOKENS)
        .explode("token")
        .select(
            "row",
            pl.col("token").str.extract(r"^([A-Z][a-z]?)").alias("symbol"),
            pl.col("token").str.extract(r"^[A-Z][a-z]?([0-9]*)").alias("whole"),
            pl.col("token").str.extract(r"\.([0-9]*)$").fill_null("").alias("frac"),
        )
        .with_columns(pl.col("frac").str.len_chars().max().over("row").alias("digits"))
        .with_columns(
            (
                pl.when(pl.col("whole") == "")
                .then(pl.lit(1, dtype=pl.Int64))
                .otherwise(pl.col("whole").cast(pl.Int64))
                * pl.lit(10, dtype=pl.Int64).pow(pl.col("digits"))
                + pl.col("frac").str.pad_end(6, "0").str.slice(0, 6).cast(pl.Int64)
                // pl.lit(10, dtype=pl.Int64).pow(6 - pl.col("digits"))
            ).alias("amount")
        )
        .group_by("row", "symbol")
        .agg(pl.col("amount").sum())
        .collect()
    )
    whole = tokens.with_columns(pl.col("amount").sum().over("row").alias("total")).with_columns(
        (pl.col("amount") * SCALE // pl.col("total")).alias("floor")
    )
    whole = whole.with_columns(
        (pl.col("amount") * SCALE - pl.col("floor") * pl.col("total")).alias("remainder"),
        (SCALE - pl.col("floor").sum().over("row")).alias("missing"),
    ).sort(["row", "remainder", "symbol"], descending=[False, True, False])
    whole = whole.with_columns(
        (
            pl.col("floor")
            + (pl.int_range(pl.len()).over("row") < pl.col("missing")).cast(pl.Int64)
        ).alias("micro")
    )
    unknown = ~pl.col("symbol").is_in(sorted(PERIODIC_TABLE))
    refused = (pl.col("amount") <= 0) | (pl.col("micro") <= 0) | unknown
    give_up = whole.filter(refused.any().over("row"))["row"].unique()
    kept_rows = tokens["row"].unique()
    dropped = simple.filter(~pl.col("row").is_in(kept_rows.implode()))["row"]
    fast = whole.filter(~pl.col("row").is_in(give_up.implode())).select("row", "symbol", "micro")
    return fast, pl.concat([give_up, dropped])


def _slow(rows: pl.DataFrame) -> tuple[np.ndarray, list[dict[str, int]], pl.DataFrame]:
    """The full parser on ``rows`` (``row, text``): good rows, their millionths, bad rows."""
    good: list[int] = []
    amounts: list[dict[str, int]] = []
    bad: dict[str, list] = {"row": [], "text": [], "reason": []}
    for row, text in rows.iter_rows():
        try:
            comp = parse(text)
        except CompositionError as error:
            bad["row"].append(row)
            bad["text"].append(text)
            bad["reason"].append(str(error))
            continue
        good.append(row)
        amounts.append(dict(zip(comp.elements, comp.micro)))
    frame = pl.DataFrame(bad, schema={"row": pl.Int64, "text": pl.Utf8, "reason": pl.Utf8})
    return np.asarray(good, dtype=np.int64), amounts, frame.sort("row")
