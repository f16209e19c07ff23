"""Summaries of the transformer rows of ``RUN/cv_results.csv``.

- ``RUN/finetune/summary.csv``: mean and standard deviation over folds of MSE, MAE and R²
  (standardized targets) per experiment, target and protocol;
- ``RUN/finetune/pretrained_vs_scratch.csv``: for each pair of experiments that differ only
  in their initialisation (``pretrained-X`` / ``scratch-X``), both R² and the paired
  per-fold difference (same folds, so the fold-to-fold spread largely cancels);
- ``RUN/finetune/summary.md``: the honest table, the pre-training gain, and the inflation of
  the paper's test-fold selection (``paper-leaky`` minus ``honest``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pretrain.atomic import write_csv_atomic, write_text_atomic
from pretrain.cv_results import HONEST, LEAKY, read_cv_results
from pretrain.run_dir import RunDir

MODEL_NAME = "transformer"


def summarize(results: pl.DataFrame) -> pl.DataFrame:
    """Mean and std over folds per experiment, target and protocol."""
    stats = [
        agg
        for m in ("r2", "mse", "mae")
        for agg in (pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_std"))
    ]
    return (
        results.group_by("experiment", "target", "protocol")
        .agg(pl.len().alias("folds"), *stats)
        .sort("target", "protocol", "experiment")
    )


def pretrained_vs_scratch(results: pl.DataFrame) -> pl.DataFrame:
    """Paired comparison of ``pretrained-X`` and ``scratch-X`` on the same folds."""
    tagged = results.with_columns(
        pl.col("experiment").str.splitn("-", 2).struct.rename_fields(["init", "variant"])
    ).unnest("experiment")
    pre = tagged.filter(pl.col("init") == "pretrained").select(
        "variant", "target", "protocol", "fold", pl.col("r2").alias("r2_pretrained")
    )
    scratch = tagged.filter(pl.col("init") == "scratch").select(
        "variant", "target", "protocol", "fold", pl.col("r2").alias("r2_scratch")
    )
    paired = pre.join(scratch, on=["variant", "target", "protocol", "fold"])
    return (
        paired.with_columns((pl.col("r2_pretrained") - pl.col("r2_scratch")).alias("gain"))
        .group_by("variant", "target", "protocol")
        .agg(
            pl.len().alias("folds"),
            pl.col("r2_pretrained").mean().alias("r2_pretrained_mean"),
            pl.col("r2_pretrained").std().alias("r2_pretrained_std"),
            pl.col("r2_scratch").mean().alias("r2_scratch_mean"),
            pl.col("r2_scratch").std().alias("r2_scratch_std"),
            pl.col("gain").mean().alias("r2_gain_mean"),
            pl.col("gain").std().alias("r2_gain_std"),
        )
        .sort("target", "protocol", "variant")
    )


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def write_finetune_summary(run: RunDir) -> Path:
    """Write the three summary files (module docstring); returns the Markdown path."""
    results = read_cv_results(run.cv_results).filter(pl.col("model") == MODEL_NAME)
    summary = summarize(results)
    paired = pretrained_vs_scratch(results)
    write_csv_atomic(summary, run.finetune / "summary.csv")
    write_csv_atomic(paired, run.finetune / "pretrained_vs_scratch.csv")

    lines = [
        "# Fine-tuning summary",
        "",
        "Mean ± standard deviation over the outer folds, standardized targets. **honest**: "
        "checkpoint chosen on the validation part of the training fold. **paper-leaky**: "
        "epoch chosen on the test fold (the released code's protocol), shown only to "
        "measure its inflation.",
        "",
        "## Honest cross-validation",
        "",
        "| target | experiment | R² | MSE | MAE |",
        "|---|---|---:|---:|---:|",
    ]
    for r in summary.filter(pl.col("protocol") == HONEST).iter_rows(named=True):
        lines.append(
            f"| {r['target']} | {r['experiment']} | {_pm(r['r2_mean'], r['r2_std'])} | "
            f"{_pm(r['mse_mean'], r['mse_std'])} | {_pm(r['mae_mean'], r['mae_std'])} |"
        )
    lines += [
        "",
        "## Pre-trained vs from scratch (same folds; gain = paired R² difference)",
        "",
        "| target | protocol | variant | pre-trained R² | scratch R² | gain |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in paired.iter_rows(named=True):
        lines.append(
            f"| {r['target']} | {r['protocol']} | {r['variant']} | "
            f"{_pm(r['r2_pretrained_mean'], r['r2_pretrained_std'])} | "
            f"{_pm(r['r2_scratch_mean'], r['r2_scratch_std'])} | "
            f"{_pm(r['r2_gain_mean'], r['r2_gain_std'])} |"
        )
    wide = summary.pivot("protocol", index=["target", "experiment"], values="r2_mean")
    lines += [
        "",
        "## Inflation of test-fold selection (R², mean over folds)",
        "",
        "| target | experiment | honest | paper-leaky | inflation |",
        "|---|---|---:|---:|---:|",
    ]
    if {HONEST, LEAKY} <= set(wide.columns):
        for r in wide.iter_rows(named=True):
            lines.append(
                f"| {r['target']} | {r['experiment']} | {r[HONEST]:.3f} | {r[LEAKY]:.3f} | "
                f"{r[LEAKY] - r[HONEST]:+.3f} |"
            )
    return write_text_atomic(run.finetune / "summary.md", "\n".join(lines) + "\n")
