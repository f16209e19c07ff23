"""Experimental planning: pick a batch of alloys for the lab from predicted candidates.

Input is a frame of candidates with ``composition`` and, for every task of the objective,
``<task>_mean`` and the calibrated interval ``<task>_lo`` / ``<task>_hi`` (a ``hea-screen``
output, or :meth:`~hea_screen.inference.predictor.TaskPredictor.predict`). Steps:

1. **Objective** ``mu`` and its uncertainty ``sigma`` per candidate. ``sigma`` comes from the
   calibrated interval: ``sigma = (hi − mean) / z`` (its upper half: the lower bound is
   clipped at 0) with ``z`` the normal quantile of the bundle's interval (1.645 for 90 %).
   A single-task objective (``uts``, ``ys``, ``elongation``, ``hardness``) is in the task's
   unit; ``weighted`` is
   ``Σ w_t (mean_t − m_t) / s_t`` with the training scales of the ranking
   (:class:`~hea_screen.screening.ranking.Reference`) and ``sigma² = Σ (w_t sigma_t / s_t)²``.
2. **Acquisition** against the incumbent ``best`` (the best measured value):
   expected improvement ``EI = (mu − best) Φ(u) + sigma φ(u)``, ``u = (mu − best) / sigma``,
   or the upper confidence bound ``UCB = mu + beta · sigma``. Each pick's reason
   (:mod:`hea_screen.planning.reasons`) is stated per task in the task's unit: expected
   gain over the best measured value, chance to beat it, prediction and interval, nearest
   measured alloy; its label (``exploit``, ``explore``, ``both``) says whether its mean or
   its uncertainty ranks higher among the feasible candidates.
3. **Constraints**: per-element fraction bounds, a minimum L1 distance in atomic fractions
   to every alloy already measured, and a phase screen (:mod:`hea_screen.compositions.phase_rules`:
   ``solid-solution`` keeps Ω ≥ 1.1 and δ ≤ 6.6 %; ``fcc`` / ``bcc`` also need that VEC
   class).
4. **Batch**: greedy local penalization. The acquisition is scaled to [0, 1] over the
   feasible candidates (EI divided by its maximum, UCB min-max scaled); each
   step picks the largest ``a_i · Π_j (1 − exp(−d_ij / ell))`` over the picks ``j`` so far
   (``d`` the L1 distance, ``ell`` the diversity length), and a candidate within the
   minimum distance of a pick is excluded, so no two picks are near-duplicates.

Everything is vectorized over candidates (numpy); 10⁵ candidates plan in well under a
second beside reading the file (``benchmarks/planning_bench.py`` measures it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import polars as pl

from hea_screen.compositions.composition import SCALE, Composition, parse
from hea_screen.compositions.elements import supported_elements
from hea_screen.compositions.features import featurize
from hea_screen.compositions.phase_rules import PHASE_FLAG_COLUMNS, RISKS, phase_flags
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import Condition
from hea_screen.errors import CompositionError, UserInputError, bad_row_message, brief
from hea_screen.inference.applicability import TrainingSet
from hea_screen.inference.predictor import TaskPredictor
from hea_screen.planning.checks import check_predictions, check_text_column
from hea_screen.planning.reasons import (
    Incumbent,
    percentile_ranks,
    task_gains,
    why,
)
from hea_screen.planning.reasons import labels as reason_labels
from hea_screen.screening.ranking import Ranking, Reference

ACQUISITIONS: tuple[str, ...] = ("ei", "ucb")
PHASE_SCREENS: tuple[str, ...] = ("any", "solid-solution", "fcc", "bcc")

#: The first columns of a plan; the candidate's own columns follow.
PLAN_COLUMNS: tuple[str, ...] = (
    "pick",
    "composition",
    "reason",
    "why",
    "acquisition",
    "objective_mean",
    "objective_sigma",
    "distance_to_measured",
    "distance_to_picks",
    "nearest_measured",
)

_ROWS_PER_BLOCK = 4096


@dataclass(frozen=True)
class PlanOptions:
    """How to plan: batch size, acquisition, constraints, diversity.

    ``bounds`` maps an element to (low, high) atomic fractions; ``min_distance`` and
    ``diversity`` are L1 distances in atomic fractions (0 to 2); ``exclude_flags`` names risks
    of :data:`~hea_screen.compositions.phase_rules.RISKS` a pick must not raise.
    """

    k: int = 8
    acquisition: str = "ei"
    beta: float = 2.0
    min_distance: float = 0.05
    diversity: float = 0.3
    phase: str = "solid-solution"
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    exclude_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [f for f in self.exclude_flags if f not in RISKS]
        if unknown:
            raise UserInputError(
                f"unknown risk flag {', '.join(map(repr, unknown))}: choose from "
                f"{', '.join(RISKS)}"
            )
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise UserInputError(f"batch size {self.k!r}: need a whole number >= 1")
        if self.acquisition not in ACQUISITIONS:
            raise UserInputError(
                f"unknown acquisition {self.acquisition!r}: choose {' or '.join(ACQUISITIONS)}"
            )
        if self.phase not in PHASE_SCREENS:
            raise UserInputError(
                f"unknown phase screen {self.phase!r}: choose one of {', '.join(PHASE_SCREENS)}"
            )
        for name, value, top in (
            ("beta", self.beta, math.inf),
            ("minimum distance", self.min_distance, 2.0),
            ("diversity length", self.diversity, 2.0),
        ):
            if not (isinstance(value, (int, float)) and 0 <= value <= top) or math.isnan(value):
                raise UserInputError(f"{name} {value!r}: need a number from 0 to {top:g}")
        for el, (lo, hi) in self.bounds.items():
            if not 0 <= lo <= hi <= 1:
                raise UserInputError(f"bounds of {el}: {lo:g}-{hi:g}; need 0 <= low <= high <= 1")


@dataclass(frozen=True)
class Objective:
    """What is maximized: one task (``weights`` ``{task: 1}``) or a weighted z-score."""

    name: str
    weights: Mapping[str, float]
    reference: Reference | None = None

    @classmethod
    def of(cls, ranking: Ranking, reference: Reference | None) -> Objective:
        """The objective of a ranking: its single task, or its weighted strength+ductility."""
        strength, ductility = ranking.strength.name, ranking.ductility.name
        if ranking.objective in ("uts", "ys", "hardness"):
            return cls(strength, {strength: 1.0})
        if ranking.objective == "elongation":
            return cls(ductility, {ductility: 1.0})
        if reference is None:
            raise UserInputError("a weighted objective needs the model's training scales")
        w = dict(zip((strength, ductility), ranking.weights))
        return cls("weighted", {t: x for t, x in w.items() if x}, reference)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def _scale(self, task: str) -> tuple[float, float]:
        if self.reference is None:
            return 0.0, 1.0
        return self.reference.mean[task], self.reference.std[task]

    def of_values(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """The objective of measured (or predicted mean) values per task."""
        total = 0.0
        for t, w in self.weights.items():
            m, s = self._scale(t)
            total = total + w * (np.asarray(values[t], dtype=np.float64) - m) / s
        return np.asarray(total, dtype=np.float64)

    def mean_sigma(self, frame: pl.DataFrame, interval: float) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) per row from ``<task>_mean/_lo/_hi`` (see the module docstring)."""
        need = [f"{t}_{s}" for t in self.tasks for s in ("mean", "lo", "hi")]
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise UserInputError(
                f"candidates lack {', '.join(missing)}: give a hea-screen output "
                "(hea-screen ... --out FILE) at the plan's condition, or compositions only"
            )
        z = NormalDist().inv_cdf(0.5 + interval / 2)
        mu = self.of_values({t: frame[f"{t}_mean"].to_numpy() for t in self.tasks})
        var = np.zeros(frame.height)
        for t, w in self.weights.items():
            # the upper half of the interval: ``_lo`` is clipped at 0, ``_hi`` never is
            sigma_t = (frame[f"{t}_hi"].to_numpy() - frame[f"{t}_mean"].to_numpy()) / z
            var += (w * sigma_t / self._scale(t)[1]) ** 2
        return mu, np.sqrt(var)


_erf = np.frompyfunc(math.erf, 1, 1)


def normal_cdf(u: np.ndarray) -> np.ndarray:
    """Φ(u) of the standard normal, elementwise."""
    return 0.5 * (1.0 + _erf(np.asarray(u, dtype=np.float64) / math.sqrt(2)).astype(np.float64))


def acquisition(
    mu: np.ndarray, sigma: np.ndarray, best: float, kind: str = "ei", beta: float = 2.0
) -> np.ndarray:
    """EI or UCB per candidate (module docstring)."""
    if kind == "ucb":
        return mu + beta * sigma
    gain = mu - best
    safe = np.where(sigma > 0, sigma, 1.0)
    u = gain / safe
    exploit = np.where(sigma > 0, gain * normal_cdf(u), np.maximum(gain, 0.0))
    explore = np.where(sigma > 0, sigma * np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi), 0.0)
    return exploit + explore


_CANONICAL = r"^[A-Z][a-z]?(?:1|0\.\d{1,6})(?: [A-Z][a-z]?(?:1|0\.\d{1,6}))*$"


def table_of(texts: pl.Series) -> CompositionTable:
    """Compositions of ``texts`` as a table, fast for canonical texts (a screen's output):
    those are read with polars; any other text goes through :func:`hea_screen.parse` (whose
    error names the row)."""
    texts = texts.cast(pl.Utf8)
    frame = pl.DataFrame({"text": texts}).with_row_index("row")
    parts = (
        frame.filter(pl.col("text").str.contains(_CANONICAL))
        .with_columns(pl.col("text").str.split(" ").alias("part"))
        .explode("part")
        .with_columns(
            pl.col("part").str.extract(r"^([A-Z][a-z]?)").alias("el"),
            (pl.col("part").str.extract(r"([0-9.]+)$").cast(pl.Float64) * SCALE)
            .round()
            .cast(pl.Int64)
            .alias("micro"),
        )
    )
    known = set(supported_elements())
    sums = parts.group_by("row").agg(
        pl.col("micro").sum().alias("total"),
        pl.col("el").is_in(list(known)).all().alias("known"),
        (pl.col("el").n_unique() == pl.len()).alias("unique"),
    )
    good = sums.filter((pl.col("total") == SCALE) & pl.col("known") & pl.col("unique"))["row"]
    bad = np.setdiff1d(np.arange(len(texts)), good.to_numpy())
    if len(bad):
        slow = CompositionTable.from_compositions(_parsed(texts, bad))
    parts = parts.filter(pl.col("row").is_in(good.implode()))
    elements = sorted(set(parts["el"].unique().to_list()) | set(slow.elements if len(bad) else ()))
    col = {el: j for j, el in enumerate(elements)}
    micro = np.zeros((len(texts), len(elements)), dtype=np.int32)
    idx = np.array([col[e] for e in parts["el"].to_list()], dtype=np.intp)
    micro[parts["row"].to_numpy(), idx] = parts["micro"].to_numpy()
    if len(bad):
        micro[bad] = 0
        micro[np.ix_(bad, [col[e] for e in slow.elements])] = slow.micro
    return CompositionTable(tuple(elements), micro)


def _parsed(texts: pl.Series, rows: np.ndarray) -> list[Composition]:
    """Parse ``texts[rows]``; an error names the row of ``texts`` and the text."""
    out = []
    for r in rows:
        try:
            out.append(parse(str(texts[int(r)])))
        except CompositionError as exc:
            raise CompositionError(bad_row_message(int(r), str(texts[int(r)]), str(exc))) from None
    return out


def fractions_over(table: CompositionTable, elements: Sequence[str]) -> np.ndarray:
    """Atomic fractions of ``table`` over ``elements`` (absent columns are 0)."""
    index = {el: j for j, el in enumerate(table.elements)}
    out = np.zeros((len(table), len(elements)))
    frac = table.fractions
    for j, el in enumerate(elements):
        if el in index:
            out[:, j] = frac[:, index[el]]
    return out


def min_l1_distance(
    candidates: np.ndarray, others: np.ndarray, outside: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """L1 distance of each candidate row to its nearest ``others`` row, and that row's index
    (-1 when there is none).

    ``candidates`` and ``others`` are fractions over the candidates' palette; ``outside`` is
    each other alloy's fraction of elements outside it (it adds to every distance).
    """
    best = np.full(len(candidates), np.inf)
    index = np.full(len(candidates), -1, dtype=np.int64)
    if len(others) == 0:
        return best, index
    for start in range(0, len(candidates), _ROWS_PER_BLOCK):
        block = candidates[start : start + _ROWS_PER_BLOCK]
        d = np.abs(block[:, None, :] - others[None, :, :]).sum(axis=2) + outside[None, :]
        best[start : start + len(block)] = d.min(axis=1)
        index[start : start + len(block)] = d.argmin(axis=1)
    return best, index


def feasible(
    candidates: pl.DataFrame, fractions: np.ndarray, palette: Sequence[str], options: PlanOptions
) -> np.ndarray:
    """Mask of candidates within the bounds, the phase screen and the excluded risk flags."""
    ok = np.ones(candidates.height, dtype=bool)
    for el, (lo, hi) in options.bounds.items():
        x = fractions[:, list(palette).index(el)] if el in palette else np.zeros(len(ok))
        ok &= (x >= lo - 1e-9) & (x <= hi + 1e-9)
    if options.phase != "any":
        ok &= candidates["solid_solution"].to_numpy().astype(bool)
        if options.phase in ("fcc", "bcc"):
            ok &= candidates["vec_phase"].to_numpy() == options.phase.upper()
    for risk in options.exclude_flags:
        ok &= ~candidates[f"{risk}_risk"].to_numpy().astype(bool)
    return ok


@dataclass(frozen=True)
class Measured:
    """Alloys already measured: canonical compositions and, per task, measured values."""

    compositions: tuple[str, ...]
    values: Mapping[str, Mapping[str, float]]

    def incumbent(self, objective: Objective) -> float | None:
        """Best objective value over alloys measured on every task of the objective."""
        common = set.intersection(*(set(self.values.get(t, {})) for t in objective.tasks))
        if not common:
            return None
        rows = sorted(common)
        got = objective.of_values({t: [self.values[t][c] for c in rows] for t in objective.tasks})
        return float(np.max(got))

    def best(self, task: str) -> Incumbent | None:
        """The best measured value of ``task`` and its alloy (``None``: none measured)."""
        values = self.values.get(task, {})
        if not values:
            return None
        comp = max(sorted(values), key=lambda c: values[c])
        return Incumbent(float(values[comp]), comp)


def select(
    candidates: pl.DataFrame,
    objective: Objective,
    measured: Measured,
    options: PlanOptions,
    interval: float = 0.9,
) -> pl.DataFrame:
    """The plan: up to ``options.k`` picks of ``candidates`` (which need ``composition``,
    the objective's prediction columns and the phase-rule columns), in pick order, with
    :data:`PLAN_COLUMNS` first and every candidate column after."""
    if candidates.height == 0:
        raise UserInputError("no candidates to plan from")
    mu, sigma = objective.mean_sigma(candidates, interval)
    table = table_of(candidates["composition"])
    palette = table.elements
    x = table.fractions
    done = table_of(pl.Series(measured.compositions or ["Fe1"], dtype=pl.Utf8))
    done_x = fractions_over(done, palette)[: len(measured.compositions)]
    outside = 1.0 - done_x.sum(axis=1)
    near = outside < options.min_distance  # only these can lie within the minimum distance
    d_measured = min_l1_distance(x, done_x[near], outside[near])[0]
    best = measured.incumbent(objective)
    incumbent = float(np.nanmax(mu)) if best is None else best
    value = acquisition(mu, sigma, incumbent, options.acquisition, options.beta)
    ok = feasible(candidates, x, palette, options) & (d_measured >= options.min_distance)
    ok &= np.isfinite(value)
    if not ok.any():
        raise UserInputError(
            f"no candidate passes the constraints (phase screen {options.phase!r}, bounds "
            f"{dict(options.bounds) or 'none'}, minimum distance {options.min_distance:g} to "
            f"{len(measured.compositions)} measured alloys): relax them"
        )
    picks, d_picks = _greedy(x, value, ok, options)
    d_measured[picks], nearest = min_l1_distance(x[picks], done_x, outside)
    nearest_texts = [measured.compositions[j] if j >= 0 else None for j in nearest]
    labels = reason_labels(
        percentile_ranks(mu[picks], mu[ok]), percentile_ranks(sigma[picks], sigma[ok])
    )
    z = NormalDist().inv_cdf(0.5 + interval / 2)
    incumbents = {t: b for t in objective.tasks if (b := measured.best(t)) is not None}
    rows = candidates[picks].to_dicts()
    gains = [task_gains(row, objective.tasks, z, incumbents) for row in rows]
    plan = candidates[picks].with_columns(
        pl.Series("composition", [str(table.composition(int(i))) for i in picks]),
        pl.Series("pick", np.arange(1, len(picks) + 1), dtype=pl.Int64),
        pl.Series("reason", labels, dtype=pl.Utf8),
        pl.Series(
            "why",
            [why(r, g, d_measured[i], n) for r, g, i, n in zip(rows, gains, picks, nearest_texts)],
            dtype=pl.Utf8,
        ),
        pl.Series("acquisition", value[picks]),
        pl.Series("objective_mean", mu[picks]),
        pl.Series("objective_sigma", sigma[picks]),
        pl.Series("distance_to_measured", d_measured[picks]),
        pl.Series("distance_to_picks", d_picks),
        pl.Series("nearest_measured", nearest_texts, dtype=pl.Utf8),
        *(
            pl.Series(f"{t}_{name}", [getattr(g[j], what) for g in gains], dtype=pl.Float64)
            for j, t in enumerate(objective.tasks)
            for what, name in (("gain", "expected_gain"), ("chance", "chance_to_beat_best"))
        ),
        *(
            pl.Series(f"{t}_best_measured", [b.value] * len(picks), dtype=pl.Float64)
            for t, b in incumbents.items()
        ),
    )
    return plan.select(*PLAN_COLUMNS, pl.exclude(PLAN_COLUMNS))


def _greedy(
    x: np.ndarray, value: np.ndarray, ok: np.ndarray, options: PlanOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy local penalization (module docstring): pick indices and each pick's L1
    distance to the earlier picks (inf for the first)."""
    lo, hi = np.min(value[ok]), np.max(value[ok])
    if options.acquisition == "ei":
        lo = 0.0  # EI >= 0 scales by its maximum; UCB (in the objective's unit) by its range
    scaled = (value - lo) / (hi - lo) if hi > lo else np.ones(len(value))
    alive = ok.copy()
    penalty = np.ones(len(value))
    d_nearest = np.full(len(value), np.inf)
    picks, dists = [], []
    for _ in range(options.k):
        if not alive.any():
            break
        i = int(np.argmax(np.where(alive, scaled * penalty, -np.inf)))
        picks.append(i)
        dists.append(d_nearest[i])
        d = np.abs(x - x[i]).sum(axis=1)
        d_nearest = np.minimum(d_nearest, d)
        if options.diversity > 0:
            penalty *= 1.0 - np.exp(-d / options.diversity)
        alive &= d_nearest >= max(options.min_distance, 1e-12)
    return np.array(picks, dtype=np.int64), np.array(dists)


def measured_from_training(training: TrainingSet) -> Measured:
    """The alloys of a bundle's training set (per task: mean measured value per alloy)."""
    values = {
        name: dict(zip(ts.compositions, (float(v) for v in ts.values)))
        for name, ts in training.targets.items()
    }
    return Measured(tuple(dict.fromkeys(training.texts)), values)


def merge_measured(first: Measured, second: Measured) -> Measured:
    """Both sets of alloys; a value of ``second`` replaces that of ``first``."""
    values = {t: dict(v) for t, v in first.values.items()}
    for t, v in second.values.items():
        values.setdefault(t, {}).update(v)
    return Measured(tuple(dict.fromkeys((*first.compositions, *second.compositions))), values)


def read_candidates(path: str | Path) -> pl.DataFrame:
    """A candidates file (.csv, .parquet, .json) with at least a ``composition`` column."""
    path = Path(path)
    readers = {".csv": pl.read_csv, ".parquet": pl.read_parquet, ".json": pl.read_json}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise UserInputError(
            f"candidates {str(path)!r}: unsupported extension {path.suffix or '(none)'!r}; "
            f"use {', '.join(readers)}"
        )
    if not path.is_file():
        raise UserInputError(f"candidates {str(path)!r}: no such file")
    try:
        frame = reader(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise UserInputError(f"candidates {str(path)!r} cannot be read: {brief(exc)}") from None
    if "composition" not in frame.columns:
        raise UserInputError(
            f"candidates {str(path)!r} have no 'composition' column (columns: "
            f"{', '.join(c[:24] for c in frame.columns[:10])})"
        )
    check_text_column(frame, "composition", f"candidates {str(path)!r}")
    return frame


def predicted_at(
    frame: pl.DataFrame, condition: Condition, tasks: Sequence[str], model_sha256: str
) -> bool:
    """Whether ``frame`` already holds predictions of ``tasks`` by this model at
    ``condition`` (else the planner predicts them itself)."""
    stated = condition.describe()
    for column, value in stated.items():
        if column in frame.columns and set(frame[column].unique().to_list()) != {value}:
            raise UserInputError(
                f"candidates were screened at {column} {str(frame[column][0])[:24]!r}, the plan "
                f"is at {value!r}: screen at the plan's condition, or give compositions only"
            )
    need = [f"{t}_{s}" for t in tasks for s in ("mean", "lo", "hi")]
    if any(c not in frame.columns for c in need):
        return False
    if "model_sha256" in frame.columns and set(frame["model_sha256"].unique()) != {model_sha256}:
        return False
    check_predictions(frame, tasks, "candidates")
    return True


def with_predictions(
    frame: pl.DataFrame,
    model: Path,
    sha256: str,
    condition: Condition,
    tasks: Sequence[str],
) -> pl.DataFrame:
    """``frame`` with the predictions of ``tasks`` (and phase) by the bundle at ``model`` and
    the phase rules; a frame that already holds them (a screen's output by this bundle at
    this condition) is used as it is, without loading the model."""
    if not predicted_at(frame, condition, tasks, sha256):
        predictor = TaskPredictor(model, sha256=sha256)
        wanted = [*tasks, *(["phase"] if "phase" in predictor.tasks else [])]
        table = table_of(frame["composition"])
        feats = featurize(table)
        predicted = predictor.predict(table, condition, list(dict.fromkeys(wanted)), feats)
        keep = frame.drop([c for c in predicted.columns if c in frame.columns])
        frame = predicted.select("composition").hstack(keep).hstack(
            predicted.drop("composition")
        ).with_columns(
            pl.lit(sha256).alias("model_sha256")
        )
        return phase_flags(frame, feats)
    if not all(c in frame.columns for c in PHASE_FLAG_COLUMNS):
        frame = phase_flags(frame)
    return frame
