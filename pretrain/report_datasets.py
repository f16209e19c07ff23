"""The report's look at the fine-tuning datasets and the fine-tuned models' predictions:
out-of-fold predictions, outliers, feature correlations and the t-SNE map (figures)."""

from __future__ import annotations

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
from pretrain import figures
from pretrain.baselines import (
    EXPERIMENT,
    read_dataset,
)
from pretrain.cv_results import HONEST
from pretrain.report_tables import (
    TARGET_NAMES,
    _sort_key,
    markdown_table,
    model_label,
    quantity,
)
from pretrain.run_dir import RunDir

Z_OUTLIER = 3.0


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
