"""Empirical phase-formation rules of high-entropy alloys, as flags beside the predictions.

Computed from the Table 1 features of :func:`hea_screen.featurize` (units as there):

==================  =========  ===============================================================
column              unit       meaning
==================  =========  ===============================================================
``omega``           1          Ω = T_m ΔS_mix / |ΔH_mix| with T_m in K, ΔS_mix in J/(mol·K)
                               and ΔH_mix converted from kJ/mol to J/mol (infinite when
                               ΔH_mix = 0); Yang & Zhang, Mater. Chem. Phys. 132 (2012) 233
``delta_r``         %          atomic size mismatch δ (the ``delta_r`` feature)
``solid_solution``  bool       Ω ≥ 1.1 and δ ≤ 6.6 %: a solid solution is expected (Yang &
                               Zhang 2012); ``False`` flags a likely intermetallic or glass
``vec``             e/atom     valence electron concentration
``vec_phase``       text       ``FCC`` for VEC ≥ 8, ``BCC`` below 6.87, ``FCC+BCC`` between
                               (Guo et al., J. Appl. Phys. 109 (2011) 103505)
==================  =========  ===============================================================

The rules are screens, not predictions: they were fitted on cast alloys and are wrong for a
good share of them. The learned phase probabilities (``phase_<class>_prob``) come from the
model bundle's ``phase`` task where it has one.
"""

from __future__ import annotations

import polars as pl

from hea_screen.compositions.features import featurize

#: Thresholds of the rules (Yang & Zhang 2012; Guo et al. 2011).
OMEGA_MIN = 1.1
DELTA_MAX_PCT = 6.6
VEC_FCC_MIN = 8.0
VEC_BCC_MAX = 6.87
#: Rounding slack of the VEC comparisons (features are float32: Cantor's VEC 8 reads 7.9999995).
_VEC_SLACK = 1e-5

#: Columns :func:`phase_flags` adds, in order.
PHASE_FLAG_COLUMNS: tuple[str, ...] = ("omega", "delta_r", "solid_solution", "vec", "vec_phase")

#: ``references`` of the rules, for reports.
REFERENCES: tuple[str, ...] = (
    "Ω ≥ 1.1 and δ ≤ 6.6 %: X. Yang, Y. Zhang, Mater. Chem. Phys. 132 (2012) 233",
    "VEC ≥ 8 FCC, VEC < 6.87 BCC: S. Guo et al., J. Appl. Phys. 109 (2011) 103505",
)


def rule_columns(features: pl.DataFrame) -> pl.DataFrame:
    """The :data:`PHASE_FLAG_COLUMNS` of a :func:`~hea_screen.featurize` frame."""
    h_j_per_mol = pl.col("h_mix").abs() * 1000.0
    omega = (
        pl.when(h_j_per_mol > 0)
        .then(pl.col("t_melt") * pl.col("s_mix") / h_j_per_mol)
        .otherwise(float("inf"))
    )
    vec_phase = (
        pl.when(pl.col("vec") >= VEC_FCC_MIN - _VEC_SLACK)
        .then(pl.lit("FCC"))
        .when(pl.col("vec") < VEC_BCC_MAX - _VEC_SLACK)
        .then(pl.lit("BCC"))
        .otherwise(pl.lit("FCC+BCC"))
    )
    return features.select(
        omega.alias("omega"),
        pl.col("delta_r"),
        ((omega >= OMEGA_MIN) & (pl.col("delta_r") <= DELTA_MAX_PCT)).alias("solid_solution"),
        pl.col("vec"),
        vec_phase.alias("vec_phase"),
    )


def phase_flags(frame: pl.DataFrame, features: pl.DataFrame | None = None) -> pl.DataFrame:
    """``frame`` (with a ``composition`` column) plus :data:`PHASE_FLAG_COLUMNS`.

    ``features`` are the frame's features when already computed (same row order); columns
    of those names already in ``frame`` are replaced.
    """
    feats = featurize(frame["composition"]) if features is None else features
    flags = rule_columns(feats)
    return frame.drop([c for c in PHASE_FLAG_COLUMNS if c in frame.columns]).hstack(flags)
