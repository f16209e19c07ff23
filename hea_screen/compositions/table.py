"""Many compositions at once: a dense matrix of atomic fractions over an element palette.

:class:`CompositionTable` is the vectorized twin of
:class:`~hea_screen.compositions.composition.Composition`.
Training builds one from parsed compositions; the screening enumerator builds one directly
from a fraction grid. Both then flow through the same ``featurize`` and tokenizer.

:class:`Slots` is its row-wise sparse view (the k non-zero entries of each row), which keeps
per-row work proportional to the elements of a row rather than to the palette: with 5 of 34
elements per row, the dense matrix is 85% zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np
import polars as pl

from hea_screen.compositions.bulk_parse import parse_texts
from hea_screen.compositions.composition import SCALE, Composition, parse
from hea_screen.errors import CompositionError, UserInputError

#: Texts parsed at a time by :meth:`CompositionTable.from_compositions`.
PARSE_ROWS = 65_536


@dataclass(frozen=True)
class CompositionTable:
    """``micro[r, j]`` is the atomic fraction of ``elements[j]`` in row ``r``, in millionths.

    Rows sum to exactly 1,000,000; ``elements`` is sorted alphabetically, so a row reads
    like the canonical text of its composition.
    """

    elements: tuple[str, ...]
    micro: np.ndarray

    def __post_init__(self) -> None:
        if list(self.elements) != sorted(set(self.elements)):
            raise CompositionError(f"palette {self.elements} must be sorted and without repeats")
        if self.micro.ndim != 2 or self.micro.shape[1] != len(self.elements):
            raise CompositionError(
                f"fraction matrix of shape {self.micro.shape} does not match "
                f"{len(self.elements)} elements"
            )
        if len(self.micro) and not np.all(self.micro.sum(axis=1) == SCALE):
            raise CompositionError(
                "every row of a CompositionTable must sum to 1,000,000 millionths"
            )

    @classmethod
    def from_compositions(cls, items: Iterable[Composition | str]) -> CompositionTable:
        """Parse (if needed) and stack compositions over the union of their elements.

        One pass over ``items`` that stops at the first bad one: its
        :class:`~hea_screen.errors.CompositionError` names the row (counting from 0) and
        the item. A text repeated in ``items`` is parsed once. A list, tuple or polars
        Series of texts is parsed in bulk (:mod:`hea_screen.compositions.bulk_parse`).
        """
        if isinstance(items, (list, tuple, pl.Series)) and all(isinstance(t, str) for t in items):
            return cls._from_texts(items)
        parsed: dict[str, Composition] = {}
        symbols: list[str] = []
        amounts: list[int] = []
        lengths: list[int] = []
        for row, item in enumerate(items):
            comp = parsed.get(item) if isinstance(item, str) else None
            if comp is None:
                comp = _parse_row(row, item)
                if isinstance(item, str):
                    parsed[item] = comp
            symbols.extend(comp.elements)
            amounts.extend(comp.micro)
            lengths.append(len(comp))
        elements = tuple(sorted(set(symbols)))
        column = {el: j for j, el in enumerate(elements)}
        micro = np.zeros((len(lengths), len(elements)), dtype=np.int32)
        rows = np.repeat(np.arange(len(lengths)), lengths)
        columns = np.fromiter((column[el] for el in symbols), dtype=np.intp, count=len(symbols))
        micro[rows, columns] = amounts
        return cls(elements, micro)

    @classmethod
    def _from_texts(cls, texts: Sequence[str] | pl.Series) -> CompositionTable:
        """:meth:`from_compositions` of texts, parsed in bulk by slices of
        :data:`PARSE_ROWS` (the bulk parser's working memory, about 1 kB a text, stays
        bounded); the first bad row is raised."""
        series = texts if isinstance(texts, pl.Series) else pl.Series(texts, dtype=pl.Utf8)
        parts = []
        for start in range(0, max(len(series), 1), PARSE_ROWS):
            parsed = parse_texts(series.slice(start, PARSE_ROWS))
            if parsed.bad.height:
                row, text, reason = parsed.bad.row(0)
                shown = repr(text) if len(repr(text)) <= 80 else repr(text)[:77] + "..."
                raise CompositionError(f"row {start + row}: {shown} — {reason}")
            parts.append(parsed)
        if len(parts) == 1:
            return cls(parts[0].elements, parts[0].micro)
        palette = tuple(sorted({el for part in parts for el in part.elements}))
        micro = np.zeros((len(series), len(palette)), dtype=np.int32)
        start = 0
        for part in parts:
            columns = [palette.index(el) for el in part.elements]
            micro[start : start + len(part.micro), columns] = part.micro
            start += len(part.micro)
        return cls(palette, micro)

    def __len__(self) -> int:
        return int(self.micro.shape[0])

    @property
    def fractions(self) -> np.ndarray:
        """Atomic fractions as float64, shape (rows, elements)."""
        return self.micro.astype(np.float64) / SCALE

    def take(self, rows: Sequence[int] | np.ndarray) -> CompositionTable:
        """The table restricted to ``rows`` (in that order)."""
        return CompositionTable(self.elements, self.micro[np.asarray(rows)])

    def composition(self, row: int) -> Composition:
        """Row ``row`` as a :class:`Composition`."""
        return Composition({el: int(m) for el, m in zip(self.elements, self.micro[row]) if m})

    def canonical_texts(self) -> pl.Series:
        """Canonical text of every row, identical to ``str(Composition)``, vectorized in polars."""
        return self.slots().texts()

    def slots(self) -> Slots:
        """The row-wise sparse view of the table (see :class:`Slots`), built by row blocks."""
        rows, palette = self.micro.shape
        counts = np.empty(rows, dtype=np.int32)

        def count(part: slice) -> None:
            np.add.reduce(self.micro[part] != 0, axis=1, dtype=np.int32, out=counts[part])

        for_each_block(rows, count)
        width = int(counts.max(initial=0))
        index = np.empty((width, rows), dtype=np.min_scalar_type(palette))
        micro = np.empty((width, rows), dtype=self.micro.dtype)

        def fill(part: slice) -> None:
            _fill_slots(self.micro[part], counts[part], index[:, part], micro[:, part])

        for_each_block(rows, fill)
        return Slots(self.elements, index, micro)


def _parse_row(row: int, item: object) -> Composition:
    """``parse(item)``, its error prefixed with the row number and the item."""
    try:
        return parse(item)  # type: ignore[arg-type]
    except CompositionError as error:
        shown = repr(item) if len(repr(item)) <= 80 else repr(item)[:77] + "..."
        raise CompositionError(f"row {row}: {shown} — {error}") from error


def to_table(compositions: object) -> CompositionTable:
    """A :class:`CompositionTable` from what ``featurize`` and ``Predictor.predict`` accept.

    Accepted: a :class:`CompositionTable`; one composition (a text or a
    :class:`~hea_screen.compositions.composition.Composition`), as one row; or an ordered iterable
    of
    them (list, tuple, polars Series, numpy array, generator), one row each. Refused with a
    :class:`~hea_screen.errors.UserInputError` naming the type: a mapping (a dict is not a
    list of compositions), a set (no row order), bytes, a DataFrame, and non-iterables.
    """
    if isinstance(compositions, CompositionTable):
        return compositions
    if isinstance(compositions, (str, Composition)):
        return CompositionTable.from_compositions([compositions])
    refusal = _refusal(compositions)
    if refusal is not None:
        shown = repr(compositions)
        shown = "" if "\n" in shown else " " + (shown if len(shown) <= 80 else shown[:77] + "...")
        raise UserInputError(
            f"compositions must be a list (or another ordered iterable) of composition texts "
            f"or Composition objects, one composition text, or a CompositionTable; "
            f"got {type(compositions).__name__}{shown}: {refusal}"
        )
    return CompositionTable.from_compositions(compositions)  # type: ignore[arg-type]


def _refusal(compositions: object) -> str | None:
    """Why ``compositions`` is not a sequence of compositions, or None if it may be one."""
    if isinstance(compositions, Mapping):
        return (
            "a mapping is not a list of compositions; for one composition from element "
            "amounts use Composition.from_amounts(...) and pass [that]"
        )
    if isinstance(compositions, AbstractSet):
        return "a set has no row order; pass a list"
    if isinstance(compositions, (bytes, bytearray, memoryview)):
        return "decode bytes to text first"
    if isinstance(compositions, pl.DataFrame):
        return "pass its composition column, e.g. frame['composition']"
    if not isinstance(compositions, Iterable):
        return "it is not iterable"
    return None


@dataclass(frozen=True)
class Slots:
    """Per row, the palette indices and fractions of its non-zero elements, slot-major.

    ``index[s, r]`` is a column of the palette ``elements`` (the smallest unsigned integer
    type that holds it) and ``micro[s, r]`` its fraction in millionths, for the ``width``
    slots s of row r (width = the most elements in a row); indices ascend within a row. A
    row with fewer elements is padded with slots of fraction 0 that point at elements absent
    from it, so every slot indexes a real element. Both arrays have shape (width, rows), so
    that one slot of every row is one contiguous array.
    """

    elements: tuple[str, ...]
    index: np.ndarray
    micro: np.ndarray

    @property
    def width(self) -> int:
        """Slots per row."""
        return int(self.index.shape[0])

    def texts(self) -> pl.Series:
        """Canonical text of every row, identical to ``str(Composition)``, vectorized in polars.

        A row concatenates, over its slots, two lookups: the element symbol (after a space
        unless it is the row's first element) and the fraction text (:func:`fraction_texts`);
        a padding slot reads the empty string from both.
        """
        if self.width == 0:
            return pl.Series("composition", [""] * self.index.shape[1], dtype=pl.Utf8)
        spaced = (" " + el for el in self.elements)
        symbols = pl.Series([*self.elements, *spaced, ""], dtype=pl.Utf8)
        present = self.micro > 0
        fraction = np.where(present, self.micro, SCALE + 1)
        frame = pl.DataFrame(
            {f"e{s}": symbol for s, symbol in enumerate(self._symbol_index(present))}
            | {f"m{s}": fraction[s] for s in range(self.width)}
        )
        parts = [
            part
            for s in range(self.width)
            for part in (
                pl.lit(symbols).gather(pl.col(f"e{s}")),
                pl.lit(fraction_texts()).gather(pl.col(f"m{s}")),
            )
        ]
        expr = pl.concat_str(parts, separator="").alias("composition")
        # The streaming engine works in batches of rows, so the 2 × width gathered string
        # columns are never all held at once (a third of the peak memory of one pass).
        return frame.lazy().select(expr).collect(engine="streaming").to_series()

    def _symbol_index(self, present: np.ndarray) -> np.ndarray:
        """Per slot, the index into [symbols, " " + symbols, ""] that :meth:`texts` reads."""
        palette = len(self.elements)
        after_first = np.zeros_like(present)
        for s in range(1, self.width):
            np.logical_or(after_first[s - 1], present[s - 1], out=after_first[s])
        symbol = self.index.astype(np.int32)
        np.add(symbol, palette, out=symbol, where=after_first)
        symbol[~present] = 2 * palette
        return symbol


#: Rows per block of the slot work (here and in ``featurize``): a block's working arrays,
#: a few of up to 256 KiB, stay in a core's L2 cache.
BLOCK_ROWS = 32_768


def for_each_block(rows: int, work: Callable[[slice], None]) -> None:
    """Call ``work`` on consecutive slices of at most :data:`BLOCK_ROWS` of ``rows`` rows.

    ``work`` must write only its own rows. The blocks run on as many threads as polars'
    pool has (numpy releases the GIL in its array loops), so the slot work uses the cores
    as polars' expressions and the dense path's matrix products do; ``POLARS_MAX_THREADS``
    limits it with polars' pool. A single block runs in the calling thread.
    """
    parts = [slice(start, start + BLOCK_ROWS) for start in range(0, rows, BLOCK_ROWS)]
    if len(parts) <= 1 or pl.thread_pool_size() == 1:
        for part in parts:
            work(part)
        return
    with ThreadPoolExecutor(min(pl.thread_pool_size(), len(parts))) as pool:
        for _ in pool.map(work, parts):  # re-raises the first error of a block
            pass


def _fill_slots(
    micro: np.ndarray, counts: np.ndarray, index: np.ndarray, values: np.ndarray
) -> None:
    """Write the slots of the dense rows ``micro`` (non-zeros per row: ``counts``) in place.

    ``index`` and ``values`` are the (width, rows) slices of the block.
    """
    rows, palette = micro.shape
    present = micro != 0
    _pad_short_rows(present, counts, len(index))
    flat = np.flatnonzero(present).reshape(rows, len(index))  # columns ascend within a row
    values[:] = micro.take(flat).T
    flat -= (np.arange(rows) * palette)[:, None]
    index[:] = flat.T


def _pad_short_rows(present: np.ndarray, counts: np.ndarray, width: int) -> None:
    """Mark, in place, the first absent elements of each row with fewer than ``width``."""
    short = np.flatnonzero(counts < width)
    if not len(short):
        return
    absent = ~present[short]
    rank = absent.cumsum(axis=1, dtype=np.int16)  # a palette has at most 118 elements
    present[short] |= absent & (rank <= (width - counts[short])[:, None])


@cache
def fraction_texts() -> pl.Series:
    """``format_micro(m)`` for every m in 0 .. SCALE, as a lookup series (built once, ~10 MB).

    One more entry, at SCALE + 1, is the empty string: the text of a padding slot.
    """
    # format_micro vectorized (a Python loop over a million values took 1.5 s a process)
    texts = (
        pl.select(
            pl.when(pl.int_range(0, SCALE + 1) == SCALE)
            .then(pl.lit("1"))
            .otherwise(
                "0."
                + pl.int_range(0, SCALE + 1).cast(pl.Utf8).str.zfill(6).str.strip_chars_end("0")
            )
            .alias("fraction")
        )
        .to_series()
        .extend_constant("", 1)
    )
    return texts
