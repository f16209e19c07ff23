"""What the lab needs to make a candidate: atomic and weight percents, weigh-out masses.

For a composition with atomic fractions x_i and atomic masses M_i (g/mol, from
``hea_screen/data/elements.csv``):

- at.% of element i is ``100 · x_i``;
- wt.% is ``100 · x_i M_i / Σ_j x_j M_j``;
- the mass to weigh for an ingot of ``m`` grams is ``m · x_i M_i / Σ_j x_j M_j``.

Texts list elements in canonical (alphabetical) order, e.g. ``Co 20.00, Cr 20.00, ...``.
Masses are given to the milligram and rounded with the largest-remainder rule so they add
up exactly to the ingot mass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from hea_screen.compositions.elements import property_vector
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import UserInputError

#: Default ingot mass in grams (a typical arc-melted button).
DEFAULT_INGOT_MASS_G = 50.0

#: Ingot masses accepted, in grams: at least a milligram (the weigh-out resolution) and at
#: most a tonne, far beyond any laboratory melt; masses are whole milligrams in int64.
INGOT_MASS_RANGE_G: tuple[float, float] = (0.001, 1_000_000.0)


def check_ingot_mass(mass: object, what: str = "ingot mass") -> float:
    """``mass`` (grams) as a float, or :class:`UserInputError` naming it and the accepted
    range :data:`INGOT_MASS_RANGE_G`."""
    lo, hi = INGOT_MASS_RANGE_G
    ok = isinstance(mass, (int, float)) and not isinstance(mass, bool)
    if not ok or not math.isfinite(mass) or not lo <= mass <= hi:  # type: ignore[arg-type]
        raise UserInputError(
            f"{what} {mass!r} g: need a number of grams from {lo:g} to {hi:,.0f}, e.g. 50"
        )
    return float(mass)  # type: ignore[arg-type]


def weight_fractions(elements: Sequence[str], atomic_fractions: np.ndarray) -> np.ndarray:
    """Weight fractions (sum 1) from atomic fractions over ``elements``."""
    masses = atomic_fractions * property_vector(list(elements), "atomic_mass_u")
    return masses / masses.sum()


def weigh_out_mg(weight_fraction: np.ndarray, ingot_mass_g: float) -> np.ndarray:
    """Whole milligrams per element summing exactly to the ingot mass (largest remainder)."""
    total_mg = round(ingot_mass_g * 1000)
    exact = weight_fraction * total_mg
    floors = np.floor(exact).astype(np.int64)
    missing = total_mg - int(floors.sum())
    order = np.argsort(-(exact - floors), kind="stable")
    floors[order[:missing]] += 1
    return floors


def lab_columns(frame: pl.DataFrame, ingot_mass_g: float = DEFAULT_INGOT_MASS_G) -> pl.DataFrame:
    """Add ``n_elements``, ``at_pct``, ``wt_pct`` and ``weigh_out_g`` texts for each row.

    ``frame`` needs a canonical ``composition`` column; ``ingot_mass_g`` is the mass of the
    ingot to weigh out, in grams (within :data:`INGOT_MASS_RANGE_G`). Vectorized over rows
    with the same number of elements: every value and text equals the per-composition
    arithmetic of :func:`weight_fractions` and :func:`weigh_out_mg` to the last digit.
    """
    check_ingot_mass(ingot_mass_g)
    table = CompositionTable.from_compositions(frame["composition"])
    present = table.micro > 0
    counts = present.sum(axis=1)
    masses = property_vector(list(table.elements), "atomic_mass_u")
    symbols = pl.Series(table.elements, dtype=pl.Utf8)
    parts = []
    for k in np.unique(counts):
        rows = np.flatnonzero(counts == k)
        # (rows, k) arrays, elements in canonical order: each row's arithmetic is the
        # per-composition one (a row-wise numpy sum of k values is the 1-D sum of them)
        column = np.flatnonzero(present[rows]).reshape(len(rows), k) % len(table.elements)
        x = np.take_along_axis(table.micro[rows], column, axis=1).astype(np.float64) / 1e6
        m = x * masses[column]
        w = m / m.sum(axis=1, keepdims=True)
        names = (symbols, column)
        parts.append(
            pl.DataFrame(
                {
                    "_row": rows,
                    "n_elements": np.full(len(rows), k, dtype=np.int64),
                    "at_pct": _texts(names, 100 * x, 2),
                    "wt_pct": _texts(names, 100 * w, 2),
                    "weigh_out_g": _texts(names, _weigh_out_rows(w, ingot_mass_g), 3, " g", 1000),
                },
                schema_overrides={"n_elements": pl.Int64},
            )
        )
    if parts:
        columns = pl.concat(parts).sort("_row").drop("_row")
    else:
        columns = pl.DataFrame(
            schema={
                "n_elements": pl.Int64,
                "at_pct": pl.Utf8,
                "wt_pct": pl.Utf8,
                "weigh_out_g": pl.Utf8,
            }
        )
    return frame.with_columns(columns)


def _weigh_out_rows(weight_fraction: np.ndarray, ingot_mass_g: float) -> np.ndarray:
    """:func:`weigh_out_mg` of every row of a (rows, k) array at once."""
    total_mg = round(ingot_mass_g * 1000)
    exact = weight_fraction * total_mg
    floors = np.floor(exact).astype(np.int64)
    missing = total_mg - floors.sum(axis=1)
    order = np.argsort(-(exact - floors), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
    return floors + (rank < missing[:, None])


def _texts(
    names: tuple[pl.Series, np.ndarray],
    values: np.ndarray,
    digits: int,
    unit: str = "",
    scale: int = 0,
) -> pl.Series:
    """Per row, ``"El v, El v, ..."`` with each value as ``f"{v:.{digits}f}{unit}"``;
    ``names`` is the palette and the (rows, k) index of each value's element in it.

    ``scale`` > 0 means ``values`` are whole numbers to print divided by ``scale`` (exactly
    the text of ``f"{v / scale:.{digits}f}"``). Otherwise each value is rounded at
    ``digits`` in integer arithmetic, and values within 1e-6 of a rounding tie are printed
    by Python's formatting (the correctly rounded text of the exact binary value).
    """
    unit_scale = 10**digits
    if scale:
        whole = values.astype(np.int64)
        tie = np.zeros(values.shape, dtype=bool)
    else:
        shifted = values * unit_scale
        tie = np.abs(shifted - np.floor(shifted) - 0.5) < 1e-6
        whole = np.rint(shifted).astype(np.int64)
        scale = unit_scale
    frame = pl.DataFrame(
        {f"i{s}": whole[:, s] // scale for s in range(values.shape[1])}
        | {f"f{s}": whole[:, s] % scale for s in range(values.shape[1])}
        | {f"n{s}": names[1][:, s] for s in range(values.shape[1])}
    )
    slot_texts = frame.select(
        pl.concat_str(
            pl.lit(names[0]).gather(pl.col(f"n{s}")),
            pl.lit(" "),
            pl.col(f"i{s}").cast(pl.Utf8),
            pl.lit("."),
            pl.col(f"f{s}").cast(pl.Utf8).str.zfill(digits),
            pl.lit(unit),
        ).alias(f"t{s}")
        for s in range(values.shape[1])
    )
    columns = []
    for s in range(values.shape[1]):
        rows = np.flatnonzero(tie[:, s])
        column = slot_texts[f"t{s}"]
        if len(rows):
            symbols = [names[0][int(names[1][r, s])] for r in rows]
            exact = [f"{el} {values[r, s]:.{digits}f}{unit}" for el, r in zip(symbols, rows)]
            column = column.scatter(rows, exact)
        columns.append(column)
    return pl.DataFrame(columns).select(pl.concat_str(pl.all(), separator=", ")).to_series()
