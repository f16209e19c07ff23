"""The condition-aware run: every model on the whole MPEA database, scored per task.

``hea-train conditions`` (after ``pretrain``) evaluates, on the measurement table of
:func:`hea_screen.datasets.measurements.measurements` (one row per alloy, task, condition, value):

- the tabular families of :mod:`pretrain.tabular` (one model per task on
  :mod:`hea_screen.inference.design` inputs: 14 features, test temperature, processing route), and
- the multi-task transformer of :mod:`pretrain.multitask` (one network for every task,
  condition tokens, pre-trained by MLM), where ``conditions.transformer`` is on,

on the protocol of :mod:`pretrain.protocol`: 5 folds grouped by canonical composition,
repeated over ``seeds``; a validation part of whole alloys carved from each training fold
decides early stopping, ExtraTrees' settings and which model a task ships with; the test
fold is only ever predicted. Then leave-one-cluster-out folds (k-means on atomic
fractions) for extrapolation.

Selection (:func:`select`): per task, the model with the lowest mean validation loss over
all folds and seeds. Calibration (:func:`calibrate`): a row's uncertainty is the standard
deviation of its out-of-fold predictions over the seeds (each made by a model that never
saw the alloy, as the shipped fold models never saw a candidate); the 90 % interval is
``mean ± c·(std + offset)`` with ``offset`` the task's median spread and ``c`` the
split-conformal quantile of ``|y − mean| / (std + offset)`` (see :func:`calibrate`); its
coverage is measured cross-conformally (``c`` from the other folds, applied to each fold).

Outputs in ``RUN/conditions/`` (written atomically; a finished seed is not redone):

- ``seed_<s>.parquet``: out-of-fold predictions of every model (``model, seed, fold,
  mpea_row, task, predicted, val_loss``), ``loco.parquet`` the same for cluster folds;
- ``models/<model>/<task>/fold_<k>.onnx``: the tabular fold models of the first seed
  (skl2onnx; no pickle), whose ONNX outputs are that seed's ``predicted`` values;
- ``oof_predictions.csv`` (the bundle's): one row per evaluated measurement and seed of the
  shipped model of its task, with ``composition, property, test_type, temperature_c,
  processing, fold, measured, predicted_mean, predicted_std, seed``;
- ``metrics.csv``: ``protocol, model, task, slice, seed, n, r2, mae, spearman,
  top_decile_recall`` (accuracy and balanced accuracy for phase);
- ``selection.json``, ``calibration.json``, ``summary.md``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl
from skl2onnx import to_onnx

from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import PHASE, PHASES, ROOM_TEMPERATURE_C, TASKS
from hea_screen.datasets.measurements import measurements
from hea_screen.datasets.sources import MPEA_FILE, load_mpea, sha256_file
from hea_screen.inference.bundle import conformal_quantile
from hea_screen.inference.design import DESIGN_COLUMNS, design_matrix
from hea_screen.output import atomic_write
from pretrain.atomic import write_csv_atomic, write_text_atomic
from pretrain.config import ConditionsConfig
from pretrain.folds import Split
from pretrain.protocol import (
    classification_metrics,
    cluster_splits,
    grouped_splits,
    regression_metrics,
)
from pretrain.tabular import LABELS, fit_family

log = logging.getLogger(__name__)

TRANSFORMER = "transformer"
RECORD_SCHEMA = {
    "model": pl.Utf8,
    "seed": pl.Int64,
    "fold": pl.Int64,
    "row": pl.Int64,
    "task": pl.Utf8,
    "predicted": pl.Float64,
    "val_loss": pl.Float64,
}
OUT_DIR = "conditions"
#: Families that cannot classify the three phases in ONNX (skl2onnx converts only binary GPCs).
NOT_FOR_PHASE = ("gp_noise",)


@dataclass
class Data:
    """Measurements with their design matrix and atomic fractions, row-aligned."""

    frame: pl.DataFrame
    x: np.ndarray
    fractions: np.ndarray
    source_sha256: str


def load_data(data_dir: Path, config: ConditionsConfig, seed: int) -> Data:
    """The measurement table (optionally ``max_alloys`` random alloys) and its inputs."""
    frame = measurements(load_mpea(data_dir))
    if config.max_alloys is not None:
        alloys = frame["canonical"].unique().sort()
        keep = alloys.sample(min(config.max_alloys, alloys.len()), seed=seed)
        frame = frame.filter(pl.col("canonical").is_in(keep.implode()))
    alloys = frame["canonical"].unique().sort().to_list()
    table = CompositionTable.from_compositions(alloys)
    index = frame["canonical"].replace_strict(
        {c: i for i, c in enumerate(alloys)}, return_dtype=pl.Int64
    )
    rows = index.to_numpy()
    feats = featurize(table)[rows]
    x = design_matrix(feats, frame["temperature_c"].to_numpy(), frame["processing"].to_list())
    return Data(frame, x, table.fractions[rows], sha256_file(data_dir / MPEA_FILE))


# --- fitting ------------------------------------------------------------------------------


def _onnx_bytes(model: Any, x: np.ndarray, classify: bool) -> bytes:
    options = {id(model): {"zipmap": False}} if classify else None
    return to_onnx(model, x[:1], options=options, target_opset=17).SerializeToString()


def onnx_predict(blob: bytes, x: np.ndarray, classify: bool) -> np.ndarray:
    """Run an exported tabular model: values (regression) or class probabilities."""
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    return outputs[1] if classify else outputs[0].reshape(-1)


def _tabular_fold(
    data: Data,
    split: Split,
    config: ConditionsConfig,
    seed: int,
    models_dir: Path | None,
) -> list[dict[str, Any]]:
    """Every family on every task of one split; the test predictions as records."""
    tasks = np.asarray(data.frame["task"].to_list())
    y = data.frame["value"].to_numpy()
    records: list[dict[str, Any]] = []
    for task in TASKS:
        classify = task is PHASE
        tr, va, te = (
            rows[tasks[rows] == task.name] for rows in (split.train, split.val, split.test)
        )
        if len(tr) < 5 or len(va) < 2 or len(te) == 0:
            log.warning(
                "conditions: %s fold %d seed %d has too few rows, skipped",
                task.name,
                split.fold,
                seed,
            )
            continue
        for family in config.families:
            if classify and family in NOT_FOR_PHASE:
                continue
            fit = fit_family(
                family,
                data.x[tr],
                y[tr],
                data.x[va],
                y[va],
                classify=classify,
                seed=seed,
                n_estimators=config.n_estimators,
            )
            if models_dir is not None:
                blob = _onnx_bytes(fit.model, data.x, classify)
                path = models_dir / family / task.name / f"fold_{split.fold}.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda tmp, b=blob: tmp.write_bytes(b))
                out = onnx_predict(blob, data.x[te], classify)
            else:
                out = (
                    fit.model.predict_proba(data.x[te])
                    if classify
                    else fit.model.predict(data.x[te])
                )
            predicted = np.argmax(out, axis=1).astype(float) if classify else out
            log.debug(
                "conditions seed %d fold %d %s %s: val loss %.4g",
                seed,
                split.fold,
                task.name,
                family,
                fit.val_loss,
            )
            records += [
                {
                    "model": family,
                    "seed": seed,
                    "fold": split.fold,
                    "row": int(r),
                    "task": task.name,
                    "predicted": float(p),
                    "val_loss": fit.val_loss,
                }
                for r, p in zip(te, predicted)
            ]
    return records


def _transformer_fold(
    data: Data,
    split: Split,
    run_dir: Path,
    seed: int,
    config: ConditionsConfig,
    model_config: dict[str, int],
    threads: int,
    tag: str,
) -> list[dict[str, Any]]:
    """The multi-task transformer on one split; test predictions with per-task val losses."""
    from pretrain.multitask import MultitaskSettings, fit_fold

    settings = MultitaskSettings(**{**(config.multitask or {}), "seed": seed, "threads": threads})
    pretrained = run_dir / "pretrained"
    fit_dir = run_dir / OUT_DIR / TRANSFORMER / tag / f"fold_{split.fold}"
    fit = fit_fold(
        data.frame,
        split,
        run_dir / "tokenizer",
        pretrained if pretrained.is_dir() else None,
        model_config,
        settings,
        fit_dir,
    )
    tasks = np.asarray(data.frame["task"].to_list())
    y = data.frame["value"].to_numpy()
    records = []
    for task in TASKS:
        in_val = tasks[split.val] == task.name
        if not in_val.any():
            loss = math.nan
        elif task is PHASE:
            loss = _phase_log_loss(fit_dir, run_dir / "tokenizer", data, split.val[in_val])
        else:
            loss = float(np.mean((fit.val_pred[in_val] - y[split.val][in_val]) ** 2))
        in_test = tasks[split.test] == task.name
        records += [
            {
                "model": TRANSFORMER,
                "seed": seed,
                "fold": split.fold,
                "row": int(r),
                "task": task.name,
                "predicted": float(p),
                "val_loss": loss,
            }
            for r, p in zip(split.test[in_test], fit.test_pred[in_test])
        ]
    return records


def _phase_log_loss(fold_dir: Path, encoder_dir: Path, data: Data, rows: np.ndarray) -> float:
    """Log-loss of a transformer fold's phase probabilities on measurement ``rows`` (the
    tabular families are compared on the same loss)."""
    from pretrain.multitask import (
        N_REGRESSION,
        encode_keys,
        load_encoder,
        load_fold,
        raw_outputs,
        task_values,
    )

    model, scalers = load_fold(fold_dir)
    keys = data.frame[rows].select("canonical", "temperature_c", "processing")
    logits = raw_outputs(model, encode_keys(load_encoder(encoder_dir), keys)).numpy()
    proba = task_values(logits, scalers)[:, N_REGRESSION:]
    labels = data.frame[rows]["value"].to_numpy().astype(int)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(rows)), labels], 1e-6, 1.0))))


def _run_splits(
    data: Data,
    splits: Sequence[Split],
    fit_split: Callable[[Split], list[dict[str, Any]]],
    tag: str,
) -> pl.DataFrame:
    """``fit_split`` on every split; its records as one frame."""
    records: list[dict[str, Any]] = []
    for split in splits:
        t0 = time.perf_counter()
        records += fit_split(split)
        log.info("conditions %s fold %d: %.0f s", tag, split.fold, time.perf_counter() - t0)
    return pl.DataFrame(records, schema=RECORD_SCHEMA)


# --- selection, calibration, metrics ------------------------------------------------------


def select(predictions: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per task: each model's mean validation loss over folds and seeds, and the lowest."""
    losses = (
        predictions.unique(["model", "seed", "fold", "task"])
        .group_by("task", "model")
        .agg(pl.col("val_loss").mean())
        .drop_nans("val_loss")
        .sort("task", "val_loss", "model")
    )
    out = {}
    for task in TASKS:
        rows = losses.filter(pl.col("task") == task.name)
        if rows.height:
            out[task.name] = {
                "model": rows["model"][0],
                "validation_loss": dict(zip(rows["model"], rows["val_loss"])),
                "loss": "log-loss" if task is PHASE else "MSE (task units²)",
            }
    return out


def with_spread(predictions: pl.DataFrame, frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``measured``, per-row ``predicted_mean``/``predicted_std`` over seeds (same model)."""
    spread = predictions.group_by("model", "row").agg(
        pl.col("predicted").mean().alias("predicted_mean_seeds"),
        pl.col("predicted").std(ddof=1).alias("predicted_std"),
    )
    measured = frame.with_row_index("row").select(
        pl.col("row").cast(pl.Int64), pl.col("value").alias("measured"), "temperature_c"
    )
    return predictions.join(spread, on=["model", "row"]).join(measured, on="row")


def calibrate(
    spread: pl.DataFrame, coverage: float, std_floor: dict[str, float]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and regression task: conformal factor ``c``, scale offset and cross-conformal
    coverage of the interval ``mean ± c·(std + offset)``.

    The scale of a row is its spread over seeds plus ``offset``, the task's median spread: a
    spread estimated from a few models can be near zero by chance, and a pure ratio would let
    those rows set ``c`` (intervals ~16× the fold spread, measured); the offset keeps the
    interval tied to the spread without that. Scores ``|measured − mean over seeds| /
    (max(std, floor) + offset)`` of every row once (the first seed's fold says which fold a
    row belongs to); coverage is measured with ``c`` from the other folds, on all rows and on
    25 °C rows.
    """
    first = spread["seed"].min()
    rows = spread.filter(pl.col("seed") == first, pl.col("task") != PHASE.name)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (model, task), part in rows.group_by("model", "task"):
        std = np.maximum(part["predicted_std"].fill_null(np.nan).to_numpy(), std_floor[task])
        offset = float(np.nanmedian(std))
        residual = np.abs(part["measured"].to_numpy() - part["predicted_mean_seeds"].to_numpy())
        score = residual / (std + offset)
        folds = part["fold"].to_numpy()
        covered = np.zeros(len(score), dtype=bool)
        for k in np.unique(folds):
            c_k = conformal_quantile(score[folds != k], coverage)
            covered[folds == k] = score[folds == k] <= c_k
        room = part["temperature_c"].to_numpy() == ROOM_TEMPERATURE_C
        out.setdefault(str(model), {})[str(task)] = {
            "factor": conformal_quantile(score, coverage),
            "offset": offset,
            "coverage": float(np.mean(covered[np.isfinite(score)])),
            "coverage_25c": float(np.mean(covered[room & np.isfinite(score)])),
            "rows": int(np.isfinite(score).sum()),
        }
    return out


def metrics_table(spread: pl.DataFrame, protocol: str) -> pl.DataFrame:
    """Per model, task, seed and slice (``25C``, ``all``): the task's metrics."""
    rows = []
    for (model, task, seed), part in spread.group_by("model", "task", "seed"):
        for slice_name, sub in (
            ("25C", part.filter(pl.col("temperature_c") == ROOM_TEMPERATURE_C)),
            ("all", part),
        ):
            y, p = sub["measured"].to_numpy(), sub["predicted"].to_numpy()
            m = classification_metrics(y, p) if task == PHASE.name else regression_metrics(y, p)
            rows.append(
                {
                    "protocol": protocol,
                    "model": model,
                    "task": task,
                    "slice": slice_name,
                    "seed": seed,
                    **m,
                }
            )
    return pl.DataFrame(rows).sort("protocol", "task", "model", "slice", "seed")


def summarize(metrics: pl.DataFrame) -> pl.DataFrame:
    """Mean and standard deviation over seeds of every metric."""
    values = [
        c
        for c in ("r2", "mae", "spearman", "top_decile_recall", "accuracy", "balanced_accuracy")
        if c in metrics.columns
    ]
    return (
        metrics.group_by("protocol", "model", "task", "slice")
        .agg(
            pl.col("n").mean().round(0).cast(pl.Int64),
            *(pl.col(c).mean().alias(c) for c in values),
            *(pl.col(c).std(ddof=0).alias(f"{c}_std") for c in values),
        )
        .sort("protocol", "task", "slice", "model")
    )


def oof_table(
    spread: pl.DataFrame,
    frame: pl.DataFrame,
    selection: dict[str, Any],
    calibration: dict[str, Any],
) -> pl.DataFrame:
    """The bundle's ``oof_predictions.csv``: the shipped model of each task, every seed.

    ``predicted_mean`` is the fold model's own prediction (for the first seed, the output of
    the shipped ONNX fold model); ``predicted_std`` is the spread over seeds before
    calibration (the manifest holds the conformal factor ``c`` that scales it).
    """
    chosen = pl.DataFrame(
        {"task": list(selection), "model": [s["model"] for s in selection.values()]}
    )
    meta = frame.with_row_index("row").select(
        pl.col("row").cast(pl.Int64), "mpea_row", "composition", "canonical", "processing"
    )
    tasks = pl.DataFrame(
        {
            "task": [t.name for t in TASKS],
            "test_type": [t.test_type.value if t.test_type else None for t in TASKS],
        }
    )
    return (
        spread.join(chosen, on=["task", "model"], how="semi")
        .join(meta, on="row")
        .join(tasks, on="task")
        .select(
            "composition",
            "canonical",
            pl.col("task").alias("property"),
            "test_type",
            "temperature_c",
            "processing",
            "fold",
            "measured",
            pl.col("predicted").alias("predicted_mean"),
            "predicted_std",
            "seed",
            "model",
            "mpea_row",
        )
        .sort("seed", "property", "mpea_row")
    )


# --- the step -------------------------------------------------------------------------------


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

    def cached(name: str, splits: Sequence[Split], fit: Callable[[Split], list]) -> pl.DataFrame:
        path = out / f"{name}.parquet"
        if not path.exists():
            atomic_write(path, _run_splits(data, splits, fit, name).write_parquet)
        return pl.read_parquet(path)

    def tabular(s: int, models: Path | None) -> Callable[[Split], list]:
        return lambda split: _tabular_fold(data, split, config, s, models)

    def transformer(s: int, tag: str) -> Callable[[Split], list]:
        return lambda split: _transformer_fold(
            data, split, run_dir, s, config, model_config, threads, tag
        )

    seeds = []
    for i, s in enumerate(config.seeds):
        splits = grouped_splits(canonical, config.folds, s, config.val_fraction)
        seeds.append(cached(f"seed_{s}", splits, tabular(s, out / "models" if i == 0 else None)))
        if config.transformer:
            seeds.append(cached(f"transformer_seed_{s}", splits, transformer(s, f"seed_{s}")))
    splits = cluster_splits(
        canonical, data.fractions, config.loco_clusters, seed, config.val_fraction
    )
    loco = [cached("loco", splits, tabular(seed, None))]
    if config.transformer and config.loco_transformer:
        loco.append(cached("transformer_loco", splits, transformer(seed, "loco")))
    grouped = with_spread(pl.concat(seeds), data.frame)
    loco_spread = with_spread(pl.concat(loco), data.frame)
    selection = select(pl.concat(seeds))
    floor = {
        t.name: 1e-6
        * max(
            1.0, float(np.nanstd(data.frame.filter(pl.col("task") == t.name)["value"].to_numpy()))
        )
        for t in TASKS
    }
    calibration = calibrate(grouped, config.coverage, floor)
    metrics = pl.concat(
        [metrics_table(grouped, "grouped"), metrics_table(loco_spread, "loco")],
        how="diagonal_relaxed",
    )
    write_csv_atomic(metrics, out / "metrics.csv")
    write_csv_atomic(
        oof_table(grouped, data.frame, selection, calibration), out / "oof_predictions.csv"
    )
    write_text_atomic(out / "selection.json", json.dumps(selection, indent=1))
    write_text_atomic(out / "calibration.json", json.dumps(calibration, indent=1))
    plot_parity(grouped, selection, out / "parity_25c.png")
    write_text_atomic(
        out / "summary.md", summary_markdown(summarize(metrics), selection, calibration, config)
    )
    return out


def plot_parity(spread: pl.DataFrame, selection: dict[str, Any], path: Path) -> Path:
    """Measured vs out-of-fold predicted at 25 °C (first seed), one panel per regression
    task, for the model each task ships with."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if t is not PHASE and t.name in selection]
    first = spread["seed"].min()
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    for ax, task in zip(axes.flat, tasks):
        part = spread.filter(
            pl.col("seed") == first,
            pl.col("task") == task.name,
            pl.col("model") == selection[task.name]["model"],
            pl.col("temperature_c") == ROOM_TEMPERATURE_C,
        )
        y, p = part["measured"].to_numpy(), part["predicted"].to_numpy()
        m = regression_metrics(y, p)
        ax.scatter(y, p, s=10, alpha=0.6)
        if len(y):
            lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_title(f"{task.name}\n{selection[task.name]['model']}: R² {m['r2']:.2f}, "
                     f"ρ {m['spearman']:.2f}, n {m['n']}", fontsize=9)
        ax.set_xlabel(f"measured ({task.unit})")
        ax.set_ylabel(f"predicted ({task.unit})")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle("Held-out alloys (grouped folds), 25 °C, shipped model per task")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return path


def _fmt(mean: float, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if std is not None and math.isfinite(std) else f"{mean:.3f}"


def summary_markdown(
    summary: pl.DataFrame,
    selection: dict[str, Any],
    calibration: dict[str, Any],
    config: ConditionsConfig,
) -> str:
    """Per-task tables (25 °C, grouped folds; then cluster folds), selection, coverage."""
    lines = [
        "# Condition-aware models: per task, never pooled across test types",
        "",
        "![parity](parity_25c.png)",
        "",
        f"Grouped {config.folds}-fold CV by canonical composition, seeds {config.seeds}; "
        "metrics on the out-of-fold predictions of each seed at 25 °C, mean ± std over seeds. "
        "`shipped` marks the model each task ships with (lowest validation loss; the test "
        "folds never take part in the choice).",
        "",
    ]
    for protocol, title in (
        ("grouped", "Grouped folds, 25 °C"),
        ("loco", "Leave-one-cluster-out (k-means on atomic fractions), 25 °C"),
    ):
        lines += [f"## {title}", ""]
        for task in TASKS:
            part = summary.filter(
                pl.col("protocol") == protocol,
                pl.col("task") == task.name,
                pl.col("slice") == "25C",
            )
            if part.height == 0:
                continue
            shipped = selection.get(task.name, {}).get("model")
            lines += [f"### {task.label} (`{task.name}`)", ""]
            if task is PHASE:
                lines += ["| model | n | accuracy | balanced accuracy |", "|---|---:|---:|---:|"]
                for r in part.sort("accuracy", descending=True, nulls_last=True).iter_rows(
                    named=True
                ):
                    mark = " (shipped)" if r["model"] == shipped else ""
                    lines.append(
                        f"| {LABELS.get(r['model'], r['model'])}{mark} | {r['n']} | "
                        f"{_fmt(r['accuracy'], r['accuracy_std'])} | "
                        f"{_fmt(r['balanced_accuracy'], r['balanced_accuracy_std'])} |"
                    )
            else:
                lines += [
                    "| model | n | R² | MAE | Spearman ρ | top-decile recall |",
                    "|---|---:|---:|---:|---:|---:|",
                ]
                for r in part.sort("r2", descending=True, nulls_last=True).iter_rows(named=True):
                    mark = " (shipped)" if r["model"] == shipped else ""
                    lines.append(
                        f"| {LABELS.get(r['model'], r['model'])}{mark} | {r['n']} | "
                        f"{_fmt(r['r2'], r['r2_std'])} | {_fmt(r['mae'], r['mae_std'])} | "
                        f"{_fmt(r['spearman'], r['spearman_std'])} | "
                        f"{_fmt(r['top_decile_recall'], r['top_decile_recall_std'])} |"
                    )
            lines.append("")
    lines += [
        "## Calibrated 90 % intervals of the shipped models",
        "",
        "| task | model | conformal factor c | offset | coverage (all rows) | coverage (25 °C) "
        "| rows |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for task, choice in selection.items():
        cal = calibration.get(choice["model"], {}).get(task)
        if cal:
            lines.append(
                f"| `{task}` | {choice['model']} | {cal['factor']:.2f} | {cal['offset']:.3g} | "
                f"{cal['coverage']:.3f} | {cal['coverage_25c']:.3f} | {cal['rows']} |"
            )
    lines += [
        "",
        f"Units: MAE in the task's unit (MPa, %, HV). Phase classes: {', '.join(PHASES)}.",
        "",
    ]
    return "\n".join(lines)
