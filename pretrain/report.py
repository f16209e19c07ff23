"""The run report: the paper's Tables 2–6 from ``cv_results.csv``, figures, dataset analysis.

:func:`write_report` reads a run directory (layout in ``docs/architecture.md``) and writes
``RUN/report.md`` and ``RUN/figures/*.png``:

- per target, a table in the form of the paper's Tables 2–3: for each experiment, model and
  protocol, mean ± std and best fold of MSE, MAE and R² (standardized targets; best = lowest
  MSE/MAE, highest R²; std = sample standard deviation over folds), the paper's numbers
  beside them;
- a headline table of R² mean ± std for every target (honest protocol), and the inflation
  of the paper's protocol (``paper-leaky`` minus ``honest`` R², same experiment, same folds);
- a table of every experiment over both targets (the form of the paper's Tables 4–6);
- the split-to-split spread of the baselines when ``RUN/baselines/repeats.csv`` exists;
- figures: parity plots and residual histograms (test folds pooled, one panel per model),
  box plots of R² over folds, per-target dataset analysis (element counts, target and
  number-of-elements histograms, Pearson feature–target correlation heatmap), and a t-SNE
  of the pre-training corpus against the fine-tuning compositions;
- the target's z-score outliers (|z| > 3).

Predictions are read from ``RUN/baselines/<target>/<model>_predictions.csv`` and
``RUN/finetune/<target>/<experiment>/fold_<k>/predictions.csv`` (``y_true``, ``y_pred`` in
the target's units). Parts whose inputs are missing are skipped with a note.

Command line: ``python -m pretrain.report RUN``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hea_screen.compositions.features import FEATURE_NAMES, FEATURE_UNITS, featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.datasets.sources import TARGETS
from hea_screen.errors import UserInputError
from pretrain import figures
from pretrain.atomic import write_text_atomic
from pretrain.baselines import (
    EXPERIMENT,
    INPUT_MODES,
    MODEL_LABELS,
    REPEATS_FILE,
    read_dataset,
)
from pretrain.cv_results import HONEST, LEAKY, read_cv_results
from pretrain.run_dir import RunDir

log = logging.getLogger(__name__)

Z_OUTLIER = 3.0

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


NOTES: tuple[str, ...] = (
    "- Baselines (`pretrain.baselines`) are fitted on the whole training fold and scored on "
    "the test fold of the same outer splits as the transformer, on the 14 features + atomic "
    "fractions (or fractions only, *composition only*); features and target are standardized "
    "with the training fold's scalers.",
    "- *Gaussian Process* is scikit-learn's default (C·RBF kernel fitted by marginal "
    "likelihood, alpha 1e-10): it must interpolate every training row, repeated compositions "
    "with different values included, and collapses towards the mean on these sets. *+ noise "
    "term* adds a WhiteKernel, fitted the same way on the training fold only.",
    "- *ExtraTrees (tuned in training fold)*: grid of `pretrain.baselines.TUNING_GRID`, inner "
    "K-fold inside the training fold; chosen parameters and inner splits (dataset rows) in "
    "`baselines/<target>/tuning.json`.",
    "- The transformer's target scaler is fitted on the training part without its validation "
    "rows, the baselines' on the whole training fold; R² does not depend on it, MSE and MAE "
    "only through the small difference between the two standard deviations.",
    "- Paper numbers: Tables 2–3 for the all-layer transformer and the baselines, Table 5 for "
    "layer-wise fine-tuning, Table 6 for composition-only models; its Table 4 (corpus size) "
    "has no counterpart within one run.",
)


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


def collect_predictions(
    run_dir: Path, target: str, cv: pl.DataFrame
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pooled test predictions (original units) per honest model of a target, keyed by label."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    honest = cv.filter((pl.col("target") == target) & (pl.col("protocol") == HONEST))
    pairs = sorted(
        {(e, m) for e, m in zip(honest["experiment"], honest["model"])}, key=lambda p: _sort_key(*p)
    )
    for experiment, model in pairs:
        if experiment == EXPERIMENT:
            files = [run_dir / "baselines" / target / f"{model}_predictions.csv"]
        else:
            files = sorted(
                RunDir(run_dir).experiment_dir(target, experiment).glob("fold_*/predictions.csv")
            )
        files = [f for f in files if f.is_file()]
        if not files:
            continue
        frame = pl.concat([pl.read_csv(f).select("y_true", "y_pred") for f in files])
        out[model_label(experiment, model)] = (
            frame["y_true"].to_numpy(),
            frame["y_pred"].to_numpy(),
        )
    return out


@dataclass(frozen=True)
class DatasetFigures:
    """Outcome of the dataset analysis of one target."""

    markdown: str
    files: list[Path]


def _pearson(matrix: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns; NaN where a column is constant."""
    centered = matrix - matrix.mean(axis=0)
    norm = np.sqrt((centered**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = centered / norm
        corr = z.T @ z
    corr[:, norm == 0] = np.nan
    corr[norm == 0, :] = np.nan
    return corr


def dataset_analysis(run_dir: Path, target: str, fig_dir: Path) -> DatasetFigures:
    """Element counts, target and element-number histograms, correlations and outliers."""
    path = RunDir(run_dir).dataset_csv(target)
    if not path.is_file():
        return DatasetFigures(
            f"_No dataset file {path.relative_to(run_dir)}; analysis skipped._", []
        )
    data = read_dataset(path, target=None)
    table, y = data.table, data.y
    present = table.micro > 0
    counts = {el: int(c) for el, c in zip(table.elements, present.sum(axis=0))}
    n_elements = present.sum(axis=1)
    label = quantity(target)
    name = TARGET_NAMES.get(target, target)
    files = [
        figures.plot_element_counts(
            counts, len(y), f"Elements in the {name} set", fig_dir / f"elements_{target}.png"
        ),
        figures.plot_histogram(
            y,
            label,
            f"Distribution of {label}, n = {len(y)}",
            fig_dir / f"target_hist_{target}.png",
        ),
        figures.plot_histogram(
            n_elements,
            "number of elements in the alloy",
            f"Number of elements, {name} set",
            fig_dir / f"n_elements_{target}.png",
            discrete=True,
        ),
    ]
    feats = featurize(table).select(FEATURE_NAMES).to_numpy()
    names = [f"{f} ({FEATURE_UNITS[f]})" for f in FEATURE_NAMES] + [label]
    corr = _pearson(np.column_stack([feats, y]))
    files.append(
        figures.plot_correlation(
            corr,
            names,
            f"Pearson correlation, 14 features and {label}",
            fig_dir / f"correlation_{target}.png",
        )
    )
    std = y.std()
    z = (y - y.mean()) / std if std > 0 else np.zeros_like(y)
    outliers = np.flatnonzero(np.abs(z) > Z_OUTLIER)
    unique = len(set(data.compositions))
    ranked = np.argsort(-np.abs(corr[-1, :-1]))[:3]
    top = ", ".join(
        f"{FEATURE_NAMES[i]} (r = {corr[-1, i]:.2f})" for i in ranked if np.isfinite(corr[-1, i])
    )
    lines = [
        f"{len(y)} rows, {unique} distinct compositions ({len(y) - unique} repeated rows), "
        f"{len(table.elements)} elements; {label}: mean {y.mean():.4g}, std {std:.4g}, "
        f"min {y.min():.4g}, max {y.max():.4g}. "
        f"Strongest linear feature–target correlations: {top}.",
        "",
        " ".join(f"![{f.stem}](figures/{f.name})" for f in files),
        "",
        f"z-score outliers of {label} (|z| > {Z_OUTLIER:g}, z with the whole set's mean and std):",
        "",
    ]
    if outliers.size:
        rows = [
            [str(i), data.compositions[i], f"{y[i]:.4g}", f"{z[i]:+.2f}"]
            for i in outliers[np.argsort(-np.abs(z[outliers]))]
        ]
        lines.append(markdown_table(["row", "composition", label, "z"], rows))
    else:
        lines.append("none.")
    return DatasetFigures("\n".join(lines), files)


def tsne_figure(
    run_dir: Path, targets: Sequence[str], fig_dir: Path, sample: int, seed: int, max_iter: int
) -> str:
    """t-SNE of a corpus subsample and the fine-tuning sets (standardized features + fractions)."""
    corpus_path = RunDir(run_dir).corpus
    if not corpus_path.is_file():
        return "_No corpus.parquet in this run; t-SNE skipped._"
    corpus = pl.read_parquet(corpus_path, columns=["composition"])["composition"]
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(corpus), size=min(sample, len(corpus)), replace=False))
    texts = corpus.gather(take).to_list()
    groups = [f"pre-training corpus (random {len(texts)} of {len(corpus)})"] * len(texts)
    for target in targets:
        path = RunDir(run_dir).dataset_csv(target)
        if path.is_file():
            comps = read_dataset(path, target=None).compositions
            texts += comps
            groups += [f"fine-tuning set: {TARGET_NAMES.get(target, target)}"] * len(comps)
    table = CompositionTable.from_compositions(texts)
    x = np.hstack([featurize(table).select(FEATURE_NAMES).to_numpy(), table.fractions])
    x = StandardScaler().fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (len(texts) - 1) / 3.5)))
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", max_iter=max_iter, random_state=seed
    )
    # one OpenMP thread: on a shared 2-core machine more threads spin-wait and run ~10x slower
    with threadpool_limits(limits=1):
        points = tsne.fit_transform(x)
    fig = figures.plot_embedding(
        points, groups, "t-SNE of standardized features + atomic fractions", fig_dir / "tsne.png"
    )
    return (
        f"![t-SNE](figures/{fig.name})\n\nPerplexity {perplexity:g}; inputs: the 14 features "
        f"and the atomic fractions over {len(table.elements)} elements, standardized over all "
        "points shown. Fine-tuning alloys far from every corpus point lie outside what "
        "pre-training showed the model."
    )


def conditions_section(run_dir: Path) -> list[str]:
    """The condition-aware run's per-task tables (``RUN/conditions/summary.md``), a level
    down, first: they are the product's numbers; the paper's pooled protocol follows."""
    summary = run_dir / "conditions" / "summary.md"
    if not summary.is_file():
        return []
    lines = summary.read_text(encoding="utf-8").splitlines()[1:]
    lines = [("#" + line if line.startswith("#") else line) for line in lines]
    lines = [line.replace("](parity_25c.png)", "](conditions/parity_25c.png)") for line in lines]
    return [
        "## Condition-aware models on the whole MPEA database (what ships)",
        *lines,
        "",
        "## The paper's pooled protocol (reproduction)",
        "",
    ]


def write_report(
    run_dir: str | Path, tsne_sample: int = 2000, tsne_max_iter: int = 1000, seed: int = 0
) -> Path:
    """Write ``RUN/report.md`` and ``RUN/figures/*.png``; returns the report's path.

    ``tsne_sample`` corpus rows (drawn with ``seed``) enter the t-SNE, run for
    ``tsne_max_iter`` iterations (at least 250); the t-SNE of 2000 + 356 points takes under a
    minute on one CPU core.
    """
    if tsne_sample < 1 or tsne_max_iter < 250:
        raise UserInputError(
            f"tsne_sample ({tsne_sample}) must be positive and tsne_max_iter ({tsne_max_iter}) "
            "at least 250"
        )
    run_dir = Path(run_dir)
    cv = load_cv_results(run_dir)
    fig_dir = RunDir(run_dir).figures
    summary = summarize(cv)
    known = [t for t in ("uts_mpa", "elongation_pct") if t in set(cv["target"])]
    targets = known + sorted(set(cv["target"]) - set(known))
    out = [
        f"# Training run report: {run_dir.resolve().name}",
        "",
        "Metrics are on standardized targets (scaler fitted on each training fold), as in the "
        "paper. *honest*: model selection on a validation part of the training fold only; "
        "*paper-leaky*: selection on the test fold, as the paper's release did, reported only to "
        "measure the inflation. Best fold = lowest MSE/MAE, highest R²; ± is the sample standard "
        "deviation over folds. **Paper** columns quote the paper's Tables 2, 3, 5 and 6 "
        "(its protocol: test-fold selection, features never fed to the transformer); they are "
        "references, not results of this run.",
        "",
        *conditions_section(run_dir),
        "## Headline: R² mean ± std over folds, honest protocol",
        "",
        headline_table(summary, targets),
        "",
        "## Inflation of the paper's protocol",
        "",
    ]
    inflation = inflation_table(cv)
    out += [inflation or "_No experiment ran both protocols in this run._", ""]
    for target in targets:
        table_no = PAPER_TABLE.get(target, "2–3")
        out += [
            f"## {quantity(target)}: every model (form of the paper's Table {table_no})",
            "",
            target_table(summary, target),
            "",
        ]
        predictions = collect_predictions(run_dir, target, cv)
        if predictions:
            parity = figures.plot_parity(
                predictions,
                quantity(target),
                f"{quantity(target)}: test folds pooled, honest protocol",
                fig_dir / f"parity_{target}.png",
            )
            residuals = figures.plot_residuals(
                predictions,
                quantity(target),
                f"{quantity(target)}: residuals on the test folds",
                fig_dir / f"residuals_{target}.png",
            )
            out += [
                f"![parity](figures/{parity.name})",
                "",
                f"![residuals](figures/{residuals.name})",
                "",
            ]
        honest = cv.filter((pl.col("target") == target) & (pl.col("protocol") == HONEST))
        r2 = {
            model_label(e, m): honest.filter((pl.col("experiment") == e) & (pl.col("model") == m))[
                "r2"
            ].to_numpy()
            for e, m in sorted(
                {(e, m) for e, m in zip(honest["experiment"], honest["model"])},
                key=lambda p: _sort_key(*p),
            )
        }
        reference = {
            model_label(e, m): PAPER_REFERENCE[paper_key(e, m)][target][2]
            for e, m in zip(honest["experiment"], honest["model"])
            if target in PAPER_REFERENCE.get(paper_key(e, m), {})
        }
        if r2:
            box = figures.plot_r2_boxes(
                r2,
                reference,
                f"{quantity(target)}: R² per test fold, honest protocol",
                fig_dir / f"r2_folds_{target}.png",
            )
            out += [f"![R² per fold](figures/{box.name})", ""]
    out += [
        "## All experiments, both targets (form of the paper's Tables 4–6)",
        "",
        wide_table(summary, targets),
        "",
    ]
    repeats = repeats_table(run_dir, cv)
    if repeats:
        out += ["## Baselines over repeated outer splits", "", repeats, ""]
    out += ["## Datasets", ""]
    for target in targets:
        out += [
            f"### {quantity(target)}",
            "",
            dataset_analysis(run_dir, target, fig_dir).markdown,
            "",
        ]
    out += [
        "## Pre-training corpus vs fine-tuning compositions",
        "",
        tsne_figure(run_dir, targets, fig_dir, tsne_sample, seed, tsne_max_iter),
        "",
    ]
    out += ["## Notes", "", *NOTES, ""]
    path = write_text_atomic(run_dir / "report.md", "\n".join(out))
    log.info("wrote %s", path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pretrain.report RUN``."""
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.report", description="Write RUN/report.md."
    )
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("--tsne-sample", type=int, default=2000, help="corpus rows in the t-SNE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        write_report(args.run, tsne_sample=args.tsne_sample)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
