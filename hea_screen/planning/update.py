"""A new version of a condition-aware bundle that has learned from the lab's measurements.

``hea-screen update --measured results.csv`` stores the measurements
(:mod:`hea_screen.planning.store`), then writes a new bundle **beside** the old one (the
old one is never touched) with:

- **recalibrated intervals** (always; needs only the core install): per task with new
  measurements, the pooled conformal factor ``c`` of the interval
  (:mod:`hea_screen.inference.intervals`) is recomputed from scores whose mean and spread
  never saw the row, the spread the screen applies to an unseen alloy: the bundle's
  out-of-fold scores (``oof_predictions.csv``, first partition: ``|f(measured) − centre| /
  σ``, an ensemble of partition models that never saw the row's group, σ the interval's
  scale at the row's ``distance`` column) and the new measurements scored by the *old* fold
  ensemble (which never saw them), at their distance to the old training data when the
  interval's scale depends on it (the nearest-data search of the screen). The new
  factor is the split-conformal quantile of both, but never below the quantile of the
  out-of-fold scores alone: new rows the old intervals covered cannot shrink ``c`` below
  what the full out-of-fold set supports. The route factors scale with the pooled one.
  :class:`Calibration` keeps the arithmetic (rows, quantile rank, both quantiles) and the
  command prints it;
- **refitted tree members** when the ``train`` extra (scikit-learn, skl2onnx) and the MPEA
  data are available: each fold model of an ExtraTrees (any of
  :data:`~hea_screen.inference.families.FOREST_PREFIXES`) / random forest / gradient boosting
  task is refitted with the shipped settings (``refit`` in the task's manifest entry: trees,
  tuned parameters, monotonic grain-size constraint) on its fold's old training rows (the
  grouped folds of ``oof_predictions.csv``) plus the new alloys (each new alloy is left out
  of one fold, chosen by its SHA-256). The calibration above applies to them (the refitted
  members' own residuals would be scored by models that saw the rows). Other model kinds
  (GP, K-NN, the transformer) keep their members;
- the new alloys in ``training_set.json`` (nearest-measured-alloy columns know them); for a
  task whose members were kept, its ``learned`` count stays what the members learned, so the
  interval of a candidate next to a lab alloy they never saw keeps its width
  (:mod:`hea_screen.inference.applicability`);
- a manifest with its own SHA-256 and ``parent`` (the old manifest's SHA-256 and path) and
  ``update`` (store imports, what was refitted, what was not and why).

The directory is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Collection, Iterator, Mapping
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
    task_relpath,
)
from hea_screen.inference.bundle_files import MANIFEST_FILE, TRAINING_SET_FILE
from hea_screen.inference.design import design_matrix, monotonic_constraints
from hea_screen.inference.families import FOREST_PREFIXES, make_estimator
from hea_screen.inference.intervals import Ensemble, conformal_quantile, forward
from hea_screen.inference.predictor import TaskPredictor
from hea_screen.planning.store import READ_ROWS, bad_rows_error, distinct

#: Model families whose fold members ``update`` refits (with the train extra).
TREE_FAMILIES: tuple[str, ...] = (*FOREST_PREFIXES, "random_forest", "gradient_boosting")

#: Trees per refitted forest when the manifest records no setting (bundles before ``refit``).
REFIT_TREES = 200

#: Records predicted at a time when scoring new measurements (bounds memory).
SCORE_BATCH = 65_536

#: Compositions whose movement ``update`` reports (the rows it prints).
MOVEMENT_ROWS = 20


@dataclass
class Calibration:
    """A task's conformal factor before and after, how the old interval did on new data and
    the arithmetic: out-of-fold and new rows, the quantile's rank among all scores, the
    quantile of the out-of-fold scores alone and of all scores."""

    old: float
    new: float
    new_rows: int
    covered_before: float
    oof_rows: int = 0
    rank: int = 0
    oof_quantile: float = float("nan")
    all_quantile: float = float("nan")

    def arithmetic(self, coverage: float) -> str:
        """The recalibration in one line, for the command's report."""
        n = self.oof_rows + self.new_rows
        return (
            f"c = max(q_oof, q_all) = max({self.oof_quantile:.3g}, {self.all_quantile:.3g}) "
            f"= {self.new:.3g}; q_all is score #{self.rank} of {n} sorted "
            f"(ceil((n + 1)·{coverage:g})), {self.oof_rows} out-of-fold + {self.new_rows} new"
        )


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
    error names every such row of the results file (``source``). Each distinct task and
    condition is checked once."""
    keys = ["task", "test_type", "temperature_c", "processing"]
    messages: dict[tuple[Any, ...], str] = {}
    for row in distinct(records, keys).iter_rows(named=True):
        if row["task"] not in predictor.tasks:
            messages[tuple(row.values())] = (
                f"{row['task']} is not predicted by the model (it predicts "
                f"{', '.join(predictor.tasks)})"
            )
            continue
        condition = _condition(row)
        gaps = predictor.bundle.task(row["task"]).coverage.gaps(condition)
        if gaps:
            messages[tuple(row.values())] = (
                f"{row['task']} at {condition}: {'; '.join(gaps)} of the model's "
                "training data; the model lacks this condition"
            )
    if not messages:
        return
    failing = pl.DataFrame(list(messages), schema=records.select(keys).schema, orient="row")
    bad = records.join(failing, on=keys, how="semi", maintain_order="left")
    problems = [
        f"row {r} (line {r + 2}): {messages[tuple(key)]}"
        for *key, r in bad.select(*keys, "source_row").iter_rows()
    ]
    raise bad_rows_error(source, problems)


def _condition(row: Mapping[str, Any]) -> Condition:
    return Condition.of(row["test_type"], row["temperature_c"], row["processing"])


def new_scores(
    records: pl.DataFrame, predictor: TaskPredictor
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task: conformal scores ``|f(y) − centre| / σ`` of the records under the current
    ensemble (which never saw them), read back from its calibrated interval (``f(lo)``,
    ``f(hi)`` = centre ∓ c·σ), and whether each lies in it. With the nearest-data search
    only where the task's σ depends on the distance (it then reads the distance as the
    screen does); each task and condition's records (in file order) are predicted in batches
    of :data:`SCORE_BATCH`, gathered from slices of the records as they come, so no
    condition's records are copied whole."""
    keys = ["task", "test_type", "temperature_c", "processing"]
    pending: dict[tuple[Any, ...], list[pl.DataFrame]] = {}  # by first appearance
    done: dict[tuple[Any, ...], list[tuple[np.ndarray, np.ndarray]]] = {}

    def score(key: tuple[Any, ...], part: pl.DataFrame) -> None:
        task, condition = str(key[0]), _condition(dict(zip(keys, key)))
        model = predictor.bundle.task(task)
        got = predictor.predict(
            part["composition"], condition, [task], applicability=model.distance_slope > 0
        )
        y = part["value"].to_numpy()
        lo, hi = got[f"{task}_lo"].to_numpy(), got[f"{task}_hi"].to_numpy()
        z_lo, z_hi = forward(lo, model.interval_space), forward(hi, model.interval_space)
        half = (z_hi - z_lo) / 2 / model.factor(condition.processing)
        scores = np.abs(forward(y, model.interval_space) - (z_lo + z_hi) / 2) / half
        done.setdefault(key, []).append((scores, (y >= lo) & (y <= hi)))

    for block in records.select(*keys, "composition", "value").iter_slices(SCORE_BATCH):
        for key, group in block.partition_by(keys, maintain_order=True, as_dict=True).items():
            queue = pending.setdefault(key, [])
            queue.append(group.select("composition", "value"))
            if sum(q.height for q in queue) >= SCORE_BATCH:
                rows = pl.concat(queue)
                while rows.height >= SCORE_BATCH:
                    score(key, rows.head(SCORE_BATCH))
                    rows = rows.slice(SCORE_BATCH)
                queue[:] = [rows]
    for key, queue in pending.items():
        rows = pl.concat(queue)
        if rows.height:
            score(key, rows)
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for key in pending:
        out.setdefault(str(key[0]), []).extend(done.get(key, []))
    return {
        t: (np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts]))
        for t, parts in out.items()
    }


def old_scores(bundle: TaskBundle, task: str) -> np.ndarray:
    """The bundle's out-of-fold conformal scores of ``task`` (first partition, one per row; at
    each row's ``distance`` where the file has the column, else at the widest scale)."""
    if OOF_FILE not in bundle.manifest["files"]:
        return np.array([])
    oof = pl.read_csv(bundle.read(OOF_FILE))
    part = oof.filter(pl.col("property") == task, pl.col("partition") == oof["partition"].min())
    model = bundle.task(task)
    ens = Ensemble(
        part["predicted_mean"].to_numpy(), part["centre"].to_numpy(), part["spread"].to_numpy()
    )
    distance = part["distance"].to_numpy() if "distance" in part.columns else None
    score = ens.score(part["measured"].to_numpy(), model.interval_space, model.normalizer, distance)
    return score[np.isfinite(score)]


def recalibrate(
    bundle: TaskBundle, scores: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Calibration]:
    """New conformal factors of the tasks with new measurements (module docstring)."""
    out = {}
    for task, (new, inside) in scores.items():
        old = old_scores(bundle, task)
        both = np.concatenate([old, new])
        q_all = conformal_quantile(both, bundle.interval)
        q_oof = conformal_quantile(old, bundle.interval) if len(old) else q_all
        finite = int(np.isfinite(both).sum())
        out[task] = Calibration(
            bundle.task(task).interval_factor,
            max(q_oof, q_all),
            len(new),
            float(np.mean(inside)),
            len(old),
            min(finite, math.ceil((finite + 1) * bundle.interval)),
            q_oof,
            q_all,
        )
    return out


def _fold_of(text: str, folds: int) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % folds


@dataclass
class Refit:
    """Refitted members: relpath -> ONNX bytes, per task what was done or why not."""

    files: dict[str, bytes] = field(default_factory=dict)
    done: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


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
        out.files.update(_refit_task(bundle, task, mpea, oof, store_records))
        out.done[task] = f"{model.model}: {len(model.files)} fold models refitted with new data"
    return out


def _refit_task(
    bundle: TaskBundle, task: str, mpea: pl.DataFrame, oof: pl.DataFrame, new: pl.DataFrame
) -> dict[str, bytes]:
    """The refitted fold models of ``task`` (ONNX bytes by relative path), with the shipped
    settings of the manifest's ``refit`` entry."""
    from skl2onnx import to_onnx

    model = bundle.task(task)
    folds = len(model.files)
    settings = bundle.manifest["tasks"][task].get("refit", {})
    seed = bundle.manifest.get("protocol", {}).get("shipped_seed", 0)
    fold_of_row = dict(
        oof.filter(pl.col("property") == task, pl.col("partition") == oof["partition"].min())
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
                "grain_size_um",
                "value",
                pl.col("mpea_row").replace_strict(fold_of_row, default=-1).alias("fold"),
            ),
            new.filter(pl.col("task") == task).select(
                "composition",
                "temperature_c",
                "processing",
                pl.lit(None, dtype=pl.Float64).alias("grain_size_um"),
                "value",
                pl.col("composition")
                .replace_strict(
                    {t: _fold_of(t, folds) for t in new["composition"].unique()},
                    return_dtype=pl.Int64,
                )
                .alias("fold"),
            ),
        ],
        how="vertical_relaxed",
    )
    x = design_matrix(
        featurize(rows["composition"]),
        rows["temperature_c"].to_numpy(),
        rows["processing"],
        rows["grain_size_um"].fill_null(np.nan).to_numpy(),
    )
    y, fold = rows["value"].to_numpy(), rows["fold"].to_numpy()
    monotonic = monotonic_constraints() if settings.get("monotonic") else None
    params = settings.get("params", [{}] * folds)
    out = {}
    for k in range(folds):
        est = make_estimator(
            model.model, False, seed + k, settings.get("n_estimators", REFIT_TREES), monotonic
        ).set_params(**params[k])
        est.fit(x[fold != k], y[fold != k])
        out[task_relpath(task, k)] = to_onnx(est, x[:1], target_opset=17).SerializeToString()
    return out


#: Rows of new training compositions turned into JSON text at a time (bounds memory).
JSON_CHUNK = 50_000

#: Records of a task grouped at a time, about, when merging the training set (bounds memory).
MERGE_ROWS = 32_768


def _training_set_parts(
    text: str, store_records: pl.DataFrame, refitted: Collection[str]
) -> Iterator[str]:
    """``training_set.json`` with the stored alloys added (mean value per alloy and task, and
    per alloy, task and ``ROUTE|band`` of the condition), as pieces of text to write in
    order. A task in ``refitted`` (its members learned every stored alloy) loses its
    ``learned`` count; another task with stored alloys keeps it, or gains it as its number
    of alloys before the new ones are appended. The file's own alloys are updated in Python
    (a few hundred); the new ones are merged as columns and turned into JSON
    :data:`JSON_CHUNK` at a time, so memory does not grow with Python objects per record.
    The text is exactly ``json.dumps`` of the merged document (keys in insertion order,
    existing keys updated in place)."""
    data = json.loads(text)
    columns = ["test_type", "temperature_c", "processing"]
    conditions = distinct(store_records, columns)
    keys = conditions.with_columns(
        pl.Series(
            "key",
            [_condition(r).measured_key for r in conditions.iter_rows(named=True)],
            dtype=pl.Utf8,
        )
    )
    records = store_records.select("task", "composition", *columns, "value")

    def merged(task: str, old: pl.Series, known: bool) -> tuple[pl.DataFrame, pl.Series]:
        """The task's alloys in ``old`` (``known``) or the others, one row each, and their
        order of first appearance (row numbers: the frame is left unsorted, sorting would
        copy it): ``value``, the mean; ``key`` and ``at_values``, the mean per condition
        key (keys in order of first appearance). The records are keyed slice by slice (a
        join of millions of records holds all their keys) and grouped in parts of about
        :data:`MERGE_ROWS` records, split by a hash of the alloy (a group-by of 10^6 alloys
        held 0.2 GB); a mean sees its alloy's values in file order either way."""
        rows = pl.concat(
            part.filter(pl.col("task") == task, pl.col("composition").is_in(old) == known)
            .join(keys, on=columns, how="left", maintain_order="left")
            .select("composition", "key", "value")
            for part in records.iter_slices(READ_ROWS)
        ).with_row_index("first")
        pieces = [rows]
        if rows.height > MERGE_ROWS:
            split = (pl.col("composition").hash() % -(-rows.height // MERGE_ROWS)).alias("_part")
            pieces = rows.with_columns(split).partition_by("_part", include_key=False)
        del rows
        out = []
        while pieces:
            rows = pieces.pop()
            means = rows.group_by("composition", maintain_order=True).agg(
                pl.col("first").first(), pl.col("value").mean()
            )
            at = (
                rows.group_by("composition", "key", maintain_order=True)
                .agg(pl.col("value").mean())
                .group_by("composition", maintain_order=True)
                .agg("key", pl.col("value").alias("at_values"))
            )
            assert at["composition"].equals(means["composition"])
            out.append(means.with_columns(at["key"], at["at_values"]))
        alloys = pl.concat(out)
        return alloys.drop("first"), alloys["first"].arg_sort()

    # Lists of new alloys stand in the document as placeholders: json.dumps of the (small)
    # document, split at them, and the new items streamed in between, one task at a time.
    tails: list[tuple[list[Any], str, pl.Series, str]] = []
    for task in distinct(records, ["task"])["task"].to_list():
        target = data["targets"].setdefault(
            task, {"compositions": [], "values": [], "measured_at": []}
        )
        if task in refitted:
            target.pop("learned", None)
        else:
            target.setdefault("learned", len(target["compositions"]))
        where: dict[str, int] = {c: i for i, c in enumerate(target["compositions"])}
        old = pl.Series(list(where), dtype=pl.Utf8)
        known, order = merged(task, old, True)
        has_at = "measured_at" in target
        for comp, value, at_keys, at_values in known[order].iter_rows():
            target["values"][where[comp]] = value
            if has_at:
                target["measured_at"][where[comp]].update(zip(at_keys, at_values))
        for name in ("compositions", "values", *(("measured_at",) if has_at else ())):
            tails.append((target[name], task, old, name))
            target[name] = f"\x00{len(tails) - 1}\x00"
    skeleton = re.split(r'"\\u0000(\d+)\\u0000"', json.dumps(data))
    yield skeleton[0]
    current: tuple[str, tuple[pl.DataFrame, pl.Series]] | None = None
    for number, after in zip(skeleton[1::2], skeleton[2::2]):
        items, task, old, name = tails[int(number)]
        if current is None or current[0] != task:
            current = new = None  # one task's new alloys in memory at a time
            current = (task, merged(task, old, False))
        new, order = current[1]
        yield "["
        first = json.dumps(items)[1:-1]
        yield first
        sep = ", " if first else ""
        wanted = new.select(
            {"compositions": ["composition"], "values": ["value"]}.get(name, ["key", "at_values"])
        )
        for start in range(0, len(order), JSON_CHUNK):
            part = wanted[order.slice(start, JSON_CHUNK)]  # in order of first appearance
            if name == "compositions":
                chunk = part["composition"].to_list()
            elif name == "values":
                chunk = part["value"].to_list()
            else:
                chunk = [
                    dict(zip(k, v)) if k is not None else {}
                    for k, v in zip(part["key"].to_list(), part["at_values"].to_list())
                ]
            if chunk:
                yield sep + json.dumps(chunk)[1:-1]
                sep = ", "
        yield "]" + after


def _training_set(text: str, store_records: pl.DataFrame, refitted: Collection[str]) -> str:
    """The whole text of :func:`_training_set_parts` (small bundles and tests)."""
    return "".join(_training_set_parts(text, store_records, refitted))


def write_training_set(
    text: str, store_records: pl.DataFrame, path: Path, refitted: Collection[str]
) -> tuple[str, int]:
    """Write :func:`_training_set_parts` to ``path``; returns ``(sha256 hex, bytes)`` as the
    manifest entry needs them."""
    digest, size = hashlib.sha256(), 0
    with open(path, "wb") as f:
        for piece in _training_set_parts(text, store_records, refitted):
            blob = piece.encode("utf-8")
            digest.update(blob)
            size += len(blob)
            f.write(blob)
    return digest.hexdigest(), size


def write_version(
    bundle: TaskBundle,
    out: Path,
    calibration: Mapping[str, Calibration],
    files: Mapping[str, bytes],
    store_records: pl.DataFrame,
    update: Mapping[str, Any],
) -> str:
    """Copy ``bundle`` to ``out`` (which must not exist) with new files, calibration and
    manifest (``update``: its entry, whose ``refitted`` names the tasks whose members learned
    every stored alloy); returns the new manifest's SHA-256."""
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
                factor_by_route={
                    r: c * cal.new / cal.old for r, c in entry["factor_by_route"].items()
                },
                previous_factor=cal.old,
                new_rows=cal.new_rows,
                coverage_before_on_new_rows=cal.covered_before,
            )
        digest, size = write_training_set(
            bundle.training_set_text(),
            store_records,
            tmp / TRAINING_SET_FILE,
            update["refitted"],
        )
        manifest["files"][TRAINING_SET_FILE] = {"sha256": digest, "bytes": size}
        for rel, blob in files.items():
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
    """How the new bundle moved the predictions of the first :data:`MOVEMENT_ROWS`
    ``compositions`` (what ``update`` prints; only those are predicted): per task, old and
    new mean and calibrated interval width (without the nearest-data search: a task whose
    interval scale depends on the distance is compared at its widest scale, the same on both
    sides)."""
    compositions = compositions.head(MOVEMENT_ROWS)
    a = old.predict(compositions, condition, tasks, applicability=False)
    b = new.predict(compositions, condition, tasks, applicability=False)
    cols = [pl.Series("composition", a["composition"])]
    for t in tasks:
        cols += [
            a[f"{t}_mean"].alias(f"{t}_mean_before"),
            b[f"{t}_mean"].alias(f"{t}_mean_after"),
            (a[f"{t}_hi"] - a[f"{t}_lo"]).alias(f"{t}_width_before"),
            (b[f"{t}_hi"] - b[f"{t}_lo"]).alias(f"{t}_width_after"),
        ]
    return pl.DataFrame(cols)
