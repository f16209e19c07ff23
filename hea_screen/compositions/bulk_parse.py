"""Parse many composition texts at once: polars string expressions for the common notations,
the full parser (:func:`hea_screen.parse`) for every other row.

The fast path takes a text made only of ``Symbol[amount]`` tokens separated by nothing or by
spaces, with plain decimal amounts (``Co1 Cr1 Fe1 Ni1``, ``CoCrFeNi``, ``Al0.5CoCrFeNi``,
``Co20Cr20Fe20Mn20Ni20``; at most 6 digits before and 6 after the point, at most
:data:`MAX_TOKENS` tokens). It reproduces :func:`~hea_screen.compositions.composition.parse`
exactly:
each amount becomes an integer over the row's common power of ten (``0.5`` and ``20`` over
10 are ``5`` and ``200``), and the shares are rounded to
millionths by the same largest-remainder rule (floors, then one unit each to the largest
remainders, ties to the alphabetically first element) in int64 arithmetic, which cannot
overflow within these limits. A row the fast path cannot take (groups, exponents, another
notation, an unknown symbol, a repeated element, a zero amount, a share below the
resolution) goes to the full
parser, so results and error messages are the full parser's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from hea_screen.compositions.composition import PERIODIC_TABLE, SCALE, parse
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
    simple = series.str.contains(_SIMPLE).fill_null(False).to_numpy()
    fast_rows, symbols, fast_micro, fast_ok = _fast(series.filter(simple), np.flatnonzero(simple))
    slow = ~simple
    slow[fast_rows[~fast_ok]] = True
    slow_rows, slow_amounts, bad = _slow(np.flatnonzero(slow), series)
    palette = sorted(set(symbols) | {el for a in slow_amounts for el in a})
    column = {el: j for j, el in enumerate(palette)}
    good = np.sort(np.concatenate([fast_rows[fast_ok], slow_rows]))
    position = np.full(len(series), -1, dtype=np.int64)
    position[good] = np.arange(len(good))
    micro = np.zeros((len(good), len(palette)), dtype=np.int32)
    if len(fast_micro):
        remap = np.array([column[el] for el in symbols], dtype=np.int64)
        token_rows, codes, values = fast_micro
        micro[position[token_rows], remap[codes]] = values
    for row, amounts in zip(slow_rows, slow_amounts):
        for el, m in amounts.items():
            micro[position[row], column[el]] = m
    return BulkParsed(tuple(palette), micro, good, bad)


def _fast(
    texts: pl.Series, rows: np.ndarray
) -> tuple[np.ndarray, list[str], tuple[np.ndarray, ...], np.ndarray]:
    """The fast path on ``texts`` (input rows ``rows``): ``rows``, the symbols its codes
    index (alphabetical), ``(token rows, symbol codes, millionths)`` of the rows it takes,
    and per row whether it took it (the others go to the full parser)."""
    lists = texts.str.extract_all(_TOKEN)
    lengths = lists.list.len().to_numpy().astype(np.int64)
    parts = lists.explode().str.extract_groups(r"^([A-Z][a-z]?)([0-9]*)(?:\.([0-9]*))?$")
    symbol = parts.struct.field("1")
    whole = parts.struct.field("2")
    frac = parts.struct.field("3").fill_null("")
    codes = symbol.rank("dense").cast(pl.Int64).to_numpy() - 1
    names = symbol.unique().sort().to_list()
    known = symbol.is_in(sorted(PERIODIC_TABLE)).to_numpy()
    whole_int = whole.replace("", "1").cast(pl.Int64).to_numpy()
    digits = frac.str.len_chars().cast(pl.Int64).to_numpy()
    frac_int = frac.str.pad_end(6, "0").cast(pl.Int64).to_numpy()
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    owner = np.repeat(np.arange(len(rows)), lengths)
    ok = (lengths > 0) & (lengths <= MAX_TOKENS)
    if not len(owner):
        return rows, names, (), ok
    places = np.maximum.reduceat(digits, starts)[owner]
    amount = whole_int * 10**places + frac_int // 10 ** (6 - places)
    # a repeated symbol: sum per (row, symbol) is the full parser's rule; rare, so those
    # rows go to it instead
    pair = np.sort(owner * 128 + codes)  # a symbol code is below 118
    repeated = pair[1:][pair[1:] == pair[:-1]] // 128
    bad_token = ~known | (amount <= 0)
    total = np.maximum(np.add.reduceat(amount, starts), 1)[owner]  # 0: a bad row anyway
    floor = amount * SCALE // total
    remainder = amount * SCALE - floor * total
    missing = SCALE - np.add.reduceat(floor, starts)[owner]
    order = (
        pl.DataFrame({"owner": owner, "remainder": remainder, "code": codes})
        .select(pl.arg_sort_by(["owner", "remainder", "code"], descending=[False, True, False]))
        .to_series()
        .to_numpy()
    )
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - starts[owner[order]]
    micro = floor + (rank < missing)
    bad_token |= micro <= 0
    bad_rows = np.zeros(len(rows), dtype=bool)
    bad_rows[owner[bad_token]] = True
    bad_rows[repeated] = True
    ok &= ~bad_rows
    take = ok[owner]
    return rows, names, (rows[owner[take]], codes[take], micro[take]), ok


def _slow(
    rows: np.ndarray, texts: pl.Series
) -> tuple[np.ndarray, list[dict[str, int]], pl.DataFrame]:
    """The full parser on ``texts[rows]``: good rows, their millionths, bad rows."""
    good: list[int] = []
    amounts: list[dict[str, int]] = []
    bad: dict[str, list] = {"row": [], "text": [], "reason": []}
    seen: dict[str | None, dict[str, int] | str] = {}  # a repeated text is parsed once
    for row, text in zip(rows.tolist(), texts.gather(rows).to_list()):
        if text not in seen:
            try:
                comp = parse(text)  # type: ignore[arg-type]
                seen[text] = dict(zip(comp.elements, comp.micro))
            except CompositionError as error:
                seen[text] = str(error)
        result = seen[text]
        if isinstance(result, str):
            bad["row"].append(row)
            bad["text"].append(text)
            bad["reason"].append(result)
        else:
            good.append(row)
            amounts.append(result)
    frame = pl.DataFrame(bad, schema={"row": pl.Int64, "text": pl.Utf8, "reason": pl.Utf8})
    return np.asarray(good, dtype=np.int64), amounts, frame.sort("row")
