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

from hea_screen.compositions.composition import parse
from hea_screen.compositions.elements import property_vector
from hea_screen.errors import UserInputError

#: Default ingot mass in grams (a typical arc-melted button).
DEFAULT_INGOT_MASS_G = 50.0


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


def _text(elements: Sequence[str], values: np.ndarray, digits: int, unit: str = "") -> str:
    return ", ".join(f"{el} {v:.{digits}f}{unit}" for el, v in zip(elements, values))


def lab_columns(frame: pl.DataFrame, ingot_mass_g: float = DEFAULT_INGOT_MASS_G) -> pl.DataFrame:
    """Add ``n_elements``, ``at_pct``, ``wt_pct`` and ``weigh_out_g`` texts for each row.

    ``frame`` needs a canonical ``composition`` column; ``ingot_mass_g`` is the mass of the
    ingot to weigh out, in grams (> 0).
    """
    if not (isinstance(ingot_mass_g, (int, float)) and math.isfinite(ingot_mass_g)):
        raise UserInputError(f"ingot mass {ingot_mass_g!r}: need a number of grams > 0")
    if ingot_mass_g <= 0 or round(ingot_mass_g * 1000) < 1:
        raise UserInputError(f"ingot mass {ingot_mass_g!r} g: need at least 0.001 g")
    n_el, at, wt, grams = [], [], [], []
    for text in frame["composition"]:
        comp = parse(text)
        x = np.array(comp.micro, dtype=np.float64) / 1e6
        w = weight_fractions(comp.elements, x)
        n_el.append(len(comp))
        at.append(_text(comp.elements, 100 * x, 2))
        wt.append(_text(comp.elements, 100 * w, 2))
        grams.append(_text(comp.elements, weigh_out_mg(w, ingot_mass_g) / 1000, 3, " g"))
    return frame.with_columns(
        pl.Series("n_elements", n_el, dtype=pl.Int64),
        pl.Series("at_pct", at, dtype=pl.Utf8),
        pl.Series("wt_pct", wt, dtype=pl.Utf8),
        pl.Series("weigh_out_g", grams, dtype=pl.Utf8),
    )
