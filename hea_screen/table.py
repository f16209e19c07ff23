"""Many compositions at once: a dense matrix of atomic fractions over an element palette.

:class:`CompositionTable` is the vectorized twin of :class:`~hea_screen.composition.Composition`.
Training builds one from parsed compositions; the screening enumerator builds one directly
from a fraction grid. Both then flow through the same ``featurize`` and tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import polars as pl

from hea_screen.composition import SCALE, Composition, format_micro, parse
from hea_screen.errors import CompositionError


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
        """Parse (if needed) and stack compositions over the union of their elements."""
        comps = [parse(c) for c in items]
        elements = tuple(sorted({el for c in comps for el in c.elements}))
        index = {el: j for j, el in enumerate(elements)}
        micro = np.zeros((len(comps), len(elements)), dtype=np.int32)
        for r, c in enumerate(comps):
            for el, m in zip(c.elements, c.micro):
                micro[r, index[el]] = m
        return cls(elements, micro)

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

    def frame(self) -> pl.DataFrame:
        """The fractions in millionths as a polars frame, one column per element."""
        return pl.DataFrame(
            {el: self.micro[:, j] for j, el in enumerate(self.elements)},
            schema={el: pl.Int32 for el in self.elements},
        )

    def canonical_texts(self) -> pl.Series:
        """Canonical text of every row, identical to ``str(Composition)``, vectorized in polars."""
        if not self.elements:
            return pl.Series("composition", [""] * len(self), dtype=pl.Utf8)
        texts = fraction_texts()
        parts = [
            pl.when(pl.col(el) > 0).then(pl.lit(el) + pl.lit(texts).gather(pl.col(el)))
            for el in self.elements
        ]
        expr = pl.concat_str(parts, separator=" ", ignore_nulls=True).alias("composition")
        return self.frame().select(expr).to_series()


@cache
def fraction_texts() -> pl.Series:
    """``format_micro(m)`` for every m in 0 .. SCALE, as a lookup series (built once, ~10 MB)."""
    return pl.Series("fraction", [format_micro(m) for m in range(SCALE + 1)], dtype=pl.Utf8)
