"""One fold of the condition-aware run: a tabular family or the multi-task transformer trained
on the training part (selection on its validation part) and its ONNX predictions on the
held-out rows."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl
from skl2onnx import to_onnx

from hea_screen.conditions import PHASE, TASKS
from hea_screen.inference.design import monotonic_constraints
from hea_screen.output import atomic_write
from pretrain.condition_data import (
    NOT_FOR_PHASE,
    OUT_DIR,
    RECORD_SCHEMA,
    TRANSFORMER,
    Data,
)
from pretrain.config import ConditionsConfig
from pretrain.folds import Split
from pretrain.tabular import FamilyFit, fit_family, log_losses

log = logging.getLogger(__name__)


def _onnx_bytes(model: Any, x: np.ndarray, classify: bool) -> bytes:
    options = {id(model): {"zipmap": False}} if classify else None
    return to_onnx(model, x[:1], options=options, target_opset=17).SerializeToString()


def onnx_predict(blob: bytes, x: np.ndarray, classify: bool) -> np.ndarray:
    """Run an exported tabular model: values (regression) or class probabilities."""
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    return outputs[1] if classify else outputs[0].reshape(-1)


def tabular_fold(
    data: Data,
    split: Split,
    config: ConditionsConfig,
    seed: int,
    models_dir: Path | None,
    families: Sequence[str],
    on_fit: Callable[[str, str, np.ndarray, FamilyFit], None] | None = None,
) -> list[dict[str, Any]]:
    """``families`` (tabular, of the config) on every task of one split; the test
    predictions as records. ``on_fit(task, family, validation rows, fit)`` sees each fit
    (``benchmarks.route_choice`` reads the validation rows' losses)."""
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
        for family in families:
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
                monotonic=monotonic_constraints() if task.finer_grains_stronger else None,
            )
            if on_fit is not None:
                on_fit(task.name, family, va, fit)
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
                    "params": json.dumps(fit.params),
                }
                for r, p in zip(te, predicted)
            ]
    return records


def transformer_fold(
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
                "params": "{}",
            }
            for r, p in zip(split.test[in_test], fit.test_pred[in_test])
        ]
    return records


def _phase_log_loss(fold_dir: Path, encoder_dir: Path, data: Data, rows: np.ndarray) -> float:
    """Log-loss of a transformer fold's phase probabilities on measurement ``rows`` (the
    tabular families are compared on the same loss)."""
    from pretrain.multitask import (
        KEY,
        N_REGRESSION,
        encode_keys,
        load_encoder,
        load_fold,
        raw_outputs,
        task_values,
    )

    model, scalers = load_fold(fold_dir)
    keys = data.frame[rows].select(KEY)
    logits = raw_outputs(model, encode_keys(load_encoder(encoder_dir), keys)).numpy()
    proba = task_values(logits, scalers)[:, N_REGRESSION:]
    return float(np.mean(log_losses(proba, data.frame[rows]["value"].to_numpy())))


def run_splits(
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
