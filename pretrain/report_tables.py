"""The report's tables: the cross-validation summary per target and model, the paper's
reference values beside ours, the leaky-selection inflation and the repeated-seed spread, as
Markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from hea_screen.datasets.sources import TARGETS
from hea_screen.errors import UserInputError
from pretrain.baseline_config import INPUT_MODES, MODEL_LABELS
from pretrain.baselines import EXPERIMENT, REPEATS_FILE
from pretrain.cv_results import HONEST, LEAKY, read_cv_results
from pretrain.run_dir import RunDir

#: Long name of each known target (units come from :data:`hea_screen.datasets.sources.TARGETS`).
TARGET_NAMES: dict[str, str] = {"uts_mpa": "UTS", "elongation_pct": "elongation"}


#: The paper's table of each target's model comparison.
PAPER_TABLE: dict[str, str] = {"elongation_pct": "2", "uts_mpa": "3"}


#: The paper's mean MSE, MAE and R² over its 5 folds (standardized targets), per target.
#: Tables 2–3 (transformer all layers with features; baselines with features), Table 5
#: (layer-wise fine-tuning), Table 6 (composition only). Keys: experiment name for the
#: transformer, model name for the baselines. The paper selected its transformer
#: checkpoints on the test fold and fed no features (PAPER_NOTES.md, defects 1-2).
PAPER_REFERENCE: dict[str, dict[str, tuple[float, float, float]]] = {
    "pretrained-features-all": {
        "elongation_pct": (0.428, 0.449, 0.561),
        "uts_mpa": (0.213, 0.336, 0.785),
    },
    "scratch-features-all": {
        "elongation_pct": (0.457, 0.498, 0.531),
        "uts_mpa": (0.336, 0.420, 0.619),
    },
    "pretrained-features-l11_12": {
        "elongation_pct": (0.445, 0.478, 0.545),
        "uts_mpa": (0.212, 0.335, 0.785),
    },
    "pretrained-features-l10_12": {
        "elongation_pct": (0.471, 0.499, 0.518),
        "uts_mpa": (0.237, 0.344, 0.767),
    },
    "pretrained-features-l9_12": {
        "elongation_pct": (0.445, 0.475, 0.540),
        "uts_mpa": (0.218, 0.349, 0.781),
    },
    "pretrained-features-l4_6_8_10_12": {
        "elongation_pct": (0.446, 0.484, 0.538),
        "uts_mpa": (0.210, 0.342, 0.786),
    },
    "pretrained-composition-all": {
        "elongation_pct": (0.453, 0.492, 0.532),
        "uts_mpa": (0.250, 0.361, 0.755),
    },
    "pretrained-composition-l11_12": {
        "elongation_pct": (0.462, 0.497, 0.525),
        "uts_mpa": (0.258, 0.350, 0.745),
    },
    "pretrained-composition-l10_12": {
        "elongation_pct": (0.436, 0.480, 0.554),
        "uts_mpa": (0.244, 0.370, 0.758),
    },
    "pretrained-composition-l9_12": {
        "elongation_pct": (0.444, 0.485, 0.542),
        "uts_mpa": (0.258, 0.361, 0.744),
    },
    "pretrained-composition-l4_6_8_10_12": {
        "elongation_pct": (0.459, 0.504, 0.527),
        "uts_mpa": (0.261, 0.359, 0.743),
    },
    "gaussian_process": {"elongation_pct": (0.470, 0.524, 0.522), "uts_mpa": (0.282, 0.370, 0.719)},
    "random_forest": {"elongation_pct": (0.452, 0.504, 0.530), "uts_mpa": (0.251, 0.354, 0.747)},
    "knn": {"elongation_pct": (0.623, 0.618, 0.356), "uts_mpa": (0.375, 0.434, 0.621)},
    "decision_tree": {"elongation_pct": (0.728, 0.570, 0.245), "uts_mpa": (0.571, 0.505, 0.390)},
    "gradient_boosting": {
        "elongation_pct": (0.538, 0.539, 0.442),
        "uts_mpa": (0.226, 0.341, 0.764),
    },
    "random_forest-composition": {
        "elongation_pct": (0.484, 0.527, 0.508),
        "uts_mpa": (0.294, 0.385, 0.710),
    },
    "gaussian_process-composition": {
        "elongation_pct": (0.510, 0.544, 0.482),
        "uts_mpa": (0.308, 0.388, 0.691),
    },
    "gradient_boosting-composition": {
        "elongation_pct": (0.527, 0.570, 0.463),
        "uts_mpa": (0.358, 0.427, 0.642),
    },
}


def quantity(target: str) -> str:
    """Axis label of a target with its unit, e.g. ``UTS (MPa)``."""
    if target in TARGETS:
        return f"{TARGET_NAMES.get(target, target)} ({TARGETS[target][0]})"
    return target


def model_label(experiment: str, model: str) -> str:
    """Readable name of an (experiment, model) pair."""
    if experiment == EXPERIMENT:
        for suffix, mode in ((s, m) for m, s in INPUT_MODES.items() if s):
            if model.endswith(suffix):
                base = model[: -len(suffix)]
                return f"{MODEL_LABELS.get(base, base)}, {mode} only"
        return MODEL_LABELS.get(model, model)
    if model == "transformer":
        return f"Transformer, {experiment}"
    return f"{experiment} ({model})"


def paper_key(experiment: str, model: str) -> str:
    """Key of :data:`PAPER_REFERENCE` for an (experiment, model) pair."""
    return model if experiment == EXPERIMENT else experiment


def _sort_key(experiment: str, model: str) -> tuple[int, int, str, str]:
    if experiment != EXPERIMENT:
        return (0, 0, experiment, model)
    base = model.split("-")[0]
    order = list(MODEL_LABELS).index(base) if base in MODEL_LABELS else len(MODEL_LABELS)
    return (1 + ("-" in model), order, experiment, model)


def load_cv_results(run_dir: Path) -> pl.DataFrame:
    """``RUN/cv_results.csv`` with its schema checked."""
    path = RunDir(run_dir).cv_results
    if not path.is_file():
        raise UserInputError(f"{path} does not exist: run fine-tuning or baselines first")
    try:
        cv = read_cv_results(path)
    except pl.exceptions.ColumnNotFoundError as err:
        raise UserInputError(f"{path} lacks a column of cv_results.csv: {err}") from None
    if cv.is_empty():
        raise UserInputError(f"{path} has no rows")
    return cv


def summarize(cv: pl.DataFrame) -> pl.DataFrame:
    """Per target, experiment, model and protocol: fold count, mean, std, best of each metric."""
    aggs = [pl.len().alias("folds")]
    for m in ("mse", "mae", "r2"):
        best = pl.col(m).max() if m == "r2" else pl.col(m).min()
        aggs += [
            pl.col(m).mean().alias(f"{m}_mean"),
            pl.col(m).std().alias(f"{m}_std"),
            best.alias(f"{m}_best"),
        ]
    out = cv.group_by("target", "experiment", "model", "protocol").agg(aggs)
    keys = [_sort_key(e, m) for e, m in zip(out["experiment"], out["model"])]
    order = sorted(range(out.height), key=lambda i: (out["target"][i], keys[i], out["protocol"][i]))
    return out[order]


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pm(mean: float | None, std: float | None) -> str:
    return f"{_fmt(mean)} ± {_fmt(std)}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _protocol_label(protocol: str) -> str:
    return "paper-leaky (selected on the test fold)" if protocol == LEAKY else protocol


def _paper_cell(experiment: str, model: str, target: str, index: int | None = None) -> str:
    ref = PAPER_REFERENCE.get(paper_key(experiment, model), {}).get(target)
    if ref is None:
        return "–"
    if index is None:
        return " / ".join(f"{v:.3f}" for v in ref)
    return f"{ref[index]:.3f}"


def target_table(summary: pl.DataFrame, target: str) -> str:
    """The paper's Table 2/3 form for one target."""
    rows = []
    for r in summary.filter(pl.col("target") == target).iter_rows(named=True):
        rows.append(
            [
                model_label(r["experiment"], r["model"]),
                _protocol_label(r["protocol"]),
                str(r["folds"]),
                _pm(r["mse_mean"], r["mse_std"]),
                _fmt(r["mse_best"]),
                _pm(r["mae_mean"], r["mae_std"]),
                _fmt(r["mae_best"]),
                _pm(r["r2_mean"], r["r2_std"]),
                _fmt(r["r2_best"]),
                _paper_cell(r["experiment"], r["model"], target),
            ]
        )
    headers = [
        "model",
        "protocol",
        "folds",
        "MSE mean ± std (↓)",
        "best-fold MSE",
        "MAE mean ± std (↓)",
        "best-fold MAE",
        "R² mean ± std (↑)",
        "best-fold R²",
        "paper: mean MSE / MAE / R²",
    ]
    return markdown_table(headers, rows)


def headline_table(summary: pl.DataFrame, targets: Sequence[str]) -> str:
    """R² mean ± std of every honest model for every target, with the paper's mean R²."""
    honest = summary.filter(pl.col("protocol") == HONEST)
    pairs = sorted(
        {(e, m) for e, m in zip(honest["experiment"], honest["model"])}, key=lambda p: _sort_key(*p)
    )
    rows = []
    for experiment, model in pairs:
        row = [model_label(experiment, model)]
        for target in targets:
            hit = honest.filter(
                (pl.col("target") == target)
                & (pl.col("experiment") == experiment)
                & (pl.col("model") == model)
            )
            row.append(_pm(hit["r2_mean"][0], hit["r2_std"][0]) if hit.height else "–")
            row.append(_paper_cell(experiment, model, target, 2))
        rows.append(row)
    headers = ["model (honest protocol)"]
    for t in targets:
        headers += [
            f"{quantity(t)}: R² mean ± std, this run",
            f"{TARGET_NAMES.get(t, t)}: R², paper",
        ]
    return markdown_table(headers, rows)


def inflation_table(cv: pl.DataFrame) -> str | None:
    """Leaky minus honest R², per target and experiment that ran both protocols (paired folds)."""
    keys = ["target", "experiment", "model", "fold"]
    honest = cv.filter(pl.col("protocol") == HONEST).select(*keys, pl.col("r2").alias("honest"))
    leaky = cv.filter(pl.col("protocol") == LEAKY).select(*keys, pl.col("r2").alias("leaky"))
    paired = honest.join(leaky, on=keys, how="inner")
    if paired.is_empty():
        return None
    agg = (
        paired.with_columns((pl.col("leaky") - pl.col("honest")).alias("gain"))
        .group_by("target", "experiment", "model")
        .agg(
            pl.len().alias("folds"),
            pl.col("honest").mean(),
            pl.col("leaky").mean(),
            pl.col("gain").mean().alias("gain_mean"),
            pl.col("gain").std().alias("gain_std"),
        )
        .sort("target", "experiment", "model")
    )
    rows = [
        [
            quantity(r["target"]),
            model_label(r["experiment"], r["model"]),
            str(r["folds"]),
            _fmt(r["honest"]),
            _fmt(r["leaky"]),
            _pm(r["gain_mean"], r["gain_std"]),
        ]
        for r in agg.iter_rows(named=True)
    ]
    headers = [
        "target",
        "model",
        "paired folds",
        "honest R² (mean)",
        "paper-leaky R² (mean)",
        "inflation: leaky − honest R², mean ± std over folds",
    ]
    return markdown_table(headers, rows)


def wide_table(summary: pl.DataFrame, targets: Sequence[str]) -> str:
    """Every experiment over all targets: mean MSE, MAE, R² (the paper's Tables 4–6 form)."""
    pairs = sorted(
        {
            (e, m, p)
            for e, m, p in zip(summary["experiment"], summary["model"], summary["protocol"])
        },
        key=lambda t: (_sort_key(t[0], t[1]), t[2]),
    )
    rows = []
    for experiment, model, protocol in pairs:
        row = [model_label(experiment, model), _protocol_label(protocol)]
        for metric in ("mse", "mae", "r2"):
            for target in targets:
                hit = summary.filter(
                    (pl.col("target") == target)
                    & (pl.col("experiment") == experiment)
                    & (pl.col("model") == model)
                    & (pl.col("protocol") == protocol)
                )
                row.append(_fmt(hit[f"{metric}_mean"][0]) if hit.height else "–")
        rows.append(row)
    names = {"mse": "mean MSE (↓)", "mae": "mean MAE (↓)", "r2": "mean R² (↑)"}
    headers = ["model", "protocol"] + [
        f"{names[m]} {TARGET_NAMES.get(t, t)}" for m in names for t in targets
    ]
    return markdown_table(headers, rows)


def repeats_table(run_dir: Path, cv: pl.DataFrame) -> str | None:
    """Baseline R² over several outer splits (seed of the run plus ``repeats.csv``)."""
    path = run_dir / "baselines" / REPEATS_FILE
    if not path.is_file():
        return None
    repeats = pl.read_csv(path, schema_overrides={"fold": pl.Int64, "seed": pl.Int64})
    main = cv.filter((pl.col("experiment") == EXPERIMENT) & (pl.col("protocol") == HONEST))
    main = main.with_columns(pl.lit(-1, pl.Int64).alias("seed")).select(repeats.columns)
    both = pl.concat([main, repeats])
    per_seed = both.group_by("target", "model", "seed").agg(pl.col("r2").mean())
    agg = (
        per_seed.group_by("target", "model")
        .agg(
            pl.len().alias("splits"),
            pl.col("r2").mean().alias("mean"),
            pl.col("r2").std().alias("std"),
            pl.col("r2").min().alias("min"),
            pl.col("r2").max().alias("max"),
        )
        .sort("target", "mean", descending=[False, True])
    )
    rows = [
        [
            quantity(r["target"]),
            model_label(EXPERIMENT, r["model"]),
            str(r["splits"]),
            _pm(r["mean"], r["std"]),
            f"{_fmt(r['min'])} – {_fmt(r['max'])}",
        ]
        for r in agg.iter_rows(named=True)
    ]
    seeds = sorted(set(repeats["seed"].to_list()))
    note = (
        f"Outer splits: the run's own seed plus seeds {', '.join(map(str, seeds))}; each split's "
        "5-fold mean R² is one sample; std is over splits.\n\n"
    )
    headers = ["target", "model", "outer splits", "5-fold mean R², mean ± std over splits", "range"]
    return note + markdown_table(headers, rows)
