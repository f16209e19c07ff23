"""The tabular model families a bundle's members come from, with the settings they are
trained and refitted with (one definition for ``hea-train conditions`` and ``hea-screen
update``).

- ``extra_trees``: ExtraTrees (the training run tunes ``max_features`` and leaf size on the
  validation part of each training fold, ``pretrain.tabular``);
- ``random_forest``: Random Forest, leaves of at least 2 rows;
- ``gradient_boosting``: scikit-learn defaults (seeded);
- ``gp_noise``: Gaussian process ``C·RBF + White`` (a noise term, all hyper-parameters by
  marginal likelihood) on standardized inputs, ``normalize_y``;
- ``knn``: 5 nearest neighbours on standardized inputs;
- ``extra_trees_plain``: ExtraTrees blind to the grain columns (:data:`GRAIN_COLUMNS`): a
  scikit-learn ``Pipeline`` that keeps the other design columns, so it reads the same design
  matrix (bundle and screen unchanged); tuned like ``extra_trees``;
- ``extra_trees_blend``: the mean of ``extra_trees`` and ``extra_trees_plain`` (a
  ``VotingRegressor``; for phase a soft ``VotingClassifier``, the mean of the probabilities),
  both halves tuned with the same settings.

Whether the grain columns help differs by task and route (cast and annealed rows rarely
state a grain size); the run ships, per task, the family with the lowest mean validation
loss over all folds and partitions (``pretrain.condition_eval.select``).

For the phase task the same families classify (GP and K-NN as classifiers too). Forests
(``extra_trees``, ``random_forest``, the grain half of ``extra_trees_blend``) of a regression
task take ``monotonic`` (scikit-learn's ``monotonic_cst``,
:func:`hea_screen.inference.design.monotonic_constraints` for strength and hardness: finer
grains never predict a lower value, Hall-Petch; ``extra_trees_plain`` is constant in grain
size, so the blend stays monotonic); the other families are unconstrained.

:data:`FOREST_PREFIXES` names where a family's ExtraTrees parameters live, so one tuning grid
(``pretrain.tabular.ET_GRID``) and the parameters recorded in a bundle's manifest
(``hea-screen update`` refits with them) address every ExtraTrees family the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hea_screen.inference.design import DESIGN_COLUMNS, GRAIN_COLUMNS

#: Family names, in the order reports list them.
FAMILIES: tuple[str, ...] = (
    "extra_trees",
    "random_forest",
    "gradient_boosting",
    "gp_noise",
    "knn",
    "extra_trees_plain",
    "extra_trees_blend",
)

#: Per ExtraTrees family, the parameter prefixes of its forests (``set_params`` keys are
#: prefix + parameter name).
FOREST_PREFIXES: dict[str, tuple[str, ...]] = {
    "extra_trees": ("",),
    "extra_trees_plain": ("trees__",),
    "extra_trees_blend": ("grain__", "plain__trees__"),
}

#: Indices of the design columns ``extra_trees_plain`` reads (all but the grain columns).
PLAIN_COLUMNS: tuple[int, ...] = tuple(
    i for i, c in enumerate(DESIGN_COLUMNS) if c not in GRAIN_COLUMNS
)


def forest_params(family: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of an ExtraTrees forest as ``set_params`` keys of every forest of
    ``family`` (one of :data:`FOREST_PREFIXES`)."""
    return {p + k: v for p in FOREST_PREFIXES[family] for k, v in params.items()}


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
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
        VotingClassifier,
        VotingRegressor,
    )
    from sklearn.gaussian_process import GaussianProcessClassifier, GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler

    forest: dict[str, Any] = {"n_estimators": n_estimators, "random_state": seed, "n_jobs": 1}
    if monotonic is not None and not classify:
        forest["monotonic_cst"] = list(monotonic)
    trees = ExtraTreesClassifier if classify else ExtraTreesRegressor
    if family == "extra_trees":
        return trees(**forest)
    if family in ("extra_trees_plain", "extra_trees_blend"):
        keep = ColumnTransformer([("keep", "passthrough", list(PLAIN_COLUMNS))], remainder="drop")
        unconstrained = {k: v for k, v in forest.items() if k != "monotonic_cst"}
        plain = Pipeline([("keep", keep), ("trees", trees(**unconstrained))])
        if family == "extra_trees_plain":
            return plain
        halves = [("grain", trees(**forest)), ("plain", plain)]
        return (
            VotingClassifier(halves, voting="soft", flatten_transform=False)
            if classify
            else VotingRegressor(halves)
        )
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
