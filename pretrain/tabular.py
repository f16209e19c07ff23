"""Tabular members and baselines of the condition-aware run, on :mod:`hea_screen.inference.design`
inputs.

Families (:data:`FAMILIES`, built by :func:`hea_screen.inference.families.make_estimator`,
the one definition that ``hea-screen update`` refits with), each a scikit-learn estimator that
skl2onnx converts to ONNX. The ExtraTrees families (``extra_trees``, ``extra_trees_plain``,
``extra_trees_blend``: every forest of :data:`~hea_screen.inference.families.FOREST_PREFIXES`)
are tuned on the validation part of the training fold over :data:`ET_GRID` (features per split,
minimum leaf size), then refitted on the whole training fold. Every regression family predicts
in the task's own unit; selection compares families on the validation part only
(:func:`fit_family`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from hea_screen.inference.families import FOREST_PREFIXES, forest_params, make_estimator
from pretrain.config import TABULAR_FAMILIES

FAMILIES: tuple[str, ...] = TABULAR_FAMILIES

LABELS: dict[str, str] = {
    "extra_trees": "ExtraTrees (tuned on validation part)",
    "random_forest": "Random Forest",
    "gradient_boosting": "Gradient Boosting",
    "gp_noise": "Gaussian Process (+ noise term)",
    "knn": "K-NN",
    "extra_trees_plain": "ExtraTrees without grain size (tuned)",
    "extra_trees_blend": "ExtraTrees with + without grain size, mean (tuned)",
    "transformer": "Transformer (multi-task, condition tokens)",
}

#: ExtraTrees grid searched on the validation part (features tried per split). Leaves of at
#: least 2 rows keep the exported ONNX files small (a leaf per row doubles the nodes).
ET_GRID: tuple[dict[str, Any], ...] = tuple(
    {"max_features": mf, "min_samples_leaf": 2} for mf in (0.33, 0.66, 1.0)
)


def row_losses(model: BaseEstimator, x: np.ndarray, y: np.ndarray, classify: bool) -> np.ndarray:
    """Each row's squared error (regression, task units²) or log-loss (classification)."""
    if classify:
        return log_losses(predict_proba(model, x), y)
    return (model.predict(x) - y) ** 2


def log_losses(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's log-loss ``-log p(label)`` of (rows, classes) probabilities, ``p`` clipped
    to [1e-6, 1] (the one loss every phase model is compared on)."""
    picked = proba[np.arange(len(labels)), labels.astype(int)]
    return -np.log(np.clip(picked, 1e-6, 1.0))


def predict_proba(model: BaseEstimator, x: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """Class probabilities over ``0..n_classes-1`` even when training lacked a class."""
    out = np.zeros((len(x), n_classes))
    classes = model.classes_ if not isinstance(model, Pipeline) else model[-1].classes_
    out[:, classes.astype(int)] = model.predict_proba(x)
    return out


@dataclass(frozen=True)
class FamilyFit:
    """A family fitted on a whole training fold, with its parameters and each validation
    row's loss under the chosen settings."""

    family: str
    model: BaseEstimator
    params: dict[str, Any]
    val_losses: np.ndarray

    @property
    def val_loss(self) -> float:
        """The validation loss: the mean of :attr:`val_losses`."""
        return float(np.mean(self.val_losses))


def _fit(model: BaseEstimator, x: np.ndarray, y: np.ndarray) -> BaseEstimator:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def fit_family(
    family: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    classify: bool,
    seed: int,
    n_estimators: int,
    monotonic: Sequence[int] | None = None,
) -> FamilyFit:
    """Fit on the training part, score on the validation part (tuning the ExtraTrees families
    there, :data:`ET_GRID` on each of their forests; the chosen ``params`` are recorded as
    ``set_params`` keys of the family), then refit the chosen settings on training +
    validation parts; ``monotonic`` constrains the forests
    (:func:`hea_screen.inference.families.make_estimator`)."""
    base = make_estimator(family, classify, seed, n_estimators, monotonic)
    grid = [forest_params(family, p) for p in ET_GRID] if family in FOREST_PREFIXES else [{}]
    scored = []
    for params in grid:
        model = _fit(clone(base).set_params(**params), x_train, y_train)
        losses = row_losses(model, x_val, y_val, classify)
        scored.append((float(np.mean(losses)), params, losses))
    _, params, losses = min(scored, key=lambda s: s[0])
    final = _fit(
        clone(base).set_params(**params),
        np.vstack([x_train, x_val]),
        np.concatenate([y_train, y_val]),
    )
    return FamilyFit(family, final, dict(params), losses)
