"""Elemental property tables and binary mixing enthalpies.

The data live in ``hea_screen/data``:

- ``elements.csv``: one row per element; the unit, meaning and literature source of every
  column are in ``elements_columns.json`` beside it (and in the README).
- ``mixing_enthalpy.csv``: ΔH_mix of equiatomic binary liquids (kJ/mol) from Miedema's
  model as tabulated by A. Takeuchi and A. Inoue, Mater. Trans. 46 (2005) 2817;
  provenance in ``mixing_enthalpy.json``.

Looking up an element or pair with no value raises
:class:`~hea_screen.errors.ElementDataError` naming it and what is covered.
"""

from __future__ import annotations

import csv
import json
from functools import cache
from importlib import resources

import numpy as np

from hea_screen.errors import ElementDataError

#: Numeric columns of ``elements.csv`` (units in ``elements_columns.json``).
PROPERTY_COLUMNS: tuple[str, ...] = (
    "atomic_number",
    "atomic_mass_u",
    "vec",
    "electronegativity_pauling",
    "metallic_radius_pm",
    "youngs_modulus_gpa",
    "shear_modulus_gpa",
    "melting_point_k",
    "cohesive_energy_ev",
    "ionization_energy_ev",
    "work_function_ev",
)


def _data_text(name: str) -> str:
    return resources.files("hea_screen").joinpath("data", name).read_text(encoding="utf-8")


@cache
def element_table() -> dict[str, dict[str, float]]:
    """``{symbol: {column: value}}`` for every element with property data."""
    rows = csv.DictReader(_data_text("elements.csv").splitlines())
    return {r["symbol"]: {c: float(r[c]) for c in PROPERTY_COLUMNS} for r in rows}


@cache
def column_sources() -> dict[str, dict[str, str]]:
    """Unit, description and literature source of each column of ``elements.csv``."""
    return json.loads(_data_text("elements_columns.json"))


@cache
def _pair_table() -> dict[frozenset[str], float]:
    rows = csv.DictReader(_data_text("mixing_enthalpy.csv").splitlines())
    return {frozenset((r["element_a"], r["element_b"])): float(r["dh_mix_kj_mol"]) for r in rows}


def supported_elements() -> tuple[str, ...]:
    """Element symbols with a full row of property data, sorted."""
    return tuple(sorted(element_table()))


def check_elements(elements: tuple[str, ...] | list[str]) -> None:
    """Raise :class:`ElementDataError` if any element lacks property data."""
    table = element_table()
    missing = [el for el in elements if el not in table]
    if missing:
        raise ElementDataError(
            f"no property data for {', '.join(missing)}: supported elements are "
            f"{', '.join(supported_elements())}"
        )


def property_vector(elements: tuple[str, ...] | list[str], column: str) -> np.ndarray:
    """Values of property ``column`` for ``elements``, in the unit of ``elements_columns.json``."""
    check_elements(elements)
    table = element_table()
    return np.array([table[el][column] for el in elements], dtype=np.float64)


def mixing_enthalpy(a: str, b: str) -> float:
    """ΔH_mix of the equiatomic A–B liquid in kJ/mol (Takeuchi & Inoue 2005)."""
    check_elements([a, b])
    try:
        return _pair_table()[frozenset((a, b))]
    except KeyError:
        raise ElementDataError(
            f"no mixing enthalpy for the pair {a}-{b} in Takeuchi & Inoue (2005)"
        ) from None


def mixing_matrix(elements: tuple[str, ...] | list[str]) -> np.ndarray:
    """Symmetric matrix of ΔH_ij (kJ/mol) over ``elements``; zero diagonal, NaN where unknown."""
    check_elements(elements)
    pairs = _pair_table()
    k = len(elements)
    out = np.zeros((k, k), dtype=np.float64)
    for i in range(k):
        for j in range(i + 1, k):
            out[i, j] = out[j, i] = pairs.get(frozenset((elements[i], elements[j])), np.nan)
    return out
