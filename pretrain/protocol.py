"""The product's evaluation protocol: folds grouped by alloy, per-task metrics.

Every model of a condition-aware run (transformer and baselines) is scored on the same
splits of the measurement table (:func:`hea_screen.datasets.measurements.measurements`):

- :func:`grouped_splits`: K folds **grouped by composition** (:func:`composition_groups`:
  alloys within L1 0.02 of each other share a group), so every measurement of a held-out
  alloy (all its tasks, conditions and repeats) and of its near-duplicates is held out
  together; repeated over >= 10 random partitions (one seed each), metrics reported as mean
  ± SD over partitions (one partition is a lucky or unlucky draw: MPEA tensile UTS R² ranges
  0.06-0.21 over 20 partitions of the same model). A validation part of whole groups is
  carved from each training fold for early stopping and model selection, never the test
  fold.
- :func:`cluster_splits`: leave-one-cluster-out CV for extrapolation (k-means on atomic
  fractions; Meredig et al., Mol. Syst. Des. Eng. 3 (2018) 819).

:func:`regression_metrics` scores one task on one condition slice (the headline slice is
25 °C): R², MAE, Spearman ρ and top-decile recall, never pooled across test types (each
task is one test type). :func:`classification_metrics` scores the phase task.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score

from pretrain.folds import Split


def _splits(
    fold_of_group: np.ndarray, group_of_row: np.ndarray, seed: int, val_fraction: float
) -> list[Split]:
    """One :class:`Split` per fold label: its alloys held out, a random ``val_fraction`` of the
    other alloys (drawn with ``default_rng([seed, fold])``) as the validation part."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    splits = []
    for fold in range(int(fold_of_group.max()) + 1):
        shuffled = np.random.default_rng([seed, fold]).permutation(
            np.flatnonzero(fold_of_group != fold)
        )
        n_val = max(1, round(val_fraction * len(shuffled)))
        splits.append(
            Split(
                fold,
                np.flatnonzero(np.isin(group_of_row, shuffled[n_val:])),
                np.flatnonzero(np.isin(group_of_row, shuffled[:n_val])),
                np.flatnonzero(fold_of_group[group_of_row] == fold),
            )
        )
    return splits


#: Alloys within this L1 distance in atomic fractions share a group (the same alloy written
#: with rounded amounts, e.g. Al0.3CoCrFeNi and Al0.31CoCrFeNi, never land on both sides).
GROUP_RADIUS = 0.02


def composition_groups(
    canonical: Sequence[str], fractions: np.ndarray, radius: float = GROUP_RADIUS
) -> np.ndarray:
    """Per row, the index of its composition group: connected components of the distinct
    alloys linked when their atomic fractions lie within ``radius`` in L1 (single linkage).

    ``fractions`` has one row per row of ``canonical`` (atomic fractions over a fixed palette).
    """
    _, first, alloy_of_row = np.unique(
        np.asarray(canonical, dtype=object), return_index=True, return_inverse=True
    )
    alloys = fractions[first]
    links = np.zeros((len(alloys), len(alloys)), dtype=bool)
    for i in range(len(alloys)):
        links[i] = np.abs(alloys - alloys[i]).sum(axis=1) <= radius + 1e-9
    _, label = connected_components(links, directed=False)
    return label[alloy_of_row]


def nearest_other_group(
    fractions: np.ndarray, groups: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Per row of ``rows``: the L1 distance (atomic fractions) of its alloy to the nearest alloy
    of another group among ``rows`` (2 when there is none): how far an alloy lies from the
    task's data were its group unseen."""
    out = np.full(len(rows), 2.0)
    for i, r in enumerate(rows):
        other = rows[groups[rows] != groups[r]]
        if len(other):
            out[i] = np.abs(fractions[other] - fractions[r]).sum(axis=1).min()
    return out


def grouped_splits(
    groups: Sequence[str], n_folds: int = 5, seed: int = 0, val_fraction: float = 0.15
) -> list[Split]:
    """K folds of rows grouped by ``groups`` (:func:`composition_groups`), shuffled by ``seed``.

    Alloys are permuted with ``numpy.random.default_rng(seed)`` and dealt to the folds in
    turn, so fold sizes differ by at most one alloy. Row indices refer to ``groups``.
    """
    names, group_of_row = np.unique(np.asarray(groups, dtype=object), return_inverse=True)
    if len(names) < n_folds:
        raise ValueError(f"{len(names)} alloys cannot make {n_folds} grouped folds")
    fold_of_group = np.empty(len(names), dtype=np.int64)
    fold_of_group[np.random.default_rng(seed).permutation(len(names))] = (
        np.arange(len(names)) % n_folds
    )
    return _splits(fold_of_group, group_of_row, seed, val_fraction)


def cluster_splits(
    groups: Sequence[str],
    fractions: np.ndarray,
    n_clusters: int = 5,
    seed: int = 0,
    val_fraction: float = 0.15,
) -> list[Split]:
    """Leave-one-cluster-out splits: k-means (``n_clusters``) on the atomic fractions of the
    distinct alloys; fold ``k`` holds out every row of cluster ``k``.

    ``fractions`` has one row per row of ``groups`` (atomic fractions over a fixed palette).
    """
    _, first, group_of_row = np.unique(
        np.asarray(groups, dtype=object), return_index=True, return_inverse=True
    )
    labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(fractions[first])
    return _splits(labels.astype(np.int64), group_of_row, seed, val_fraction)


def noise_ceiling(alloys: Sequence[str], routes: Sequence[str], values: np.ndarray) -> float:
    """The best R² a model of composition and route can reach on these rows: ``1 − σ²_rep /
    σ²``, with ``σ²_rep`` the pooled variance of repeated measurements of one (alloy, route)
    (``Σ SS_g / Σ (n_g − 1)`` over groups measured at least twice: replicates disagree by that
    much whatever the model) and ``σ²`` the variance of all rows (both ddof 1). NaN without
    replicates."""
    y = np.asarray(values, dtype=np.float64)
    keys = np.unique(
        np.array([f"{a}|{r}" for a, r in zip(alloys, routes)], dtype=object), return_inverse=True
    )[1]
    counts = np.bincount(keys)
    repeated = counts[keys] >= 2
    if len(y) < 2 or np.var(y) == 0 or not repeated.any():
        return math.nan
    means = np.bincount(keys, weights=y) / counts
    within = np.sum((y[repeated] - means[keys][repeated]) ** 2) / np.sum(counts[counts >= 2] - 1)
    return float(1 - within / np.var(y, ddof=1))


def top_decile_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Of the alloys truly in the top 10 % (at least one), the share the model ranks in its
    top 10 %: ``|top(y) ∩ top(ŷ)| / |top(y)|`` with ``ceil(0.1 n)`` rows in each top set."""
    n = len(y_true)
    if n == 0:
        return math.nan
    k = max(1, math.ceil(0.1 * n))
    true_top = set(np.argsort(-y_true, kind="stable")[:k].tolist())
    pred_top = set(np.argsort(-y_pred, kind="stable")[:k].tolist())
    return len(true_top & pred_top) / k


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``n``, ``r2``, ``mae`` (task units), ``spearman`` and ``top_decile_recall``."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if len(y_true) < 3:
        nan = math.nan
        return {"n": len(y_true), "r2": nan, "mae": nan, "spearman": nan, "top_decile_recall": nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant prediction has no rank correlation
        rho = spearmanr(y_true, y_pred).statistic
    return {
        "n": len(y_true),
        "r2": float(r2_score(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "spearman": float(rho) if np.isfinite(rho) else math.nan,
        "top_decile_recall": top_decile_recall(y_true, y_pred),
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``n``, ``accuracy`` and ``balanced_accuracy`` of predicted class indices."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = np.asarray(y_pred).astype(int)
    if len(y_true) == 0:
        return {"n": 0, "accuracy": math.nan, "balanced_accuracy": math.nan}
    return {
        "n": len(y_true),
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
    }
