"""Why a pick was picked, in the units of the lab: MPa, %, HV.

For every task ``t`` of the objective, with the pick's predicted mean ``μ_t``, its
calibrated interval ``[lo_t, hi_t]``, ``σ_t = (hi_t − μ_t) / z`` (the upper half of the 90 %
interval, as the planner reads it) and the best measured value ``b_t`` (the incumbent of
that task):

- **expected gain** ``E[max(y − b_t, 0)] = (μ_t − b_t) Φ(u) + σ_t φ(u)``, ``u = (μ_t − b_t) /
  σ_t``: the expected improvement over the best measured value, in the task's unit
  (Jones, Schonlau & Welch, J. Global Optim. 13 (1998) 455);
- **chance** ``Φ(u)`` that the pick beats the best measured value.

The label of a pick says which side of the acquisition chose it, relative to the feasible
candidates it was chosen from (percentiles of the objective's mean and uncertainty among
them):

- ``both``: its predicted mean and its uncertainty are both in the top 10 %;
- ``exploit``: otherwise, when its mean ranks above its uncertainty (picked mainly for how
  good the model predicts it to be);
- ``explore``: otherwise (picked mainly for how little the model knows about it: measuring
  it teaches the model most).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hea_screen.conditions import TASKS_BY_NAME
from hea_screen.screening.columns import at_pct, interval, quantity, task_name

#: Percentile from which the mean or the uncertainty counts as high (``both``).
TOP = 0.9


def percentile_ranks(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Share of ``among`` at or below each of ``values`` (0 to 1)."""
    ordered = np.sort(among[np.isfinite(among)])
    if len(ordered) == 0:
        return np.zeros(len(values))
    return np.searchsorted(ordered, values, side="right") / len(ordered)


def labels(mean_rank: np.ndarray, sigma_rank: np.ndarray) -> list[str]:
    """``exploit``, ``explore`` or ``both`` from the percentiles of mean and uncertainty
    (module docstring)."""
    out = []
    for m, s in zip(mean_rank, sigma_rank):
        if m >= TOP and s >= TOP:
            out.append("both")
        else:
            out.append("exploit" if m >= s else "explore")
    return out


def _cdf(u: float) -> float:
    return 0.5 * (1.0 + math.erf(u / math.sqrt(2)))


def expected_gain(mu: float, sigma: float, best: float) -> tuple[float, float]:
    """(expected improvement over ``best`` in the task's unit, chance of beating it)."""
    if not sigma > 0:
        return max(mu - best, 0.0), float(mu > best)
    u = (mu - best) / sigma
    pdf = math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    return (mu - best) * _cdf(u) + sigma * pdf, _cdf(u)


@dataclass(frozen=True)
class Incumbent:
    """The best measured value of one task and the alloy that holds it."""

    value: float
    composition: str


@dataclass(frozen=True)
class TaskGain:
    """One task's part of a pick's reason."""

    task: str
    gain: float
    chance: float
    best: Incumbent | None


def task_gains(
    row: Mapping[str, object], tasks: Sequence[str], z: float, best: Mapping[str, Incumbent]
) -> list[TaskGain]:
    """Expected gain and chance per task for one candidate row (``<task>_mean``, ``_hi``)."""
    out = []
    for t in tasks:
        mu, hi = float(row[f"{t}_mean"]), float(row[f"{t}_hi"])  # type: ignore[arg-type]
        b = best.get(t)
        if b is None:
            out.append(TaskGain(t, math.nan, math.nan, None))
            continue
        gain, chance = expected_gain(mu, (hi - mu) / z, b.value)
        out.append(TaskGain(t, gain, chance, b))
    return out


def why(
    row: Mapping[str, object],
    gains: Sequence[TaskGain],
    distance: float,
    nearest: str | None,
) -> str:
    """One sentence: per task the expected gain over the best measured value, the chance to
    beat it and the prediction with its 90 % interval; then the nearest measured alloy."""
    parts = []
    for g in gains:
        task = TASKS_BY_NAME[g.task]
        unit = task.unit
        pred = interval(row[f"{g.task}_mean"], row[f"{g.task}_lo"], row[f"{g.task}_hi"], unit)
        if g.best is None:
            parts.append(f"{task_name(task)} {pred} {unit} (no measured value to beat)")
            continue
        chance = f"{100 * g.chance:.0f} %"
        parts.append(
            f"{task_name(task)} +{quantity(g.gain, unit)} {unit} expected over the best "
            f"measured {quantity(g.best.value, unit)} {unit} ({chance} chance to beat it); "
            f"predicted {pred} {unit}"
        )
    if nearest is None or not math.isfinite(distance):
        parts.append("no measured alloy to compare")
    else:
        parts.append(f"nearest measured alloy {at_pct(nearest)} at L1 {distance:.2f}")
    return "; ".join(parts)
