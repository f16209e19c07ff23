"""Calibrated prediction intervals that respect physical bounds.

A task's interval is built in a transformed space where its quantity is unbounded, so the
bounds stay physical: strengths and hardness (MPa, HV; > 0) in ``log`` space, percentages
(elongation, fracture strain; 0-100 %) in ``logit`` space of the fraction. For an ensemble
of fold models with predictions ``v_1..v_K`` of one alloy (the K fold models of a bundle, or
K models of the training run that never saw the alloy), with ``f`` the transform:

- centre ``z = f(mean(v))``, spread ``s = std(f(v))`` (ddof 1);
- interval ``f⁻¹(z ∓ c·σ)`` with the scale ``σ = (s + offset)·exp(b·min(d, d_max))``
  (:class:`Normalizer`): ``offset`` is the task's median spread, ``d`` the L1 distance in
  atomic fractions from the alloy to the nearest alloy of the task's data measured at the same
  processing route and temperature band (the screen's ``<task>_nearest_distance``; unknown
  reads as ``d_max`` = :data:`DISTANCE_CAP`, the widest interval), ``b >= 0`` the task's
  distance slope (fitted on the calibration rows, 0 in bundles built before it existed), and
  ``c`` the split-conformal quantile of ``|f(y) − z| / σ`` (normalized conformal with a
  fitted difficulty model: Papadopoulos et al., J. Artif. Intell. Res. 40 (2011) 815; Lei et
  al., J. Am. Stat. Assoc. 113 (2018) 1094), one ``c`` per processing route (Mondrian
  conformal; Vovk et al., *Algorithmic Learning in a Random World*, 2005) where the route has
  enough calibration rows, else the task's pooled ``c``. ``b`` is never negative: an interval
  never narrows as the alloy moves away from the data.

:func:`ensemble` is the one implementation: the training run calibrates with it, the
predictor and ``hea-screen update`` apply it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Transform of each space: ``log`` (values > 0) or ``logit`` (percentages in (0, 100)).
SPACES: tuple[str, ...] = ("log", "logit")
#: Values are clipped into the transform's domain: strengths at least 1 (MPa, HV) and
#: percentages within [0.5, 99.5] % (a measured 0 % elongation reads as 0.5 %).
LOG_FLOOR = 1.0
PCT_CLIP = (0.5, 99.5)
#: Distance (L1 in atomic fractions) beyond which an alloy counts as this far in the interval's
#: scale; an unknown distance (no nearest-data search, no alloy measured at the condition)
#: counts as this far too.
DISTANCE_CAP = 0.5


def space_for(unit: str) -> str:
    """``logit`` for a quantity in %, else ``log``."""
    return "logit" if unit == "%" else "log"


def forward(values: np.ndarray, space: str) -> np.ndarray:
    """Values in the task's unit into the transformed space."""
    v = np.asarray(values, dtype=np.float64)
    if space == "log":
        return np.log(np.maximum(v, LOG_FLOOR))
    if space == "logit":
        p = np.clip(v, *PCT_CLIP) / 100.0
        return np.log(p / (1.0 - p))
    raise ValueError(f"unknown interval space {space!r}: choose from {', '.join(SPACES)}")


def inverse(z: np.ndarray, space: str) -> np.ndarray:
    """Back from the transformed space into the task's unit."""
    if space == "log":
        return np.exp(z)
    if space == "logit":
        return 100.0 / (1.0 + np.exp(-z))
    raise ValueError(f"unknown interval space {space!r}: choose from {', '.join(SPACES)}")


@dataclass(frozen=True)
class Normalizer:
    """A task's interval scale ``σ = (spread + offset)·exp(distance_slope·min(d, cap))`` in
    the transformed space (module docstring); ``distance_slope`` 0 makes it
    ``spread + offset``."""

    offset: float
    distance_slope: float = 0.0
    cap: float = DISTANCE_CAP

    def scale(self, spread: np.ndarray, distance: np.ndarray | None = None) -> np.ndarray:
        """σ of each row; ``distance`` per row (L1, atomic fractions; NaN or ``None``: unknown,
        counted as ``cap``)."""
        spread = np.asarray(spread, dtype=np.float64)
        if distance is None:
            d = np.full(spread.shape, self.cap)
        else:
            d = np.asarray(distance, dtype=np.float64)
            d = np.where(np.isfinite(d), np.minimum(d, self.cap), self.cap)
        return (spread + self.offset) * np.exp(self.distance_slope * d)


@dataclass(frozen=True)
class Ensemble:
    """Per row: mean (task unit), centre and spread in the transformed space."""

    mean: np.ndarray
    centre: np.ndarray
    spread: np.ndarray

    def score(
        self,
        measured: np.ndarray,
        space: str,
        norm: Normalizer,
        distance: np.ndarray | None = None,
    ) -> np.ndarray:
        """Conformal scores ``|f(y) − centre| / σ`` (σ of :class:`Normalizer`)."""
        return np.abs(forward(measured, space) - self.centre) / norm.scale(self.spread, distance)

    def bounds(
        self,
        factor: np.ndarray | float,
        space: str,
        norm: Normalizer,
        distance: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) in the task's unit of the interval ``f⁻¹(centre ∓ c·σ)``."""
        half = np.asarray(factor) * norm.scale(self.spread, distance)
        return inverse(self.centre - half, space), inverse(self.centre + half, space)


def ensemble(values: np.ndarray, space: str) -> Ensemble:
    """:class:`Ensemble` of (models, rows) predictions in the task's unit."""
    values = np.asarray(values, dtype=np.float64)
    z = forward(values, space)
    spread = z.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
    mean = values.mean(axis=0)
    return Ensemble(mean, forward(mean, space), spread)


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """Split-conformal quantile: the ``ceil((n + 1)·coverage)``-th smallest finite score
    (NaN when there is none)."""
    scores = np.sort(scores[np.isfinite(scores)])
    if len(scores) == 0:
        return math.nan
    k = min(len(scores), math.ceil((len(scores) + 1) * coverage))
    return float(scores[k - 1])
