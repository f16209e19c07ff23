"""The condition-aware run's report: the parity figure and the Markdown summary of metrics,
selection and calibration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from hea_screen.conditions import PHASE, PHASES, ROOM_TEMPERATURE_C, TASKS
from hea_screen.output import atomic_write
from pretrain.config import ConditionsConfig
from pretrain.protocol import (
    regression_metrics,
)
from pretrain.tabular import LABELS


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
        ax.set_title(
            f"{task.name}\n{selection[task.name]['model']}: R² {m['r2']:.2f}, "
            f"ρ {m['spearman']:.2f}, n {m['n']}",
            fontsize=9,
        )
        ax.set_xlabel(f"measured ({task.unit})")
        ax.set_ylabel(f"predicted ({task.unit})")
    for ax in list(axes.flat)[len(tasks) :]:
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
