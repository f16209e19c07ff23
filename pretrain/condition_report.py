"""The condition-aware run's report: the parity figure and the Markdown summary of metrics,
selection and calibration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from hea_screen.conditions import PHASE, PHASES, ROOM_TEMPERATURE_C, TASKS
from hea_screen.output import atomic_write
from pretrain.condition_eval import ROUTE_SLICES
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
    ceilings: dict[str, float],
) -> str:
    """Per-task tables (25 °C, grouped folds, per route; then cluster folds), the replicate
    noise ceiling of each task (``ceilings``, :func:`pretrain.protocol.noise_ceiling` at
    25 °C), selection, interval coverage per route and distance band."""
    lines = [
        "# Condition-aware models: per task, never pooled across test types",
        "",
        "![parity](parity_25c.png)",
        "",
        f"Grouped {config.folds}-fold CV by composition (alloys within L1 0.02 share a group), "
        f"{len(config.seeds)} random partitions (seeds {config.seeds}); metrics on the "
        "out-of-fold predictions of each partition at 25 °C, mean ± SD over partitions; R² per "
        "route on that route's 25 °C rows; a model run on fewer partitions (for time) says "
        "how many. "
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
            ceiling = ceilings.get(task.name, math.nan)
            lines += [
                f"### {task.label} (`{task.name}`)"
                + (f": noise ceiling R² {ceiling:.2f}" if math.isfinite(ceiling) else ""),
                "",
            ]
            if task is PHASE:
                lines += ["| model | n | accuracy | balanced accuracy |", "|---|---:|---:|---:|"]
                for r in part.sort("accuracy", descending=True, nulls_last=True).iter_rows(
                    named=True
                ):
                    lines.append(
                        f"| {_label(r, shipped, len(config.seeds))} | {r['n']} | "
                        f"{_fmt(r['accuracy'], r['accuracy_std'])} | "
                        f"{_fmt(r['balanced_accuracy'], r['balanced_accuracy_std'])} |"
                    )
            else:
                lines += [
                    "| model | n | R² | MAE | Spearman ρ | top-decile recall | "
                    + " | ".join(f"R² {r.lower()}" for r in ROUTE_SLICES)
                    + " |",
                    "|---|---:|---:|---:|---:|---:|" + "---:|" * len(ROUTE_SLICES),
                ]
                for r in part.sort("r2", descending=True, nulls_last=True).iter_rows(named=True):
                    routes = []
                    for route in ROUTE_SLICES:
                        got = summary.filter(
                            pl.col("protocol") == protocol,
                            pl.col("task") == task.name,
                            pl.col("model") == r["model"],
                            pl.col("slice") == f"25C_{route}",
                        )
                        routes.append(
                            _fmt(got["r2"][0], got["r2_std"][0]) + f" (n {got['n'][0]})"
                            if got.height
                            else "–"
                        )
                    lines.append(
                        f"| {_label(r, shipped, len(config.seeds))} | {r['n']} | "
                        f"{_fmt(r['r2'], r['r2_std'])} | {_fmt(r['mae'], r['mae_std'])} | "
                        f"{_fmt(r['spearman'], r['spearman_std'])} | "
                        f"{_fmt(r['top_decile_recall'], r['top_decile_recall_std'])} | "
                        + " | ".join(routes)
                        + " |"
                    )
            lines.append("")
    lines += [
        "## Calibrated 90 % intervals of the shipped models",
        "",
        "Built in log (strengths, HV) or logit (%) space, so lo > 0 and percentages stay "
        "within 0-100 %; scale (spread + offset)·exp(b·min(d, cap)), d the L1 distance to the "
        "task's nearest alloy measured at the route and temperature band; one conformal factor "
        "per route with >= 30 rows (Mondrian). Coverage cross-conformal, averaged over the "
        "partitions' fold assignments; per route and per distance band (L1 to the nearest "
        "alloy of another group of the task) as coverage (rows, ± SD of a perfectly "
        "calibrated cell of those rows and groups).",
        "",
        "| task | model | space | c pooled | c per route | distance slope b | coverage (all) "
        "| coverage (25 °C) | median half-width (25 °C) | per route | per distance band |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for task, choice in selection.items():
        cal = calibration.get(choice["model"], {}).get(task)
        if cal:
            routes = ", ".join(f"{r.lower()} {c:.2f}" for r, c in cal["factor_by_route"].items())
            by_route = ", ".join(
                f"{r.lower()} {_cell(v)}" for r, v in cal["coverage_by_route"].items()
            )
            by_band = ", ".join(f"{b} {_cell(v)}" for b, v in cal["coverage_by_distance"].items())
            lines.append(
                f"| `{task}` | {choice['model']} | {cal['space']} | {cal['factor']:.2f} | "
                f"{routes} | {cal.get('distance_slope', 0.0):.2f} | {cal['coverage']:.3f} | "
                f"{cal['coverage_25c']:.3f} | "
                f"{cal['median_half_width_25c']:.1f} | {by_route} | {by_band} |"
            )
    lines += [
        "",
        f"Units: MAE in the task's unit (MPa, %, HV). Phase classes: {', '.join(PHASES)}.",
        "",
    ]
    return "\n".join(lines)


def _label(row: dict[str, Any], shipped: str | None, partitions: int) -> str:
    """A summary row's model: its label, ``(N partitions)`` where it ran on fewer than the
    grouped protocol's ``partitions``, ``(shipped)`` for the model its task ships with."""
    fewer = row["protocol"] == "grouped" and row["partitions"] < partitions
    return (
        LABELS.get(row["model"], row["model"])
        + (f" ({row['partitions']} partitions)" if fewer else "")
        + (" (shipped)" if row["model"] == shipped else "")
    )


def _cell(cell: dict[str, Any]) -> str:
    """``coverage (rows, ± SD if calibrated)`` of a coverage cell (the SD where known)."""
    sd = cell.get("sd_if_calibrated")
    spread = f", ±{sd:.2f}" if isinstance(sd, float) and math.isfinite(sd) else ""
    return f"{cell['coverage']:.2f} ({cell['rows']}{spread})"
