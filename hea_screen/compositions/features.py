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

from hea_screen.compositions.composition import SCALE, Composition
from hea_screen.compositions.elements import (
    check_elements,
    element_table,
    mixing_matrix,
    property_vector,
)
from hea_screen.compositions.table import CompositionTable, Slots, for_each_block, to_table
from hea_screen.errors import ElementDataError

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


def featurize(
    compositions: CompositionTable | Iterable[Composition | str] | Composition | str,
) -> pl.DataFrame:
    """Compute the 14 Table 1 features, one row per input composition.

    ``compositions`` is a :class:`CompositionTable` (fast path, used by screening), one
    composition (text or :class:`Composition`: one row) or an ordered iterable of
    compositions or composition texts (see :func:`~hea_screen.compositions.table.to_table`; a dict,
    a
    set or bytes are refused). The result has a canonical ``composition`` column followed
    by :data:`FEATURE_NAMES`, all Float64 and finite.

    Vectorized in two steps, with no loop over compositions: numpy forms the
    fraction-weighted moments (Σ x p and Σ x p²; h_mix = Σ_{i<j} 4 ΔH_ij x_i x_j; and the
    two terms not linear in x, Σ x ln x and the modulus mismatch), then polars expressions
    turn the moments into the features (e.g. δχ = sqrt(Σ x χ² − χ̄²)). The moments come
    from matrix products with the dense (elements × rows) fraction matrix when the palette
    is narrow, and from the row-wise :class:`~hea_screen.compositions.table.Slots` (gathering
    properties
    and ΔH_ij by element index) when rows hold at most a quarter of the palette's elements,
    e.g. 5 of 34: their cost then grows with the elements per row, not with the palette.

    Raises :class:`~hea_screen.errors.CompositionError` naming the row (counting from 0)
    and text of the first input that does not parse, and
    :class:`~hea_screen.errors.ElementDataError` naming the row and composition if an element
    has no property data, two elements that occur together have no tabulated mixing
    enthalpy, or a feature is undefined (not finite) for it: the moduli terms of pure N,
    whose tabulated shear modulus is 0, divide by a mean shear modulus of 0.
    """
    table = to_table(compositions)
    _check_element_data(table)
    slots = table.slots()
    _check_pairs(table, slots)
    moments = _moments(table, slots)
    chi_bar, r_bar, g_bar = pl.col("_chi"), pl.col("_r"), pl.col("shear_modulus")
    delta_chi_sq = (pl.col("_chi2") - chi_bar**2).clip(lower_bound=0.0)
    frame = (
        pl.DataFrame(moments)
        .lazy()
        .select(
            pl.Series("composition", slots.texts()),
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
    _check_finite(frame)
    return frame


def _check_element_data(table: CompositionTable) -> None:
    """Raise :class:`ElementDataError` naming the first row with an element lacking data."""
    try:
        check_elements(table.elements)
    except ElementDataError as error:
        lacking = [j for j, el in enumerate(table.elements) if el not in element_table()]
        row = int(np.flatnonzero((table.micro[:, lacking] > 0).any(axis=1))[0])
        raise ElementDataError(f"row {row}: {table.composition(row)} — {error}") from error


def _check_finite(frame: pl.DataFrame) -> None:
    """Raise :class:`ElementDataError` naming the first row and feature that is not finite."""
    finite = frame.select(pl.all_horizontal(pl.col(FEATURE_NAMES).is_finite())).to_series()
    if finite.all():
        return
    row = int((~finite).arg_true()[0])
    values = frame.row(row, named=True)
    bad = [name for name in FEATURE_NAMES if not np.isfinite(values[name])]
    raise ElementDataError(
        f"row {row}: {values['composition']} — feature {', '.join(bad)} is not finite "
        f"({', '.join(str(values[name]) for name in bad)}): the element data leave it "
        "undefined for this composition"
    )


def _moments(table: CompositionTable, slots: Slots) -> dict[str, np.ndarray]:
    """Fraction-weighted moments of the elemental properties, one value per row.

    The names of :func:`_linear_properties` -> Σ x p and ``_h_mix`` = Σ_{i<j} 4 ΔH_ij x_i x_j,
    from the dense matrix or the slots (:func:`_prefers_slots`); then, from the slots,
    ``_x_ln_x`` = Σ x ln x (0 ln 0 = 0) and ``_modulus_mismatch`` = Σ x (2(G − Ḡ)/(G + Ḡ))².
    The slot work goes by blocks of rows (:func:`~hea_screen.compositions.table.for_each_block`).
    """
    columns = _linear_properties(table.elements)
    h = np.nan_to_num(mixing_matrix(table.elements))
    rows, use_slots = len(table), _prefers_slots(slots)
    if use_slots:
        out = {name: np.empty(rows) for name in [*columns, "_h_mix"]}
    else:
        out = _dense_moments(table.micro, columns, h)
    out |= {name: np.empty(rows) for name in ("_modulus_mismatch", "_x_ln_x")}

    def work(part: slice) -> None:
        block = {name: values[part] for name, values in out.items()}
        index, x = slots.index[:, part], slots.micro[:, part] * (1.0 / SCALE)
        if use_slots:
            _slot_moments(block, columns, h, index, x)
        _nonlinear_moments(block, columns["shear_modulus"], index, x)

    for_each_block(rows, work)
    return out


def _prefers_slots(slots: Slots) -> bool:
    """Whether the moments are cheaper from the slots: rows hold at most ¼ of the palette.

    The dense path costs about rows × palette (in fast matrix products), the slot path
    rows × width (in slower gathers); on 1M rows the two break even near a palette of 4×
    the width (16 elements for 4 per row, 20 for 5), and at 34 elements and 5 per row the
    slots take 0.7× the time.
    """
    return 4 * slots.width <= len(slots.elements)


def _linear_properties(elements: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The properties whose fraction-weighted mean is a moment: ``name`` -> one per element.

    The :data:`_MEANS` columns (under their feature names), and ``_chi``/``_chi2``,
    ``_r``/``_r2``, ``_g2``: electronegativity, radius and their squares, shear modulus squared.
    """
    columns = {name: property_vector(elements, col) for name, col in _MEANS.items()}
    chi = property_vector(elements, "electronegativity_pauling")
    radius = property_vector(elements, "metallic_radius_pm")
    return columns | {
        "_chi": chi,
        "_chi2": chi**2,
        "_r": radius,
        "_r2": radius**2,
        "_g2": columns["shear_modulus"] ** 2,
    }


def _dense_moments(
    micro: np.ndarray, columns: dict[str, np.ndarray], h: np.ndarray
) -> dict[str, np.ndarray]:
    """Σ x p for each of ``columns`` and ``_h_mix`` = 2 xᵀHx, from the dense fraction matrix.

    Works on the transposed (elements, rows) fraction matrix, so that every product is a
    wide matrix product whose result rows are the contiguous output columns.
    """
    x = np.ascontiguousarray(micro.T) * (1.0 / SCALE)
    out = dict(zip(columns, np.vstack(list(columns.values())) @ x))
    out["_h_mix"] = 2.0 * np.einsum("ij,ij->j", h @ x, x)
    return out


def _slot_moments(
    out: dict[str, np.ndarray],
    columns: dict[str, np.ndarray],
    h: np.ndarray,
    index: np.ndarray,
    x: np.ndarray,
) -> None:
    """Write Σ x p for each of ``columns`` and ``_h_mix`` of a block of slots into ``out``.

    ``index`` and ``x`` are the block's (slots, rows) element indices and fractions;
    padding slots (x = 0) add nothing.
    """
    buffer = np.empty(x.shape[1])
    for name, prop in columns.items():
        _gathered_sum(out[name], prop, index, x, buffer)
    _pair_sum(out["_h_mix"], h, index, x, buffer)
    out["_h_mix"] *= 4.0


def _gathered_sum(
    total: np.ndarray, prop: np.ndarray, index: np.ndarray, x: np.ndarray, buffer: np.ndarray
) -> None:
    """total = Σ_s x[s] prop[index[s]] over the slots s of each row (``buffer``: scratch)."""
    prop.take(index[0], out=total)
    total *= x[0]
    for s in range(1, len(index)):
        prop.take(index[s], out=buffer)
        buffer *= x[s]
        total += buffer


def _pair_sum(
    total: np.ndarray, h: np.ndarray, index: np.ndarray, x: np.ndarray, buffer: np.ndarray
) -> None:
    """total = Σ_{s<t} h[index[s], index[t]] x[s] x[t] over the slot pairs of each row."""
    flat, size = h.ravel(), len(h)
    total[:] = 0.0
    for s in range(len(index)):
        row = index[s].astype(np.intp) * size
        for t in range(s + 1, len(index)):
            flat.take(row + index[t], out=buffer)
            buffer *= x[s] * x[t]
            total += buffer


def _nonlinear_moments(
    out: dict[str, np.ndarray],
    shear: np.ndarray,
    index: np.ndarray,
    x: np.ndarray,
) -> None:
    """Write ``_modulus_mismatch`` and ``_x_ln_x`` of a block of slots into ``out``.

    Needs ``out["shear_modulus"]`` (Ḡ) of the block.
    """
    g, g_bar = shear.take(index), out["shear_modulus"]
    with np.errstate(invalid="ignore"):  # 0/0 when Ḡ = 0 (pure N): featurize then raises
        ratio = 2.0 * (g - g_bar) / (g + g_bar)
    np.einsum("ij,ij->j", x, ratio**2, out=out["_modulus_mismatch"])
    log_x = np.log(x, out=np.zeros_like(x), where=x > 0)
    np.einsum("ij,ij->j", x, log_x, out=out["_x_ln_x"])


def _check_pairs(table: CompositionTable, slots: Slots) -> None:
    """Raise if two elements that occur together have no tabulated mixing enthalpy.

    Names the first such pair in palette order and the first row that holds it.
    """
    elements = table.elements
    missing = np.isnan(mixing_matrix(elements))
    if not missing.any():
        return
    bad = _occurring_pairs(slots, missing)
    if len(bad):
        i, j = divmod(int(bad.min()), len(elements))
        row = int(np.flatnonzero((table.micro[:, i] > 0) & (table.micro[:, j] > 0))[0])
        raise ElementDataError(
            f"row {row}: no mixing enthalpy for the pair {elements[i]}-{elements[j]} "
            f"(needed by {table.composition(row)}) "
            "in Takeuchi & Inoue (2005)"
        )


def _occurring_pairs(slots: Slots, flagged: np.ndarray) -> np.ndarray:
    """Flat codes i·n + j (i < j) of the flagged element pairs that share a row."""
    flat, size = flagged.ravel(), len(flagged)
    present, index = slots.micro > 0, slots.index
    found = [np.zeros(0, dtype=np.intp)]
    for s in range(slots.width):
        for t in range(s + 1, slots.width):
            code = index[s].astype(np.intp) * size + index[t]
            found.append(code[present[s] & present[t] & flat[code]])
    return np.concatenate(found)
