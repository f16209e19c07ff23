"""The cross-validation splits every model of a run is scored on.

The outer split is the paper's: ``KFold(n_splits=5, shuffle=True, random_state=42)``.
Model selection (early stopping, checkpoint choice, hyper-parameter tuning) only ever sees
a validation part carved from the training fold, never the test fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold


@dataclass(frozen=True)
class Split:
    """One outer fold: ``train`` + ``val`` form the training fold; ``test``: held out."""

    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def train_full(self) -> np.ndarray:
        """The whole training fold (train + validation), sorted."""
        return np.sort(np.concatenate([self.train, self.val]))

    def as_json(self) -> dict[str, object]:
        return {
            "fold": self.fold,
            "train": self.train.tolist(),
            "val": self.val.tolist(),
            "test": self.test.tolist(),
        }


def cv_splits(
    n_rows: int, n_folds: int = 5, seed: int = 42, val_fraction: float = 0.15
) -> list[Split]:
    """Outer K-fold splits, each with a validation part carved from its training fold.

    The validation rows are drawn with a generator seeded by ``seed + fold``, so splits are
    identical for every model of a run.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    kfold = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits = []
    for fold, (train_full, test) in enumerate(kfold.split(np.arange(n_rows))):
        rng = np.random.default_rng(seed + fold)
        shuffled = rng.permutation(train_full)
        n_val = max(1, round(val_fraction * len(train_full)))
        splits.append(
            Split(fold, np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val]), np.sort(test))
        )
    return splits
