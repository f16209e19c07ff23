"""Figures of a training run: parity, residuals, R² boxes, dataset analysis, t-SNE, attention.

Every function draws one PNG from arrays it is given (no reading of run files here) on a
``matplotlib.figure.Figure`` with the Agg canvas (no pyplot global state, no display), and
writes it atomically. Axes carry units; titles say what is shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hea_screen.output import atomic_write

DPI = 120
PANEL = 3.4  # inches per small-multiple panel


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _grid(fig: Figure, n: int, ncols: int = 4) -> list:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    ss_res = float(np.sum((y_true - y_pred) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def plot_parity(
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    quantity: str,
    title: str,
    path: str | Path,
) -> Path:
    """Predicted vs measured, one panel per model (test folds pooled); ``quantity`` has units."""
    n = len(predictions)
    ncols = min(4, n)
    fig = _new_figure(PANEL * ncols, PANEL * math.ceil(n / ncols) + 0.5)
    values = np.concatenate([np.concatenate(v) for v in predictions.values()])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo or 1.0)
    lims = (lo - pad, hi + pad)
    for ax, (label, (y_true, y_pred)) in zip(_grid(fig, n, ncols), predictions.items()):
        ax.scatter(y_true, y_pred, s=12, alpha=0.6, edgecolors="none")
        ax.plot(lims, lims, color="black", lw=0.8, ls="--", label="y = x")
        ax.set_xlim(lims)
        ax.set_ylim(lims)
        ax.set_aspect("equal")
        ax.set_title(
            f"{label}\nR² (pooled) = {_r2(y_true, y_pred):.3f}, n = {len(y_true)}", fontsize=9
        )
        ax.set_xlabel(f"measured {quantity}", fontsize=8)
        ax.set_ylabel(f"predicted {quantity}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title)
    return save_png(fig, path)


def plot_residuals(
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    quantity: str,
    title: str,
    path: str | Path,
) -> Path:
    """Histogram of residuals (predicted − measured) per model, test folds pooled."""
    n = len(predictions)
    ncols = min(4, n)
    fig = _new_figure(PANEL * ncols, PANEL * 0.8 * math.ceil(n / ncols) + 0.5)
    residuals = {k: y_pred - y_true for k, (y_true, y_pred) in predictions.items()}
    bound = float(max(np.abs(r).max() for r in residuals.values())) or 1.0
    bins = np.linspace(-bound, bound, 31)
    for ax, (label, res) in zip(_grid(fig, n, ncols), residuals.items()):
        ax.hist(res, bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(f"{label}\nmean {res.mean():.3g}, sd {res.std():.3g}", fontsize=9)
        ax.set_xlabel(f"residual, predicted − measured {quantity}", fontsize=8)
        ax.set_ylabel("alloys", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title)
    return save_png(fig, path)


def plot_r2_boxes(
    r2_by_model: Mapping[str, np.ndarray],
    reference: Mapping[str, float],
    title: str,
    path: str | Path,
) -> Path:
    """Horizontal box plot of per-fold R² per model; the paper's mean R² as a red diamond."""
    labels = list(r2_by_model)
    fig = _new_figure(8.0, 1.0 + 0.4 * len(labels))
    ax = fig.subplots()
    data = [np.asarray(r2_by_model[k]) for k in labels]
    ax.boxplot(
        data,
        orientation="horizontal",
        tick_labels=labels,
        showmeans=True,
        showfliers=False,
        meanprops={"marker": "o", "markerfacecolor": "white", "markeredgecolor": "black"},
    )
    legend_done = False
    for i, k in enumerate(labels, start=1):
        ax.scatter(data[i - 1], np.full(len(data[i - 1]), i), s=10, color="tab:blue", zorder=3)
        if k in reference:
            label = None if legend_done else "paper, mean R² (its own protocol)"
            ax.scatter([reference[k]], [i], marker="D", color="tab:red", zorder=4, label=label)
            legend_done = True
    ax.axvline(0.0, color="grey", lw=0.6)
    ax.set_xlabel(
        "R² on the test fold (1; one dot per fold; box: quartiles, line: median, circle: mean)"
    )
    ax.set_title(title)
    ax.invert_yaxis()
    if legend_done:
        ax.legend(loc="lower left", fontsize=8)
    return save_png(fig, path)


def plot_element_counts(
    counts: Mapping[str, int], n_alloys: int, title: str, path: str | Path
) -> Path:
    """Bar chart: number of alloys containing each element."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    fig = _new_figure(max(6.0, 0.28 * len(items) + 1.5), 4.0)
    ax = fig.subplots()
    ax.bar([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_xlabel("element")
    ax.set_ylabel(f"alloys containing the element (of {n_alloys})")
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=8, rotation=90)
    return save_png(fig, path)


def plot_histogram(
    values: np.ndarray, quantity: str, title: str, path: str | Path, discrete: bool = False
) -> Path:
    """Histogram of a quantity (``discrete``: one bar per integer value)."""
    fig = _new_figure(6.0, 4.0)
    ax = fig.subplots()
    if discrete:
        vals, counts = np.unique(values.astype(int), return_counts=True)
        ax.bar(vals, counts, color="tab:blue")
        ax.set_xticks(vals)
    else:
        ax.hist(values, bins="auto", color="tab:blue", alpha=0.85)
    ax.set_xlabel(quantity)
    ax.set_ylabel("alloys")
    ax.set_title(title)
    return save_png(fig, path)


def plot_correlation(
    matrix: np.ndarray, names: Sequence[str], title: str, path: str | Path
) -> Path:
    """Annotated Pearson correlation heatmap (blank where undefined, e.g. a constant column)."""
    n = len(names)
    fig = _new_figure(0.55 * n + 3.0, 0.55 * n + 2.0)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    for i in range(n):
        for j in range(n):
            if np.isfinite(matrix[i, j]):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if abs(matrix[i, j]) > 0.6 else "black",
                )
    fig.colorbar(im, ax=ax, label="Pearson correlation coefficient r", shrink=0.8)
    ax.set_title(title)
    return save_png(fig, path)


def plot_embedding(points: np.ndarray, groups: Sequence[str], title: str, path: str | Path) -> Path:
    """2-D scatter of an embedding (t-SNE), coloured by group; the first group is drawn first."""
    fig = _new_figure(7.0, 6.0)
    ax = fig.subplots()
    groups_arr = np.asarray(groups)
    order = list(dict.fromkeys(groups))
    styles = {0: ("lightgrey", 6), 1: ("tab:red", 16), 2: ("tab:blue", 16), 3: ("tab:green", 16)}
    for i, g in enumerate(order):
        color, size = styles.get(i, (None, 16))
        sel = groups_arr == g
        ax.scatter(
            points[sel, 0],
            points[sel, 1],
            s=size,
            c=color,
            alpha=0.8 if i else 0.5,
            edgecolors="none",
            label=f"{g} (n = {int(sel.sum())})",
        )
    ax.set_xlabel("t-SNE dimension 1 (arbitrary units)")
    ax.set_ylabel("t-SNE dimension 2 (arbitrary units)")
    ax.set_title(title)
    ax.legend(fontsize=8, markerscale=1.5)
    return save_png(fig, path)


def plot_attention(
    matrix: np.ndarray,
    labels: Sequence[str],
    composition: str,
    layer: int,
    n_heads: int,
    path: str | Path,
) -> Path:
    """Heatmap of a symmetric element attention map; the diagonal (self-attention) is masked."""
    n = len(labels)
    side = 2.0 + 0.8 * n
    fig = _new_figure(side + 2.0, side)
    ax = fig.subplots()
    diagonal = np.eye(n, dtype=bool)
    im = ax.imshow(np.ma.masked_array(matrix, mask=diagonal), cmap="viridis")
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    off = matrix[~diagonal]
    middle = float(np.median(off)) if off.size else 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                color = "black" if matrix[i, j] > middle else "white"
                ax.text(
                    j, i, f"{matrix[i, j]:.3g}", ha="center", va="center", fontsize=8, color=color
                )
    fig.colorbar(im, ax=ax, label="mean attention weight, symmetrized (1)", shrink=0.8)
    ax.set_title(
        f"{composition}\nlast-layer attention (layer {layer}), mean over {n_heads} heads;"
        " diagonal masked",
        fontsize=9,
    )
    return save_png(fig, path)
