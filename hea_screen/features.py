"""The paper's Table 1 thermodynamic features, vectorized with polars.

With atomic fractions x_i and elemental properties p_i (``hea_screen/data/elements.csv``;
bars denote the fraction-weighted mean p̄ = Σ x_i p_i):

==========================  ===========  ======================================================
feature                     unit         formula and reference
==========================  ===========  ======================================================
vec                         e/atom       Σ x_i VEC_i (Guo et al., J. Appl. Phys. 109 (2011) 103505)
delta_chi                   (Pauling)    sqrt(Σ x_i (χ_i − χ̄)²), Pauling χ (Fang et al.,
                                         J. Non-Cryst. Solids 321 (2003) 120; Guo & Liu,
                                         Prog. Nat. Sci. 21 (2011) 433)
delta_r                     %            100·sqrt(Σ x_i (1 − r_i/r̄)²), metallic radii (Zhang et al.,
                                         Adv. Eng. Mater. 10 (2008) 534; Yang & Zhang,
                                         Mater. Chem. Phys. 132 (2012) 233). Table 1 of the paper
                                         omits the square root; the standard definition keeps it.
youngs_modulus              GPa          Σ x_i E_i (rule of mixtures)
h_mix                       kJ/mol       Σ_{i<j} 4 ΔH_ij x_i x_j, ΔH_ij of Takeuchi & Inoue,
                                         Mater. Trans. 46 (2005) 2817 (regular-solution form)
s_mix                       J/(mol·K)    −R Σ x_i ln x_i, R = 8.314 J/(mol·K) (ideal
                                         configurational entropy; Yeh et al., Adv. Eng. Mater.
                                         6 (2004) 299)
work_function               eV           Σ x_i φ_i, φ polycrystalline work functions
                                         (Michaelson, J. Appl. Phys. 48 (1977) 4729)
shear_modulus               GPa          Ḡ = Σ x_i G_i
modulus_mismatch            1            Σ x_i (2 (G_i − Ḡ)/(G_i + Ḡ))² (paper's Table 1; cf.
                                         the local modulus mismatch of Wen et al., Acta Mater.
                                         170 (2019) 109)
shear_modulus_difference    1            Σ x_i (1 − G_i/Ḡ)² (paper's Table 1)
t_melt                      K            Σ x_i T_m,i (rule of mixtures)
cohesive_energy             eV/atom      Σ x_i E_coh,i (Kittel, Introduction to Solid State
                                         Physics, 8th ed., Table 3.1)
ionization_energy           eV           Σ x_i IE_i, first ionization energies (NIST ASD)
delta_chi_pauling           1            Σ_i Σ_{j≠i} x_i x_j (χ_i − χ_j)² (paper's Table 1).
                                         Identically equal to 2·delta_chi², so it carries no new
                                         information; kept for fidelity to Table 1.
==========================  ===========  ======================================================

:func:`featurize` serves training and screening alike.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

from hea_screen.composition import SCALE, Composition
from hea_screen.elements import check_elements, mixing_matrix, property_vector
from hea_screen.errors import ElementDataError
from hea_screen.table import CompositionTable

#: Universal gas constant, J/(mol·K).
GAS_CONSTANT = 8.314

#: The 14 features of the paper's Table 1, in this order.
FEATURE_NAMES: tuple[str, ...] = (
    "vec",
    "delta_chi",
    "delta_r",
    "youngs_modulus",
    "h_mix",
    "s_mix",
    "work_function",
    "shear_modulus",
    "modulus_mismatch",
    "shear_modulus_difference",
    "t_melt",
    "cohesive_energy",
    "ionization_energy",
    "delta_chi_pauling",
)

#: Unit of each feature.
FEATURE_UNITS: dict[str, str] = {
    "vec": "e/atom",
    "delta_chi": "Pauling units",
    "delta_r": "%",
    "youngs_modulus": "GPa",
    "h_mix": "kJ/mol",
    "s_mix": "J/(mol K)",
    "work_function": "eV",
    "shear_modulus": "GPa",
    "modulus_mismatch": "dimensionless",
    "shear_modulus_difference": "dimensionless",
    "t_melt": "K",
    "cohesive_energy": "eV/atom",
    "ionization_energy": "eV",
    "delta_chi_pauling": "Pauling units squared",
}

# Rule-of-mixtures features: output name -> column of elements.csv.
_MEANS = {
    "vec": "vec",
    "youngs_modulus": "youngs_modulus_gpa",
    "work_function": "work_function_ev",
    "shear_modulus": "shear_modulus_gpa",
    "t_melt": "melting_point_k",
    "cohesive_energy": "cohesive_energy_ev",
    "ionization_energy": "ionization_energy_ev",
}


def featurize(compositions: CompositionTable | Iterable[Composition | str]) -> pl.DataFrame:
    """Compute the 14 Table 1 features, one row per input composition.

    ``compositions`` is a :class:`CompositionTable` (fast path, used by screening) or any
    iterable of compositions or composition texts. The result has a canonical
    ``composition`` column followed by :data:`FEATURE_NAMES`, all Float64, computed with
    polars expressions over whole columns.

    Raises :class:`~hea_screen.errors.ElementDataError` if an element has no property data
    or two elements that occur together have no tabulated mixing enthalpy.
    """
    table = (
        compositions
        if isinstance(compositions, CompositionTable)
        else (CompositionTable.from_compositions(compositions))
    )
    elements = table.elements
    check_elements(elements)
    pair_dh = _pair_terms(table)
    x = {el: pl.col(el).cast(pl.Float64) / SCALE for el in elements}

    def mean(values: np.ndarray) -> pl.Expr:
        return pl.sum_horizontal([x[el] * float(v) for el, v in zip(elements, values)])

    chi = property_vector(elements, "electronegativity_pauling")
    radius = property_vector(elements, "metallic_radius_pm")
    shear = property_vector(elements, "shear_modulus_gpa")

    means = {name: mean(property_vector(elements, col)).alias(name) for name, col in _MEANS.items()}
    stage1 = [
        *means.values(),
        mean(chi).alias("_chi_bar"),
        mean(radius).alias("_r_bar"),
        pl.sum_horizontal(
            [pl.when(x[el] > 0).then(x[el] * x[el].log()).otherwise(0.0) for el in elements]
        )
        .mul(-GAS_CONSTANT)
        .alias("s_mix"),
        (
            4.0 * pl.sum_horizontal([x[a] * x[b] * dh for a, b, dh in pair_dh] or [pl.lit(0.0)])
        ).alias("h_mix"),
    ]
    g_bar = pl.col("shear_modulus")
    stage2 = [
        pl.sum_horizontal(
            [x[el] * (float(c) - pl.col("_chi_bar")) ** 2 for el, c in zip(elements, chi)]
        )
        .sqrt()
        .alias("delta_chi"),
        (
            100.0
            * pl.sum_horizontal(
                [
                    x[el] * (1.0 - float(r) / pl.col("_r_bar")) ** 2
                    for el, r in zip(elements, radius)
                ]
            ).sqrt()
        ).alias("delta_r"),
        pl.sum_horizontal(
            [
                x[el] * (2.0 * (float(g) - g_bar) / (float(g) + g_bar)) ** 2
                for el, g in zip(elements, shear)
            ]
        ).alias("modulus_mismatch"),
        pl.sum_horizontal(
            [x[el] * (1.0 - float(g) / g_bar) ** 2 for el, g in zip(elements, shear)]
        ).alias("shear_modulus_difference"),
    ]
    return (
        table.frame()
        .lazy()
        .with_columns(table.canonical_texts().alias("composition"))
        .with_columns(stage1)
        .with_columns(stage2)
        .with_columns((2.0 * pl.col("delta_chi") ** 2).alias("delta_chi_pauling"))
        .select("composition", *FEATURE_NAMES)
        .collect()
    )


def _pair_terms(table: CompositionTable) -> list[tuple[str, str, float]]:
    """(a, b, ΔH_ab) for every element pair that occurs together in some row of ``table``."""
    elements = table.elements
    dh = mixing_matrix(elements)
    present = table.micro > 0
    together = present.T.astype(np.int64) @ present.astype(np.int64)
    terms = []
    for i in range(len(elements)):
        for j in range(i + 1, len(elements)):
            if not together[i, j]:
                continue
            if np.isnan(dh[i, j]):
                row = int(np.flatnonzero(present[:, i] & present[:, j])[0])
                raise ElementDataError(
                    f"no mixing enthalpy for the pair {elements[i]}-{elements[j]} "
                    f"(needed by {table.composition(row)}) in Takeuchi & Inoue (2005)"
                )
            terms.append((elements[i], elements[j], float(dh[i, j])))
    return terms
