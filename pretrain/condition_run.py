"""The condition-aware run: every model on the whole MPEA database, scored per task.

``hea-train conditions`` (after ``pretrain``) evaluates, on the measurement table of
:func:`hea_screen.datasets.measurements.measurements` (one row per alloy, task, condition, value):

- the tabular families of :mod:`pretrain.tabular` (one model per task on
  :mod:`hea_screen.inference.design` inputs: 14 features, test temperature, processing route,
  grain size with a missing indicator; strength models monotonic in grain size), and
- the multi-task transformer of :mod:`pretrain.multitask` (one network for every task,
  condition tokens, pre-trained by MLM), where ``conditions.transformer`` is on,

on the protocol of :mod:`pretrain.protocol`: 5 folds grouped by composition (alloys within
L1 0.02 share a group), repeated over ``seeds`` (random partitions; the transformer on the
first ``transformer_partitions``, the tabular ``costly_families`` on the first
``costly_partitions``); a validation part of whole alloys carved from each training fold
decides early stopping, ExtraTrees' settings and which model a task ships with; the test
fold is only ever predicted. Then leave-one-cluster-out folds (k-means on atomic
fractions) for extrapolation, every tabular family (costly ones too: it is one partition,
and the one test of extrapolation, where a smooth kernel model may differ most from trees).

Selection (:func:`select`): per task, the model with the lowest mean validation loss over
all folds and the seeds it ran on. Calibration (:func:`calibrate`): a row's ensemble is its
out-of-fold predictions of the first ``folds`` partitions (all it has for a model on fewer:
the transformer, a costly family; each made by a model that never saw the
alloy, trained on a random (K−1)/K of the others: the spread the K shipped fold models have
for a candidate); the 90 % interval is that of :mod:`hea_screen.inference.intervals` (log
space for strengths, logit for percentages, so the bounds are physical; a scale that grows
with the distance to the task's data at the condition; one conformal factor per route with
enough rows); its coverage is measured cross-conformally (fitted on the other folds, every
partition's fold assignment), per route and per distance band
(:mod:`pretrain.condition_calibration`).

Outputs in ``RUN/conditions/`` (written atomically; a finished seed is not redone: a family
added to ``conditions.families`` later is fitted alone and appended to each finished
``seed_<s>.parquet`` and ``loco.parquet``, its fold models written under ``models/``; the
families already there are never refitted; a partition gets no costly family past
``costly_partitions``, and records a file holds beyond what the config asks for (a costly
family fitted under an earlier, wider config) stay in the file but take no part in
selection, calibration, metrics or the tables, so a resumed run reports what a fresh run
would):

- ``seed_<s>.parquet``: out-of-fold predictions of every model (``model, seed, fold,
  mpea_row, task, predicted, val_loss``), ``loco.parquet`` the same for cluster folds;
- ``models/<model>/<task>/fold_<k>.onnx``: the tabular fold models of the first seed
  (skl2onnx; no pickle), whose ONNX outputs are that seed's ``predicted`` values;
- ``oof_predictions.csv`` (the bundle's): one row per evaluated measurement and partition of
  the shipped model of its task (columns in :func:`pretrain.condition_eval.oof_table`:
  ``partition``, ``grain_size_um``, ``interval_lo``, ``interval_hi``, ...);
- ``metrics.csv``: ``protocol, model, task, slice, seed, n, r2, mae, spearman,
  top_decile_recall`` (accuracy and balanced accuracy for phase; slices ``25C``, ``all``,
  ``25C_<ROUTE>``);
- ``selection.json``, ``calibration.json``, ``summary.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import polars as pl

from hea_screen.conditions import PHASE, ROOM_TEMPERATURE_C, TASKS
from hea_screen.datasets.sources import MPEA_FILE
from hea_screen.inference.design import DESIGN_COLUMNS
from hea_screen.output import atomic_write
from pretrain.atomic import write_csv_atomic, write_text_atomic
from pretrain.condition_calibration import calibrate, neighbourhood
from pretrain.condition_data import (
    OUT_DIR,
    load_data,
)
from pretrain.condition_eval import (
    metrics_table,
    oof_table,
    select,
    summarize,
    with_spread,
)
from pretrain.condition_folds import run_splits, tabular_fold, transformer_fold
from pretrain.condition_report import plot_parity, summary_markdown
from pretrain.config import ConditionsConfig
from pretrain.folds import Split
from pretrain.protocol import cluster_splits, grouped_splits, noise_ceiling

log = logging.getLogger(__name__)

#: Fits one split: the named tabular families (the transformer ignores them).
Fit = Callable[[Split, Sequence[str]], list]


# --- fitting ------------------------------------------------------------------------------


# --- selection, calibration, metrics ------------------------------------------------------


# --- the step -------------------------------------------------------------------------------


def ceilings(frame: pl.DataFrame) -> dict[str, float]:
    """Per regression task, the replicate noise ceiling at 25 °C (:func:`noise_ceiling`)."""
    room = frame.filter(pl.col("temperature_c") == ROOM_TEMPERATURE_C)
    out = {}
    for task in TASKS:
        rows = room.filter(pl.col("task") == task.name)
        if task is not PHASE and rows.height:
            out[task.name] = noise_ceiling(
                rows["canonical"].to_list(), rows["processing"].to_list(), rows["value"].to_numpy()
            )
    return out


def run_conditions(
    run_dir: Path,
    config: ConditionsConfig,
    data_dir: Path,
    *,
    model_config: dict[str, int],
    threads: int,
    seed: int,
) -> Path:
    """Run the protocol (see module docstring) and write ``RUN/conditions``; returns it."""
    out = run_dir / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(data_dir, config, seed)
    write_text_atomic(
        out / "data.json",
        json.dumps(
            {
                "source": MPEA_FILE,
                "sha256": data.source_sha256,
                "rows": data.frame.height,
                "alloys": data.frame["canonical"].n_unique(),
                "design_columns": list(DESIGN_COLUMNS),
                "config": asdict(config),
                "seed": seed,
            },
            indent=1,
        ),
    )
    canonical = data.frame["canonical"].to_list()
    near = neighbourhood(data.frame, data.fractions)
    groups = near.groups

    def cached(
        name: str, splits: Sequence[Split], fit: Fit, families: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """``name.parquet``'s records of the tabular ``families``: an existing file gets only
        the families it lacks (appended atomically), and keeps records of others (a costly
        family past ``costly_partitions`` of an earlier config) without returning them; a
        transformer file (``families`` None) is never redone."""
        path = out / f"{name}.parquet"
        done = pl.read_parquet(path) if path.exists() else None
        wanted = list(families or ())
        present = set() if done is None else set(done["model"])
        missing = [f for f in wanted if f not in present]
        if done is None or missing:
            if done is not None:
                log.info("conditions %s: adding %s", name, ", ".join(missing))
            new = run_splits(data, splits, lambda split: fit(split, missing), name)
            done = new if done is None else pl.concat([done, new])
            atomic_write(path, done.write_parquet)
        return done if families is None else done.filter(pl.col("model").is_in(wanted))

    def tabular(s: int, models: Path | None) -> Fit:
        return lambda split, families: tabular_fold(data, split, config, s, models, families)

    def transformer(s: int, tag: str) -> Fit:
        return lambda split, _: transformer_fold(
            data, split, run_dir, s, config, model_config, threads, tag
        )

    seeds = []
    for i, s in enumerate(config.seeds):
        splits = grouped_splits(groups, config.folds, s, config.val_fraction)
        models = out / "models" if i == 0 else None
        seeds.append(cached(f"seed_{s}", splits, tabular(s, models), config.partition_families(i)))
        if config.transformer and i < config.transformer_partitions:
            seeds.append(cached(f"transformer_seed_{s}", splits, transformer(s, f"seed_{s}")))
    splits = cluster_splits(
        canonical, data.fractions, config.loco_clusters, seed, config.val_fraction
    )
    loco = [cached("loco", splits, tabular(seed, None), config.families)]
    if config.transformer and config.loco_transformer:
        loco.append(cached("transformer_loco", splits, transformer(seed, "loco")))
    grouped = with_spread(pl.concat(seeds), data.frame, config.folds)
    loco_spread = with_spread(pl.concat(loco), data.frame, 1)
    selection = select(pl.concat(seeds))
    calibration = calibrate(grouped, config.coverage, near)
    metrics = pl.concat(
        [metrics_table(grouped, "grouped"), metrics_table(loco_spread, "loco")],
        how="diagonal_relaxed",
    )
    write_csv_atomic(metrics, out / "metrics.csv")
    write_csv_atomic(
        oof_table(grouped, data.frame, selection, calibration, near.condition_distance),
        out / "oof_predictions.csv",
    )
    write_text_atomic(out / "selection.json", json.dumps(selection, indent=1))
    write_text_atomic(out / "calibration.json", json.dumps(calibration, indent=1))
    plot_parity(grouped, selection, out / "parity_25c.png")
    write_text_atomic(
        out / "summary.md",
        summary_markdown(summarize(metrics), selection, calibration, config, ceilings(data.frame)),
    )
    return out
