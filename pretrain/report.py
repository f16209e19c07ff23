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
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from hea_screen.errors import UserInputError
from pretrain import figures
from pretrain.atomic import write_text_atomic
from pretrain.cv_results import HONEST
from pretrain.report_datasets import collect_predictions, dataset_analysis, tsne_figure
from pretrain.report_tables import (
    PAPER_REFERENCE,
    PAPER_TABLE,
    _sort_key,
    headline_table,
    inflation_table,
    load_cv_results,
    model_label,
    paper_key,
    quantity,
    repeats_table,
    summarize,
    target_table,
    wide_table,
)
from pretrain.run_dir import RunDir

log = logging.getLogger(__name__)


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
