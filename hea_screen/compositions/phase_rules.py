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
``brittle_risk``    bool       tensile-brittle refractory alloy: at least half refractory
                               elements (Ti, Zr, Hf, V, Nb, Ta, Cr, Mo, W, Re), BCC by VEC
                               (< 6.87) and VEC ≥ 4.5; single-phase BCC refractory alloys are
                               tensile-ductile only below VEC ≈ 4.5 (Sheikh et al., J. Appl.
                               Phys. 120 (2016) 164902); e.g. NbMoTaW (VEC 5.5) is flagged
``sigma_risk``      bool       σ-phase risk: 6.88 ≤ VEC ≤ 7.84 with at least 5 at.% of the
                               σ formers Cr + V (Tsai et al., Mater. Res. Lett. 1 (2013) 207)
``laves_risk``      bool       Laves / intermetallic risk: δ > 5.0 % (Yurchenko, Stepanov &
                               Salishchev, Mater. Sci. Technol. 33 (2017) 17; their rule also
                               asks Δχ(Allen) > 7 %, not applied here: this project tabulates
                               Pauling values, so the flag errs on the side of flagging)
``risk_flags``      text       the raised risks, comma separated (``brittle``, ``sigma``,
                               ``laves``), empty when none
==================  =========  ===============================================================

:data:`RISKS` names the three risks; ``hea-screen plan --exclude-flags`` drops candidates
that raise any of those given.

The rules are screens, not predictions: they were fitted on cast alloys and are wrong for a
good share of them; the risk flags stand where the measured data are thin (few tensile tests
of refractory alloys, no phase fractions). The learned phase probabilities
(``phase_<class>_prob``) come from the model bundle's ``phase`` task where it has one.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable, to_table

#: Thresholds of the rules (Yang & Zhang 2012; Guo et al. 2011).
OMEGA_MIN = 1.1
DELTA_MAX_PCT = 6.6
VEC_FCC_MIN = 8.0
VEC_BCC_MAX = 6.87
#: Sheikh et al. 2016: BCC refractory alloys are tensile-ductile below this VEC (e/atom).
DUCTILE_VEC_MAX = 4.5
#: Elements counted as refractory by the brittleness rule (Senkov et al.'s refractory HEAs).
REFRACTORY = ("Cr", "Hf", "Mo", "Nb", "Re", "Ta", "Ti", "V", "W", "Zr")
#: Tsai et al. 2013: σ forms in Cr- and V-bearing alloys with VEC in this range (e/atom).
SIGMA_VEC = (6.88, 7.84)
SIGMA_FORMERS = ("Cr", "V")
SIGMA_FORMERS_MIN = 0.05
#: Yurchenko et al. 2017: Laves phases form above this size mismatch δ (%).
LAVES_DELTA_MIN_PCT = 5.0
#: The risks :func:`risk_columns` flags, as named in ``risk_flags``.
RISKS: tuple[str, ...] = ("brittle", "sigma", "laves")
#: Rounding slack of the VEC comparisons (features are float32: Cantor's VEC 8 reads 7.9999995).
_VEC_SLACK = 1e-5

#: Columns :func:`phase_flags` adds, in order.
PHASE_FLAG_COLUMNS: tuple[str, ...] = (
    "omega",
    "delta_r",
    "solid_solution",
    "vec",
    "vec_phase",
    "brittle_risk",
    "sigma_risk",
    "laves_risk",
    "risk_flags",
)

#: ``references`` of the rules, for reports.
REFERENCES: tuple[str, ...] = (
    "Ω ≥ 1.1 and δ ≤ 6.6 %: X. Yang, Y. Zhang, Mater. Chem. Phys. 132 (2012) 233",
    "VEC ≥ 8 FCC, VEC < 6.87 BCC: S. Guo et al., J. Appl. Phys. 109 (2011) 103505",
    "BCC refractory alloys tensile-brittle for VEC ≥ 4.5: S. Sheikh et al., J. Appl. Phys. "
    "120 (2016) 164902",
    "σ phase for 6.88 ≤ VEC ≤ 7.84 with Cr/V: M.-H. Tsai et al., Mater. Res. Lett. 1 (2013) 207",
    "Laves phase for δ > 5 %: N. Yurchenko, N. Stepanov, G. Salishchev, Mater. Sci. Technol. "
    "33 (2017) 17",
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


def _share(table: CompositionTable, elements: tuple[str, ...]) -> np.ndarray:
    """Summed atomic fraction of ``elements`` in every row of ``table``."""
    cols = [j for j, e in enumerate(table.elements) if e in elements]
    return table.fractions[:, cols].sum(axis=1)


def risk_columns(table: CompositionTable, features: pl.DataFrame) -> pl.DataFrame:
    """``brittle_risk``, ``sigma_risk``, ``laves_risk`` and ``risk_flags`` (module docstring)
    of the compositions of ``table`` with their :func:`~hea_screen.featurize` ``features``."""
    vec = features["vec"].to_numpy()
    bcc = vec < VEC_BCC_MAX - _VEC_SLACK
    risks = {
        "brittle": (_share(table, REFRACTORY) >= 0.5) & bcc & (vec >= DUCTILE_VEC_MAX - _VEC_SLACK),
        "sigma": (vec >= SIGMA_VEC[0] - _VEC_SLACK)
        & (vec <= SIGMA_VEC[1] + _VEC_SLACK)
        & (_share(table, SIGMA_FORMERS) >= SIGMA_FORMERS_MIN),
        "laves": features["delta_r"].to_numpy() > LAVES_DELTA_MIN_PCT,
    }
    names = np.array(RISKS)
    stacked = np.column_stack([risks[r] for r in RISKS])
    text = [",".join(names[row]) for row in stacked]
    return pl.DataFrame(
        {
            **{f"{r}_risk": pl.Series(risks[r], dtype=pl.Boolean) for r in RISKS},
            "risk_flags": pl.Series(text, dtype=pl.Utf8),
        }
    )


def phase_flags(frame: pl.DataFrame, features: pl.DataFrame | None = None) -> pl.DataFrame:
    """``frame`` (with a ``composition`` column) plus :data:`PHASE_FLAG_COLUMNS`.

    ``features`` are the frame's features when already computed (same row order); columns
    of those names already in ``frame`` are replaced.
    """
    table = to_table(frame["composition"])
    feats = featurize(table) if features is None else features
    flags = rule_columns(feats).hstack(risk_columns(table, feats))
    return frame.drop([c for c in PHASE_FLAG_COLUMNS if c in frame.columns]).hstack(flags)
