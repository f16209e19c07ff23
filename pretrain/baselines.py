"""Classical baselines on the transformer's folds and inputs (the paper's Tables 2, 3 and 6).

Every model is scored on the *same* outer folds as the transformer
(:func:`pretrain.folds.cv_splits` on the rows of ``RUN/finetune/<target>/dataset.csv``), is
fitted on the whole training fold (``Split.train_full``) and scored on the test fold only.

Inputs, as in the paper: the 14 features of :func:`hea_screen.featurize` of the canonical
composition followed by the atomic fraction of every element of the dataset's palette
(input mode ``features``); mode ``composition`` uses the fractions alone (the paper's
Table 6 "No Features" baselines; model names get a ``-composition`` suffix). Features are
standardized with a ``StandardScaler`` fitted on the training fold, and so is the target;
MSE, MAE and R² are computed on the test fold in those standardized units.

Models (:data:`MODEL_LABELS`): scikit-learn defaults as in the paper, except that a seed is
passed where an estimator is random, so runs repeat exactly. Two additions:

- ``gaussian_process_noise``: the scikit-learn default GP (``C * RBF`` with alpha 1e-10)
  must interpolate every training row, duplicates with different values included, and
  collapses on these noisy sets; the same GP with a ``WhiteKernel`` noise term, all
  hyper-parameters fitted by marginal likelihood on the training fold, is what a
  practitioner would run.
- ``extra_trees_tuned``: ExtraTrees tuned by a small grid (:data:`TUNING_GRID`) with an
  inner K-fold cross-validation *inside the training fold only*; the inner splits are
  recorded, in dataset row numbers, in ``RUN/baselines/<target>/tuning.json``.

Outputs (written atomically):

- rows appended to ``RUN/cv_results.csv``: ``experiment, model, target, fold, protocol, mse,
  mae, r2`` with ``experiment="baseline"`` and ``protocol="honest"`` (earlier rows of the same
  experiment, model, target and protocol are replaced, so a rerun does not duplicate);
- ``RUN/baselines/<target>/<model>_predictions.csv``: ``fold, row, composition, y_true,
  y_pred`` (original units), the test predictions of every fold;
- with ``repeat_seeds``, ``RUN/baselines/repeats.csv``: the same metrics over other outer
  splits (``seed`` column), to show the split-to-split spread.

Configuration (:class:`BaselineConfig`, or a training config / mapping whose ``baselines``
section holds these names; ``finetune.folds``, ``finetune.targets`` and the top-level
``seed`` of a training config are followed, see :meth:`BaselineConfig.from_config`):
``n_folds`` (5), ``seed`` (42; the outer KFold seed shared with fine-tuning), ``models``,
``inputs`` (``features``, ``composition``), ``repeat_seeds`` (extra outer seeds),
``inner_folds`` (3) and ``tuned_n_estimators`` (200) for the tuned model, ``targets``
(default: every ``RUN/finetune/<target>/dataset.csv``).

Run standalone on a run directory or on any CSV with a composition and a target column::

    python -m pretrain.baselines --run RUN
    python -m pretrain.baselines --data my.csv --target uts_mpa --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.base import RegressorMixin
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from hea_screen.compositions.features import FEATURE_NAMES, featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.datasets.sources import sha256_file
from hea_screen.errors import UserInputError
from pretrain.atomic import write_csv_atomic, write_text_atomic
from pretrain.baseline_config import INPUT_MODES, MODEL_LABELS, BaselineConfig
from pretrain.cv_results import CV_COLUMNS, CV_SCHEMA, HONEST, merge_cv_results
from pretrain.finetune_data import FinetuneDataset
from pretrain.folds import Split, cv_splits
from pretrain.run_dir import RunDir

log = logging.getLogger(__name__)


#: Grid of the tuned ExtraTrees.
TUNING_GRID: dict[str, list[Any]] = {
    "max_features": [1.0, 0.5, 0.3],
    "min_samples_leaf": [1, 2, 4],
}

EXPERIMENT = "baseline"
REPEATS_FILE = "repeats.csv"
TUNING_FILE = "tuning.json"


def read_dataset(
    path: str | Path, target: str | None = None, composition_column: str = "composition"
) -> FinetuneDataset:
    """Read a CSV with a composition column and a numeric target column.

    ``target`` names the target column; if omitted, the file must have exactly one column
    besides the composition (or one named ``target``). The target keeps the column's name,
    except that a column literally named ``target`` takes the name of the file's folder (as
    in ``RUN/finetune/<target>/dataset.csv``).
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"dataset file {path} does not exist")
    frame = pl.read_csv(path, infer_schema_length=None)
    if composition_column not in frame.columns:
        raise UserInputError(
            f"{path} has no composition column {composition_column!r}; "
            f"columns: {', '.join(frame.columns)}"
        )
    others = [c for c in frame.columns if c != composition_column]
    if target is None:
        if path.parent.name in others:
            target = path.parent.name
        elif len(others) == 1:
            target = others[0]
        elif "target" in others:
            target = "target"
        else:
            raise UserInputError(f"{path}: name the target column, one of {', '.join(others)}")
    if target not in others:
        raise UserInputError(
            f"{path} has no target column {target!r}; columns: {', '.join(frame.columns)}"
        )
    try:
        y = frame[target].cast(pl.Float64).to_numpy()
    except pl.exceptions.InvalidOperationError as err:
        raise UserInputError(f"{path}: target column {target!r} is not numeric") from err
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise UserInputError(
            f"{path}: target column {target!r} is missing or not finite in rows {bad[:10].tolist()}"
        )
    if len(y) < 10:
        raise UserInputError(
            f"{path}: {len(y)} rows are too few for cross-validated baselines (need 10)"
        )
    table = CompositionTable.from_compositions(frame[composition_column].cast(pl.Utf8).to_list())
    name = path.parent.name if target == "target" else target
    texts = table.canonical_texts().to_list()
    return FinetuneDataset(name, texts, y, table, featurize(table))


def design_matrix(
    table: CompositionTable, mode: str, features: pl.DataFrame | None = None
) -> tuple[np.ndarray, list[str]]:
    """Input matrix and column names: 14 features + fractions (``features``) or fractions only.

    ``features`` is ``featurize(table)`` when already computed."""
    fractions = table.fractions
    names = [f"x_{el}" for el in table.elements]
    if mode == "composition":
        return fractions, names
    feats = (featurize(table) if features is None else features).select(FEATURE_NAMES).to_numpy()
    return np.hstack([feats, fractions]), [*FEATURE_NAMES, *names]


def make_model(name: str, seed: int) -> RegressorMixin:
    """An untuned estimator with scikit-learn defaults (seeded where random)."""
    if name == "gaussian_process":
        return GaussianProcessRegressor(random_state=seed)
    if name == "gaussian_process_noise":
        kernel = ConstantKernel() * RBF() + WhiteKernel()
        return GaussianProcessRegressor(kernel=kernel, random_state=seed)
    if name == "random_forest":
        return RandomForestRegressor(random_state=seed)
    if name == "knn":
        return KNeighborsRegressor()
    if name == "decision_tree":
        return DecisionTreeRegressor(random_state=seed)
    if name == "gradient_boosting":
        return GradientBoostingRegressor(random_state=seed)
    raise UserInputError(f"unknown baseline model {name!r}: choose from {', '.join(MODEL_LABELS)}")


@dataclass(frozen=True)
class Tuning:
    """What the tuned model's search saw in one outer fold (row numbers of the dataset)."""

    model: str
    fold: int
    best_params: dict[str, Any]
    inner_splits: list[tuple[list[int], list[int]]]

    def rows_seen(self) -> set[int]:
        """Every dataset row the grid search fitted or scored on."""
        return {r for train, val in self.inner_splits for r in (*train, *val)}

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fold": self.fold,
            "best_params": self.best_params,
            "inner_splits": [{"train": t, "val": v} for t, v in self.inner_splits],
        }


def tune_extra_trees(
    x: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    fold: int,
    config: BaselineConfig,
    model: str = "extra_trees_tuned",
) -> tuple[ExtraTreesRegressor, Tuning]:
    """Grid-search ExtraTrees by inner K-fold CV over ``rows`` only; refit on all of ``rows``.

    ``x`` and ``y`` hold every dataset row (already scaled with the outer training fold's
    scalers); only ``x[rows]``, ``y[rows]`` are passed to the search.
    """
    inner = KFold(n_splits=config.inner_folds, shuffle=True, random_state=config.seed + fold)
    positions = list(inner.split(rows))
    search = GridSearchCV(
        ExtraTreesRegressor(n_estimators=config.tuned_n_estimators, random_state=config.seed),
        TUNING_GRID,
        cv=positions,
        scoring="neg_mean_squared_error",
        n_jobs=1,
        refit=True,
    )
    search.fit(x[rows], y[rows])
    splits = [(rows[t].tolist(), rows[v].tolist()) for t, v in positions]
    best = {
        k: (v.item() if isinstance(v, np.generic) else v) for k, v in search.best_params_.items()
    }
    return search.best_estimator_, Tuning(model, fold, best, splits)


@dataclass
class BaselineResult:
    """Metrics rows, pooled test predictions per model, tuning records of one dataset."""

    metrics: list[dict[str, Any]]
    predictions: dict[str, pl.DataFrame]
    tuning: list[Tuning]


def evaluate(
    dataset: FinetuneDataset, splits: Sequence[Split], config: BaselineConfig
) -> BaselineResult:
    """Fit every configured model on each ``train_full`` and score it on ``test``."""
    metrics: list[dict[str, Any]] = []
    predictions: dict[str, list[pl.DataFrame]] = {}
    tuning: list[Tuning] = []
    for mode in config.inputs:
        x_all, _ = design_matrix(dataset.table, mode, dataset.features)
        for split in splits:
            train, test = split.train_full, split.test
            if np.intersect1d(train, test).size:
                raise ValueError(f"fold {split.fold}: training and test rows overlap")
            x_scaler = StandardScaler().fit(x_all[train])
            y_scaler = StandardScaler().fit(dataset.y[train, None])
            x = x_scaler.transform(x_all)
            y = y_scaler.transform(dataset.y[:, None]).ravel()
            for name in config.models:
                key = name + INPUT_MODES[mode]
                with warnings.catch_warnings():
                    # the GP's marginal-likelihood fit warns when a length scale hits a bound
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    if name == "extra_trees_tuned":
                        model, record = tune_extra_trees(x, y, train, split.fold, config, key)
                        tuning.append(record)
                    else:
                        model = make_model(name, config.seed).fit(x[train], y[train])
                y_pred = np.asarray(model.predict(x[test]), dtype=np.float64).ravel()
                metrics.append(_metric_row(key, dataset.target, split.fold, y[test], y_pred))
                predictions.setdefault(key, []).append(
                    pl.DataFrame(
                        {
                            "fold": np.full(test.size, split.fold, dtype=np.int64),
                            "row": test.astype(np.int64),
                            "composition": [dataset.compositions[i] for i in test],
                            "y_true": dataset.y[test],
                            "y_pred": y_scaler.inverse_transform(y_pred[:, None]).ravel(),
                        }
                    )
                )
        log.info("baselines (%s inputs) done for %s", mode, dataset.target)
    pooled = {k: pl.concat(v).sort("row") for k, v in predictions.items()}
    return BaselineResult(metrics, pooled, tuning)


def _metric_row(
    model: str, target: str, fold: int, y_true: np.ndarray, y_pred: np.ndarray
) -> dict[str, Any]:
    return {
        "experiment": EXPERIMENT,
        "model": model,
        "target": target,
        "fold": fold,
        "protocol": HONEST,
        "mse": float(mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def _metrics_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CV_SCHEMA)


def run_dataset(
    dataset: FinetuneDataset, out_dir: str | Path, config: BaselineConfig
) -> pl.DataFrame:
    """Run the baselines on one dataset and write every output under ``out_dir`` (a run dir)."""
    out_dir = Path(out_dir)
    target_dir = out_dir / "baselines" / dataset.target
    splits = cv_splits(len(dataset), n_folds=config.n_folds, seed=config.seed)
    result = evaluate(dataset, splits, config)
    for model, frame in result.predictions.items():
        write_csv_atomic(frame, target_dir / f"{model}_predictions.csv")
    if result.tuning:
        payload = {
            "grid": TUNING_GRID,
            "n_estimators": config.tuned_n_estimators,
            "inner_folds": config.inner_folds,
            "folds": [t.as_json() for t in result.tuning],
        }
        write_text_atomic(target_dir / TUNING_FILE, json.dumps(payload, indent=1))
    metrics = _metrics_frame(result.metrics)
    merge_cv_results(RunDir(out_dir).cv_results, metrics)
    if config.repeat_seeds:
        _run_repeats(dataset, out_dir, config)
    return metrics


def _run_repeats(dataset: FinetuneDataset, out_dir: Path, config: BaselineConfig) -> None:
    frames = []
    for seed in config.repeat_seeds:
        splits = cv_splits(len(dataset), n_folds=config.n_folds, seed=seed)
        result = evaluate(dataset, splits, config)
        metrics = _metrics_frame(result.metrics)
        frames.append(metrics.with_columns(pl.lit(seed, pl.Int64).alias("seed")))
        log.info("repeat split seed %d done for %s", seed, dataset.target)
    new = pl.concat(frames).select("seed", *CV_COLUMNS)
    path = out_dir / "baselines" / REPEATS_FILE
    if path.exists():
        old = pl.read_csv(path, schema_overrides={"fold": pl.Int64, "seed": pl.Int64})
        new = pl.concat([old.filter(pl.col("target") != dataset.target).select(new.columns), new])
    write_csv_atomic(new, path)


def run_targets(run_dir: Path, config: BaselineConfig) -> list[str]:
    """The targets to run: ``config.targets`` or every ``finetune/<target>/dataset.csv``."""
    if config.targets is not None:
        return list(config.targets)
    found = sorted(p.parent.name for p in RunDir(run_dir).finetune.glob("*/dataset.csv"))
    if not found:
        raise UserInputError(
            f"no finetune/<target>/dataset.csv under {run_dir}: prepare the fine-tuning data first"
        )
    return found


def run_baselines(run_dir: str | Path, config: object | None = None) -> pl.DataFrame:
    """Baselines for every target of a run; returns the cv_results rows written."""
    run_dir = Path(run_dir)
    settings = BaselineConfig.from_config(config)
    frames = []
    for target in run_targets(run_dir, settings):
        path = RunDir(run_dir).dataset_csv(target)
        dataset = read_dataset(path, target=None)
        if dataset.target != target:
            raise UserInputError(
                f"{path}: expected a target column {target!r} (or 'target'), "
                f"found {dataset.target!r}"
            )
        frames.append(run_dataset(dataset, run_dir, settings))
    return pl.concat(frames)


def run_on_csv(
    data: str | Path,
    target: str,
    out_dir: str | Path,
    config: BaselineConfig,
    composition_column: str = "composition",
) -> pl.DataFrame:
    """Standalone: baselines on any CSV, laid out like a run (so the report can read it)."""
    data, out_dir = Path(data), Path(out_dir)
    dataset = read_dataset(data, target, composition_column)
    frame = pl.DataFrame({"composition": dataset.compositions, dataset.target: dataset.y})
    write_csv_atomic(frame, RunDir(out_dir).dataset_csv(dataset.target))
    meta = {"source": str(data.resolve()), "sha256": sha256_file(data), "rows": len(dataset)}
    write_text_atomic(RunDir(out_dir).dataset_json(dataset.target), json.dumps(meta, indent=1))
    return run_dataset(dataset, out_dir, config)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.baselines", description=__doc__.split("\n")[0]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", type=Path, help="run directory with finetune/<target>/dataset.csv")
    where.add_argument("--data", type=Path, help="any CSV with a composition and a target column")
    parser.add_argument("--target", help="target column of --data")
    parser.add_argument("--composition-column", default="composition")
    parser.add_argument("--out", type=Path, help="output directory for --data")
    parser.add_argument(
        "--models", nargs="+", default=list(MODEL_LABELS), help=", ".join(MODEL_LABELS)
    )
    parser.add_argument(
        "--inputs", nargs="+", default=list(INPUT_MODES), help=", ".join(INPUT_MODES)
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--repeat-seeds", type=int, nargs="*", default=[], help="extra outer split seeds"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = BaselineConfig(
            n_folds=args.folds,
            seed=args.seed,
            models=tuple(args.models),
            inputs=tuple(args.inputs),
            repeat_seeds=tuple(args.repeat_seeds),
        )
        if args.run is not None:
            rows = run_baselines(args.run, config)
        else:
            if args.target is None or args.out is None:
                raise UserInputError("--data needs --target COLUMN and --out DIR")
            rows = run_on_csv(args.data, args.target, args.out, config, args.composition_column)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = rows.group_by("target", "model").agg(
        pl.col("r2").mean().alias("r2_mean"), pl.col("r2").std().alias("r2_std")
    )
    print(summary.sort("target", "r2_mean", descending=[False, True]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
