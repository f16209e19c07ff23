"""Textbook per-row implementation of the 14 Table 1 features, in plain Python.

Written independently of :mod:`hea_screen.compositions.features` (explicit loops, the double sums of
the paper's formulas, no identities, no polars) to cross-check it and to serve as the
per-row baseline of ``benchmarks/featurize_bench.py``. It shares only the element tables.
"""

from __future__ import annotations

import csv
import math
from importlib import resources

R = 8.314  # J/(mol K)


def load_tables() -> tuple[dict[str, dict[str, float]], dict[tuple[str, str], float]]:
    """Element rows and ΔH pairs read straight from the CSV files."""
    data = resources.files("hea_screen").joinpath("data")
    with data.joinpath("elements.csv").open() as f:
        props = {
            r["symbol"]: {k: float(v) for k, v in r.items() if k != "symbol"}
            for r in csv.DictReader(f)
        }
    with data.joinpath("mixing_enthalpy.csv").open() as f:
        pairs = {}
        for r in csv.DictReader(f):
            pairs[(r["element_a"], r["element_b"])] = float(r["dh_mix_kj_mol"])
            pairs[(r["element_b"], r["element_a"])] = float(r["dh_mix_kj_mol"])
    return props, pairs


def features_row(
    fractions: dict[str, float],
    props: dict[str, dict[str, float]],
    pairs: dict[tuple[str, str], float],
) -> dict[str, float]:
    """The 14 features of one composition given as {element: atomic fraction}."""
    els = list(fractions)
    x = [fractions[e] for e in els]

    def avg(col: str) -> float:
        return sum(xi * props[e][col] for e, xi in zip(els, x))

    chi = [props[e]["electronegativity_pauling"] for e in els]
    r = [props[e]["metallic_radius_pm"] for e in els]
    g = [props[e]["shear_modulus_gpa"] for e in els]
    chi_bar, r_bar, g_bar = (
        avg("electronegativity_pauling"),
        avg("metallic_radius_pm"),
        avg("shear_modulus_gpa"),
    )
    h_mix = 0.0
    for i in range(len(els)):
        for j in range(i + 1, len(els)):
            h_mix += 4 * pairs[(els[i], els[j])] * x[i] * x[j]
    chi_p = 0.0
    for i in range(len(els)):
        for j in range(len(els)):
            if i != j:
                chi_p += x[i] * x[j] * (chi[i] - chi[j]) ** 2
    return {
        "vec": avg("vec"),
        "delta_chi": math.sqrt(sum(xi * (c - chi_bar) ** 2 for xi, c in zip(x, chi))),
        "delta_r": 100 * math.sqrt(sum(xi * (1 - ri / r_bar) ** 2 for xi, ri in zip(x, r))),
        "youngs_modulus": avg("youngs_modulus_gpa"),
        "h_mix": h_mix,
        "s_mix": -R * sum(xi * math.log(xi) for xi in x if xi > 0),
        "work_function": avg("work_function_ev"),
        "shear_modulus": g_bar,
        "modulus_mismatch": sum(
            xi * (2 * (gi - g_bar) / (gi + g_bar)) ** 2 for xi, gi in zip(x, g)
        ),
        "shear_modulus_difference": sum(xi * (1 - gi / g_bar) ** 2 for xi, gi in zip(x, g)),
        "t_melt": avg("melting_point_k"),
        "cohesive_energy": avg("cohesive_energy_ev"),
        "ionization_energy": avg("ionization_energy_ev"),
        "delta_chi_pauling": chi_p,
    }
