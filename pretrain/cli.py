"""``hea-train``: build a training run directory from a YAML config.

Usage::

    hea-train --config configs/small.yaml --out runs/small            # the whole pipeline
    hea-train finetune --config configs/small.yaml --out runs/small   # one step

Steps, in order: ``corpus`` (generate the pre-training corpus and its report), ``tokenizer``
(fit the feature bins), ``pretrain`` (MLM pre-training), ``finetune`` (cross-validated
fine-tuning of every experiment and target on the paper's sets), ``baselines`` (classical
models on the same folds), ``conditions`` (the condition-aware run on the whole MPEA
database: every model per task and test type, grouped folds, calibration; see
``pretrain/condition_run.py``) and ``report``. ``all`` (the default) runs them in turn.
Every step skips work a previous run finished (a corpus, tokenizer or pre-trained model
that exists, each finished fold), so an interrupted run continues where it stopped. A run
directory keeps the config it was made with (``config.yaml``); a different config needs a
new ``--out``, except one that only adds tabular families to ``conditions.families`` or
changes ``conditions.costly_families`` / ``costly_partitions``: it is recorded, and the
``conditions`` step fits only what the finished partitions lack (and reports only what the
new config asks for).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from hea_screen.datasets.sources import data_dir
from hea_screen.errors import UserInputError
from hea_screen.extras import missing_train_extra
from pretrain.atomic import write_text_atomic
from pretrain.config import ConditionsConfig, TrainConfig, load_config
from pretrain.run_dir import RunDir

log = logging.getLogger("hea-train")

STEPS = ("corpus", "tokenizer", "pretrain", "finetune", "baselines", "conditions", "report")
TIMINGS = "timings.json"


def _data_directory(config: TrainConfig) -> Path:
    return Path(config.data_dir).resolve() if config.data_dir else data_dir()


def step_corpus(run: RunDir, config: TrainConfig) -> None:
    from pretrain.corpus import generate_corpus, write_corpus
    from pretrain.corpus_report import write_corpus_report

    if run.corpus.exists():
        log.info("corpus: %s exists, skipped", run.corpus)
        return
    result = generate_corpus(config.corpus, config.seed)
    write_corpus_report(run.root, result, _data_directory(config) / config.corpus.reference)
    write_corpus(result, run.corpus)
    log.info("corpus: %d alloys written to %s", result.frame.height, run.corpus)


def step_tokenizer(run: RunDir, config: TrainConfig) -> None:
    from pretrain.run_dir import atomic_directory
    from pretrain.tokenizer_fit import fit_tokenizer

    if run.tokenizer.exists():
        log.info("tokenizer: %s exists, skipped", run.tokenizer)
        return
    _require(run.corpus, "corpus")
    with atomic_directory(run.tokenizer) as tmp:
        fit_tokenizer(run.corpus, tmp, _data_directory(config))


def step_pretrain(run: RunDir, config: TrainConfig) -> None:
    from pretrain.mlm import pretrain_mlm

    if run.pretrained.exists():
        log.info("pretrain: %s exists, skipped", run.pretrained)
        return
    _require(run.tokenizer, "tokenizer")
    pretrain_mlm(run, config.model, config.pretrain, config.seed)


def step_finetune(run: RunDir, config: TrainConfig) -> None:
    from pretrain.finetune import run_finetune
    from pretrain.finetune_summary import write_finetune_summary

    _require(run.tokenizer, "tokenizer")
    run_finetune(run, config, _data_directory(config))
    log.info("finetune: summary in %s", write_finetune_summary(run))


def step_baselines(run: RunDir, config: TrainConfig) -> None:
    module = _optional("pretrain.baselines", "run_baselines")
    if module is None:
        return
    from pretrain.cv_results import read_cv_results

    targets = [t.name for t in config.finetune.targets]
    for target in targets:
        _require(run.dataset_csv(target), "finetune")
    done = set(
        read_cv_results(run.cv_results)
        .filter(pl.col("experiment") == "baseline")["target"]
        .unique()
        .to_list()
    )
    if set(targets) <= done:
        log.info("baselines: results for %s exist, skipped", ", ".join(targets))
        return
    settings = {
        **(config.baselines or {}),
        "n_folds": config.finetune.folds,
        "seed": config.seed,
        "targets": targets,
    }
    module.run_baselines(run.root, {"baselines": settings})


def step_conditions(run: RunDir, config: TrainConfig) -> None:
    """The condition-aware run on the whole MPEA database (a config without a
    ``conditions`` section skips it)."""
    if config.conditions is None:
        log.info("conditions: no conditions section in the config, skipped")
        return
    from pretrain.condition_run import run_conditions

    if config.conditions.transformer:
        _require(run.tokenizer, "tokenizer")
    out = run_conditions(
        run.root,
        config.conditions,
        _data_directory(config),
        model_config=config.model.dimensions(),
        threads=config.threads,
        seed=config.seed,
    )
    log.info("conditions: results in %s", out)


def step_report(run: RunDir, config: TrainConfig) -> None:
    module = _optional("pretrain.report", "write_report")
    if module is not None:
        log.info("report: %s", module.write_report(run.root))


STEP_FUNCTIONS: dict[str, Callable[[RunDir, TrainConfig], None]] = {
    "corpus": step_corpus,
    "tokenizer": step_tokenizer,
    "pretrain": step_pretrain,
    "finetune": step_finetune,
    "baselines": step_baselines,
    "conditions": step_conditions,
    "report": step_report,
}


def _optional(module_name: str, function: str):
    """The module if it is installed and has ``function``; else None (logged)."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        log.warning("%s is not available: step skipped", module_name)
        return None
    if not hasattr(module, function):
        log.warning("%s has no %s(): step skipped", module_name, function)
        return None
    return module


def _require(path: Path, step: str) -> None:
    if not path.exists():
        raise UserInputError(f"{path} is missing: run the {step} step first")


#: The ``conditions`` keys a finished run may change (:func:`extends_conditions`).
RESUMABLE = ("families", "costly_families", "costly_partitions")


def extends_conditions(recorded: TrainConfig, config: TrainConfig) -> bool:
    """Whether ``config`` is ``recorded`` with tabular families added to ``conditions`` and
    its costly families or their partitions changed (the conditions step then fits only what
    the finished partitions lack and reports what ``config`` asks for,
    :mod:`pretrain.condition_run`)."""
    old, new = recorded.conditions, config.conditions
    if old is None or new is None or not set(old.families) <= set(new.families):
        return False

    def fixed(section: ConditionsConfig) -> dict[str, object]:
        return {k: v for k, v in dataclasses.asdict(section).items() if k not in RESUMABLE}

    return fixed(old) == fixed(new) and dataclasses.replace(recorded, conditions=new) == config


def prepare_run(out: Path, config: TrainConfig) -> RunDir:
    """Create the run directory and record the config, or check it matches the recorded one."""
    run = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    if run.config.exists():
        recorded = load_config(run.config)
        if recorded != config and extends_conditions(recorded, config):
            log.info("%s: conditions families changed, recorded in %s", out, run.config)
            write_text_atomic(run.config, config.to_yaml())
        elif recorded != config:
            changed = [k for k, v in config.as_dict().items() if recorded.as_dict()[k] != v]
            raise UserInputError(
                f"{out} was made with a different config ({run.config}; differs in "
                f"{', '.join(changed)}): use a new --out directory or the same config"
            )
    else:
        write_text_atomic(run.config, config.to_yaml())
    return run


def run_steps(steps: Sequence[str], run: RunDir, config: TrainConfig) -> dict[str, float]:
    """Run steps in order; returns and records (``timings.json``) their wall times."""
    timings_path = run.root / TIMINGS
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    for step in steps:
        started = time.perf_counter()
        log.info("step %s started", step)
        STEP_FUNCTIONS[step](run, config)
        seconds = round(time.perf_counter() - started, 1)
        timings[step] = seconds
        write_text_atomic(timings_path, json.dumps(timings, indent=1))
        log.info("step %s finished in %.1f s", step, seconds)
    return timings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hea-train",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "step", nargs="?", default="all", choices=("all", *STEPS),
        help="step to run (default: all, in order)",
    )  # fmt: skip
    parser.add_argument("--config", required=True, type=Path,
                        help="YAML config, e.g. configs/small.yaml")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hea-train``; without the ``train`` extra, says what to install (exit 2)."""
    message = missing_train_extra("hea-train", ("torch", "transformers", "sklearn"))
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        return 2
    return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        run = prepare_run(args.out, config)
        if args.step in ("pretrain", "finetune", "conditions", "all"):
            import torch

            torch.set_num_threads(config.threads)
        run_steps(STEPS if args.step == "all" else (args.step,), run, config)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
