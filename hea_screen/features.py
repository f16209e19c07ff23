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
    ``composition`` column followed by :data:`FEATURE_NAMES`, all Float64.

    Vectorized in two steps, with no loop over compositions: numpy forms the
    fraction-weighted moments as one matrix product of a table of elemental properties
    with the fraction matrix (Σ x p and Σ x p²; h_mix as the quadratic form 2·xᵀHx; and the
    two terms not linear in x, Σ x ln x and the modulus mismatch), then polars expressions
    turn the moments into the features (e.g. δχ = sqrt(Σ x χ² − χ̄²)).

    Raises :class:`~hea_screen.errors.ElementDataError` if an element has no property data
    or two elements that occur together have no tabulated mixing enthalpy.
    """
    table = (
        compositions
        if isinstance(compositions, CompositionTable)
        else CompositionTable.from_compositions(compositions)
    )
    check_elements(table.elements)
    _check_pairs(table)
    chi_bar, r_bar, g_bar = pl.col("_chi"), pl.col("_r"), pl.col("shear_modulus")
    delta_chi_sq = (pl.col("_chi2") - chi_bar**2).clip(lower_bound=0.0)
    return (
        pl.DataFrame(_moments(table))
        .lazy()
        .select(
            pl.Series("composition", table.canonical_texts()),
            *(pl.col(name) for name in _MEANS),
            delta_chi_sq.sqrt().alias("delta_chi"),
            (100.0 * (pl.col("_r2") / r_bar**2 - 1.0).clip(lower_bound=0.0).sqrt()).alias(
                "delta_r"
            ),
            pl.col("_h_mix").alias("h_mix"),
            (-GAS_CONSTANT * pl.col("_x_ln_x")).alias("s_mix"),
            pl.col("_modulus_mismatch").alias("modulus_mismatch"),
            (pl.col("_g2") / g_bar**2 - 1.0)
            .clip(lower_bound=0.0)
            .alias("shear_modulus_difference"),
            (2.0 * delta_chi_sq).alias("delta_chi_pauling"),
        )
        .select("composition", *FEATURE_NAMES)
        .collect()
    )


def _moments(table: CompositionTable) -> dict[str, np.ndarray]:
    """Fraction-weighted moments of the elemental properties, one value per row.

    ``name`` -> Σ x p for the rule-of-mixtures features; ``_chi``/``_chi2``, ``_r``/``_r2``,
    ``_g2``: first and second moments of electronegativity, radius and shear modulus;
    ``_h_mix`` = Σ_{i<j} 4 ΔH_ij x_i x_j = 2 xᵀHx; ``_x_ln_x`` = Σ x ln x (0 ln 0 = 0) and
    ``_modulus_mismatch`` = Σ x (2(G − Ḡ)/(G + Ḡ))².

    Works on the transposed (elements, rows) fraction matrix, so that every product is a
    wide matrix product whose result rows are the contiguous output columns.
    """
    elements = table.elements
    x = np.ascontiguousarray(table.micro.T) * (1.0 / SCALE)
    shear = property_vector(elements, "shear_modulus_gpa")[:, None]
    columns = {name: property_vector(elements, col) for name, col in _MEANS.items()}
    chi = property_vector(elements, "electronegativity_pauling")
    radius = property_vector(elements, "metallic_radius_pm")
    columns |= {
        "_chi": chi,
        "_chi2": chi**2,
        "_r": radius,
        "_r2": radius**2,
        "_g2": shear[:, 0] ** 2,
    }
    weighted = np.vstack(list(columns.values())) @ x
    out = dict(zip(columns, weighted))
    out["_h_mix"] = 2.0 * np.einsum("ij,ij->j", np.nan_to_num(mixing_matrix(elements)) @ x, x)
    log_x = np.log(x, out=np.zeros_like(x), where=x > 0)
    out["_x_ln_x"] = np.einsum("ij,ij->j", x, log_x)
    g_bar = out["shear_modulus"]
    out["_modulus_mismatch"] = np.einsum(
        "ij,ij->j", x, (2.0 * (shear - g_bar) / (shear + g_bar)) ** 2
    )
    return out


def _check_pairs(table: CompositionTable) -> None:
    """Raise if two elements that occur together have no tabulated mixing enthalpy."""
    elements = table.elements
    missing = np.isnan(mixing_matrix(elements))
    if not missing.any():
        return
    present = table.micro > 0
    together = present.T.astype(np.int64) @ present.astype(np.int64)
    bad = np.argwhere(missing & (together > 0))
    if len(bad):
        i, j = sorted(bad[0])
        row = int(np.flatnonzero(present[:, i] & present[:, j])[0])
        raise ElementDataError(
            f"no mixing enthalpy for the pair {elements[i]}-{elements[j]} "
            f"(needed by {table.composition(row)}) in Takeuchi & Inoue (2005)"
        )
