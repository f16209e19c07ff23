"""A new version of a condition-aware bundle that has learned from the lab's measurements.

``hea-screen update --measured results.csv`` stores the measurements
(:mod:`hea_screen.planning.store`), then writes a new bundle **beside** the old one (the
old one is never touched) with:

- **recalibrated intervals** (always; needs only the core install): per task with new
  measurements, the conformal factor ``c`` of ``mean ± c·(std + offset)`` becomes the
  split-conformal quantile (at the bundle's interval, e.g. 90 %) of the old out-of-fold
  scores (``oof_predictions.csv`` of the bundle, shipped seed: ``|measured − mean| /
  (std + offset)``) together with the new scores of the *old* fold ensemble on the new
  measurements (honest test residuals: the old model never saw them);
- **refitted tree members** when the ``train`` extra (scikit-learn, skl2onnx) and the MPEA
  data are available: each fold model of an ExtraTrees / random forest / gradient boosting
  task is refitted (:data:`REFIT_TREES` trees, the family's default settings: the tuned
  settings are not in the manifest) on its fold's old training rows (the grouped folds of
  ``oof_predictions.csv``) plus the new alloys (each new alloy is left out of one fold,
  chosen by its SHA-256). The members' spread changes, so such a task is recalibrated on
  the refitted ensemble: scores ``|y − the fold model that left the row out| / (offset +
  std over the fold models)`` of every old and new row (conservative: the std includes the
  models that saw the row). Other model kinds (GP, K-NN, the transformer) keep their members and get
  the recalibration above;
- the new alloys in ``training_set.json`` (nearest-measured-alloy columns know them);
- a manifest with its own SHA-256 and ``parent`` (the old manifest's SHA-256 and path) and
  ``update`` (store imports, what was refitted, what was not and why).

The directory is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from hea_screen.compositions.features import featurize
from hea_screen.conditions import Condition
from hea_screen.errors import UserInputError
from hea_screen.extras import missing_train_extra
from hea_screen.inference.bundle import (
    OOF_FILE,
    TABULAR,
    TaskBundle,
    conformal_quantile,
    task_relpath,
)
from hea_screen.inference.bundle_files import MANIFEST_FILE, TRAINING_SET_FILE
from hea_screen.inference.design import design_matrix
from hea_screen.inference.families import make_estimator
from hea_screen.inference.predictor import TaskPredictor
from hea_screen.planning.store import bad_rows_error

#: Model families whose fold members ``update`` refits (with the train extra).
TREE_FAMILIES: tuple[str, ...] = ("extra_trees", "random_forest", "gradient_boosting")

#: Trees per refitted forest.
REFIT_TREES = 200


@dataclass
class Calibration:
    """A task's conformal factor before and after, and how the old interval did on new data."""

    old: float
    new: float
    new_rows: int
    covered_before: float


@dataclass
class UpdateResult:
    """What ``update`` wrote."""

    path: Path
    sha256: str
    parent: str
    calibration: dict[str, Calibration] = field(default_factory=dict)
    refitted: dict[str, str] = field(default_factory=dict)
    not_refitted: dict[str, str] = field(default_factory=dict)


def check_against_model(records: pl.DataFrame, predictor: TaskPredictor, source: str) -> None:
    """Refuse records of a task the bundle lacks, or at a condition outside its data; the
    error names every such row of the results file (``source``)."""
    problems = []
    for row in records.iter_rows(named=True):
        where = f"row {row['source_row']} (line {row['source_row'] + 2})"
        if row["task"] not in predictor.tasks:
            problems.append(
                f"{where}: {row['task']} is not predicted by the model (it predicts "
                f"{', '.join(predictor.tasks)})"
            )
            continue
        condition = _condition(row)
        gaps = predictor.bundle.task(row["task"]).coverage.gaps(condition)
        if gaps:
            problems.append(
                f"{where}: {row['task']} at {condition}: {'; '.join(gaps)} of the model's "
                "training data; the model lacks this condition"
            )
    if problems:
        raise bad_rows_error(source, problems)


def _condition(row: Mapping[str, Any]) -> Condition:
    return Condition.of(row["test_type"], row["temperature_c"], row["processing"])


def new_scores(
    records: pl.DataFrame, predictor: TaskPredictor
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task: conformal scores ``|y − mean| / (std + offset)`` of the records under the current
    ensemble, and whether each lies in the current calibrated interval."""
    out: dict[str, tuple[list[float], list[bool]]] = {}
    keys = ["task", "test_type", "temperature_c", "processing"]
    for key, part in records.group_by(keys, maintain_order=True):
        task = str(key[0])
        condition = _condition(dict(zip(keys, key)))
        got = predictor.predict(part["composition"], condition, [task])
        mean, y = got[f"{task}_mean"].to_numpy(), part["value"].to_numpy()
        lo, hi = got[f"{task}_lo"].to_numpy(), got[f"{task}_hi"].to_numpy()
        std = np.maximum(got[f"{task}_std"].to_numpy(), 1e-9 * (1 + np.abs(mean)))
        scale = std + predictor.bundle.task(task).interval_offset
        scores, inside = out.setdefault(task, ([], []))
        scores.extend(np.abs(y - mean) / scale)
        inside.extend((y >= lo) & (y <= hi))
    return {t: (np.asarray(s), np.asarray(i)) for t, (s, i) in out.items()}


def old_scores(bundle: TaskBundle, task: str) -> np.ndarray:
    """The bundle's out-of-fold conformal scores of ``task`` (shipped seed)."""
    if OOF_FILE not in bundle.manifest["files"]:
        return np.array([])
    oof = pl.read_csv(bundle.read(OOF_FILE))
    seed = bundle.manifest.get("protocol", {}).get("shipped_seed", oof["seed"].min())
    part = oof.filter(pl.col("property") == task, pl.col("seed") == seed)
    scale = part["predicted_std"].to_numpy() + bundle.task(task).interval_offset
    score = np.abs(part["measured"].to_numpy() - part["predicted_mean"].to_numpy()) / scale
    return score[np.isfinite(score)]


def recalibrate(
    bundle: TaskBundle, scores: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Calibration]:
    """New conformal factors of the tasks with new measurements (module docstring)."""
    out = {}
    for task, (new, inside) in scores.items():
        both = np.concatenate([old_scores(bundle, task), new])
        out[task] = Calibration(
            bundle.task(task).interval_factor,
            conformal_quantile(both, bundle.interval),
            len(new),
            float(np.mean(inside)),
        )
    return out


def _fold_of(text: str, folds: int) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % folds


@dataclass
class Refit:
    """Refitted members: relpath -> ONNX bytes, per task what was done or why not, and the
    refitted ensembles' conformal scores."""

    files: dict[str, bytes] = field(default_factory=dict)
    done: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def calibrate(self, calibration: dict[str, Calibration], coverage: float) -> None:
        """Refitted tasks get the conformal factor of their new members' scores."""
        for task, scores in self.scores.items():
            calibration[task].new = conformal_quantile(scores, coverage)


def refit_trees(bundle: TaskBundle, store_records: pl.DataFrame, tasks: list[str]) -> Refit:
    """Refit the fold models of the tree tasks among ``tasks`` (module docstring)."""
    why = missing_train_extra("refitting tree members", ("sklearn", "skl2onnx"))
    if why is not None:
        return Refit(skipped=dict.fromkeys(tasks, why))
    from hea_screen.datasets.measurements import measurements
    from hea_screen.datasets.sources import load_mpea

    try:
        mpea = measurements(load_mpea())
    except (OSError, UserInputError) as exc:
        return Refit(skipped=dict.fromkeys(tasks, f"no MPEA training data ({exc})"))
    oof = pl.read_csv(bundle.read(OOF_FILE)) if OOF_FILE in bundle.manifest["files"] else None
    out = Refit()
    for task in tasks:
        model = bundle.task(task)
        if model.kind != TABULAR or model.model not in TREE_FAMILIES or oof is None:
            out.skipped[task] = f"{model.model} members are not refitted (calibration only)"
            continue
        files, out.scores[task] = _refit_task(bundle, task, mpea, oof, store_records)
        out.files.update(files)
        out.done[task] = f"{model.model}: {len(model.files)} fold models refitted with new data"
    return out


def _refit_task(
    bundle: TaskBundle, task: str, mpea: pl.DataFrame, oof: pl.DataFrame, new: pl.DataFrame
) -> tuple[dict[str, bytes], np.ndarray]:
    """The refitted fold models of ``task`` and the conformal scores of the refitted
    ensemble: ``|y − fold model that left the row out| / std over the fold models``."""
    from skl2onnx import to_onnx

    model = bundle.task(task)
    folds = len(model.files)
    seed = bundle.manifest.get("protocol", {}).get("shipped_seed", 0)
    fold_of_row = dict(
        oof.filter(pl.col("property") == task, pl.col("seed") == seed)
        .select("mpea_row", "fold")
        .iter_rows()
    )
    old = mpea.filter(pl.col("task") == task)
    rows = pl.concat(
        [
            old.select(
                pl.col("canonical").alias("composition"),
                "temperature_c",
                "processing",
                "value",
                pl.col("mpea_row").replace_strict(fold_of_row, default=-1).alias("fold"),
            ),
            new.filter(pl.col("task") == task).select(
                "composition",
                "temperature_c",
                "processing",
                "value",
                pl.col("composition")
                .map_elements(lambda t: _fold_of(t, folds), return_dtype=pl.Int64)
                .alias("fold"),
            ),
        ],
        how="vertical_relaxed",
    )
    x = design_matrix(
        featurize(rows["composition"]), rows["temperature_c"].to_numpy(), rows["processing"]
    )
    y, fold = rows["value"].to_numpy(), rows["fold"].to_numpy()
    out, predicted = {}, []
    for k in range(folds):
        est = make_estimator(model.model, False, seed + k, REFIT_TREES)
        est.fit(x[fold != k], y[fold != k])
        out[task_relpath(task, k)] = to_onnx(est, x[:1], target_opset=17).SerializeToString()
        predicted.append(est.predict(x))
    values = np.stack(predicted)  # (folds, rows)
    held = fold >= 0
    own = values[fold[held], np.flatnonzero(held)]
    std = values[:, held].std(axis=0, ddof=1)
    scale = np.maximum(std, 1e-9 * (1 + np.abs(own))) + model.interval_offset
    return out, np.abs(y[held] - own) / scale


def _training_set(text: str, store_records: pl.DataFrame) -> str:
    """``training_set.json`` with the stored alloys added (mean value per alloy and task)."""
    data = json.loads(text)
    means = store_records.group_by("task", "composition", maintain_order=True).agg(
        pl.col("value").mean()
    )
    for task, comp, value in means.iter_rows():
        target = data["targets"].setdefault(task, {"compositions": [], "values": []})
        if comp in target["compositions"]:
            target["values"][target["compositions"].index(comp)] = value
        else:
            target["compositions"].append(comp)
            target["values"].append(value)
    return json.dumps(data)


def write_version(
    bundle: TaskBundle,
    out: Path,
    calibration: Mapping[str, Calibration],
    files: Mapping[str, bytes],
    store_records: pl.DataFrame,
    update: Mapping[str, Any],
) -> str:
    """Copy ``bundle`` to ``out`` (which must not exist) with new files, calibration and
    manifest; returns the new manifest's SHA-256."""
    if out.exists():
        raise UserInputError(f"new bundle {str(out)!r} exists: give another --out")
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bundle.path, tmp)
    try:
        manifest = json.loads(json.dumps(bundle.manifest))
        for task, cal in calibration.items():
            entry = manifest["tasks"][task]["calibration"]
            entry.update(
                factor=cal.new,
                previous_factor=cal.old,
                new_rows=cal.new_rows,
                coverage_before_on_new_rows=cal.covered_before,
            )
        changed = dict(files)
        changed[TRAINING_SET_FILE] = _training_set(
            bundle.training_set_text(), store_records
        ).encode("utf-8")
        for rel, blob in changed.items():
            (tmp / rel).write_bytes(blob)
            manifest["files"][rel] = {
                "sha256": hashlib.sha256(blob).hexdigest(),
                "bytes": len(blob),
            }
        manifest["parent"] = {"sha256": bundle.sha256, "path": str(bundle.path)}
        manifest["update"] = dict(update)
        manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        text = (json.dumps(manifest, indent=1) + "\n").encode("utf-8")
        (tmp / MANIFEST_FILE).write_bytes(text)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return hashlib.sha256(text).hexdigest()


def movement(
    old: TaskPredictor,
    new: TaskPredictor,
    compositions: pl.Series,
    condition: Condition,
    tasks: list[str],
) -> pl.DataFrame:
    """How the new bundle moved the predictions of ``compositions``: per task, old and new
    mean and calibrated interval width."""
    a = old.predict(compositions, condition, tasks)
    b = new.predict(compositions, condition, tasks)
    cols = [pl.Series("composition", a["composition"])]
    for t in tasks:
        cols += [
            a[f"{t}_mean"].alias(f"{t}_mean_before"),
            b[f"{t}_mean"].alias(f"{t}_mean_after"),
            (a[f"{t}_hi"] - a[f"{t}_lo"]).alias(f"{t}_width_before"),
            (b[f"{t}_hi"] - b[f"{t}_lo"]).alias(f"{t}_width_after"),
        ]
    return pl.DataFrame(cols)
