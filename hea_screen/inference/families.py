"""The tabular model families a bundle's members come from, with the settings they are
trained and refitted with (one definition for ``hea-train conditions`` and ``hea-screen
update``).

- ``extra_trees``: ExtraTrees (the training run tunes ``max_features`` and leaf size on the
  validation part of each training fold, ``pretrain.tabular``);
- ``random_forest``: Random Forest, leaves of at least 2 rows;
- ``gradient_boosting``: scikit-learn defaults (seeded);
- ``gp_noise``: Gaussian process ``C·RBF + White`` (a noise term, all hyper-parameters by
  marginal likelihood) on standardized inputs, ``normalize_y``;
- ``knn``: 5 nearest neighbours on standardized inputs.

For the phase task the same families classify (GP and K-NN as classifiers too). Forests
(``extra_trees``, ``random_forest``) of a regression task take ``monotonic`` (scikit-learn's
``monotonic_cst``, :func:`hea_screen.inference.design.monotonic_constraints` for strength and
hardness: finer grains never predict a lower value, Hall-Petch); the other families are
unconstrained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Family names, in the order reports list them.
FAMILIES: tuple[str, ...] = (
    "extra_trees",
    "random_forest",
    "gradient_boosting",
    "gp_noise",
    "knn",
)


def make_estimator(
    family: str,
    classify: bool,
    seed: int,
    n_estimators: int,
    monotonic: Sequence[int] | None = None,
) -> Any:
    """An unfitted scikit-learn estimator of ``family`` (see module docstring); needs the
    ``train`` extra (scikit-learn), imported here so the light install never loads it.
    ``monotonic`` constrains the forests of a regression task."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.gaussian_process import GaussianProcessClassifier, GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    forest: dict[str, Any] = {"n_estimators": n_estimators, "random_state": seed, "n_jobs": 1}
    if monotonic is not None and not classify:
        forest["monotonic_cst"] = list(monotonic)
    if family == "extra_trees":
        cls = ExtraTreesClassifier if classify else ExtraTreesRegressor
        return cls(**forest)
    if family == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        return cls(min_samples_leaf=2, **forest)
    if family == "gradient_boosting":
        cls = GradientBoostingClassifier if classify else GradientBoostingRegressor
        return cls(random_state=seed)
    if family == "gp_noise":
        if classify:
            return make_pipeline(
                StandardScaler(),
                GaussianProcessClassifier(ConstantKernel() * RBF(), random_state=seed),
            )
        kernel = ConstantKernel() * RBF() + WhiteKernel()
        return make_pipeline(
            StandardScaler(),
            GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=seed),
        )
    if family == "knn":
        cls = KNeighborsClassifier if classify else KNeighborsRegressor
        return make_pipeline(StandardScaler(), cls())
    raise ValueError(f"unknown family {family!r}: choose from {', '.join(FAMILIES)}")
