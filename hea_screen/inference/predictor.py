"""Predict every task of a condition-aware bundle at a stated condition, on ONNX Runtime.

``TaskPredictor.predict(compositions, condition)`` featurizes the compositions once (polars),
builds the :mod:`hea_screen.inference.design` matrix at the condition (test temperature,
processing),
runs each task's fold models and reports, per regression task, in the task's unit:

- ``<task>_mean``: mean over the fold models;
- ``<task>_std``: their standard deviation (``ddof=1``);
- ``<task>_lo`` / ``<task>_hi``: the calibrated interval ``mean ∓ c·(std + offset)``, with the
  conformal factor ``c`` and the offset (the task's median spread) the bundle's manifest holds
  (measured coverage in the manifest); ``_lo`` is clipped at 0 (strengths, strains and
  hardness are non-negative);

and for the phase task ``phase_<class>_prob`` (mean class probability over folds). A task
whose training data do not cover the condition (test temperature outside their range, or a
processing route never measured) is named in ``extrapolated_tasks``; callers that rank on
such a task refuse it (:meth:`TaskPredictor.check_condition`). Per-task applicability
(``<task>_nearest_composition``, ``_nearest_distance``, ``_nearest_measured``: the
nearest alloy of that task's own training data, its L1 distance in atomic fractions and its
measured value) comes from
:mod:`hea_screen.inference.applicability`.

A predictor pickles as its bundle path and options, so Dask workers reopen it on arrival.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl

from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable, to_table
from hea_screen.conditions import PHASE, PHASES, Condition
from hea_screen.errors import UserInputError
from hea_screen.inference.applicability import TrainingSet
from hea_screen.inference.bundle import (
    TRANSFORMER,
    TRANSFORMER_OUTPUTS,
    TaskBundle,
    TaskModel,
    load_task_bundle,
)
from hea_screen.inference.design import condition_matrix
from hea_screen.inference.runtime import session_options


def as_table(compositions: Any) -> CompositionTable:
    """A :class:`CompositionTable` from a table, one composition, or an iterable of them.

    The same rules as ``featurize`` (:func:`~hea_screen.compositions.table.to_table`): a dict,
    a set, bytes or a non-iterable are refused, and a bad text raises naming its row.
    """
    if isinstance(compositions, pl.DataFrame):
        raise UserInputError(
            "predict() takes compositions, not a DataFrame: pass frame['composition'] "
            "(and the features frame as features=)"
        )
    return to_table(compositions)


def phase_column(phase: str) -> str:
    """Column of a phase probability: ``phase_bcc_prob``."""
    return f"phase_{phase.lower()}_prob"


class TaskPredictor:
    """Fold-ensemble predictions of the tasks of a format-2 bundle."""

    def __init__(self, path: str | Path, threads: int | None = None, sha256: str | None = None):
        self._options: dict[str, Any] = {"path": str(path), "threads": threads, "sha256": sha256}
        self.bundle: TaskBundle = load_task_bundle(path, sha256)
        self.training_set = TrainingSet.from_json(self.bundle.training_set_text())
        self._session_options = session_options(threads)
        # Sessions open on first use (a screen ranks two or three of the eight tasks, and its
        # cheap stage reads one fold of each): :meth:`_fold_sessions`.
        self._sessions: dict[str, ort.InferenceSession] = {}

    @property
    def bundle_sha256(self) -> str:
        """The bundle's identity: SHA-256 of its ``manifest.json``."""
        return self.bundle.sha256

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t.task.name for t in self.bundle.tasks)

    @property
    def summary(self) -> str:
        models = ", ".join(f"{t.task.name}: {t.model} x{len(t.files)}" for t in self.bundle.tasks)
        where = f"{self.bundle.path} ({self.bundle.sha256[:12]})"
        return f"CPUExecutionProvider; {models}; bundle {where}"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self._options)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def check_condition(self, condition: Condition, tasks: Sequence[str]) -> None:
        """Refuse ranking ``tasks`` at a condition their training data do not cover."""
        for name in tasks:
            self.bundle.task(name).coverage.check(name, condition)

    def _fold_sessions(self, files: Sequence[str], folds: int | None) -> list[ort.InferenceSession]:
        """Sessions of the first ``folds`` (default: all) of ``files``, opened once each."""
        chosen = files[: len(files) if folds is None else folds]
        for rel in chosen:
            if rel not in self._sessions:
                self._sessions[rel] = ort.InferenceSession(
                    self.bundle.read(rel), self._session_options, providers=["CPUExecutionProvider"]
                )
        return [self._sessions[rel] for rel in chosen]

    def predict(
        self,
        compositions: CompositionTable | Iterable[Any] | str,
        condition: Condition | None = None,
        tasks: Sequence[str] | None = None,
        features: pl.DataFrame | None = None,
        *,
        folds: int | None = None,
        applicability: bool = True,
    ) -> pl.DataFrame:
        """Predictions of ``tasks`` (default: all) at ``condition`` (default: tension, 25 °C,
        as-cast), one row per composition in input order (see module docstring).

        ``folds`` limits each task to its first fold models (the screen's cheap first stage:
        ``folds=1`` gives the fold-0 value as ``_mean`` and a zero ``_std``);
        ``applicability=False`` leaves out the nearest-training-data columns.
        """
        condition = condition or Condition()
        chosen = [self.bundle.task(n) for n in (tasks or self.tasks)]
        table = as_table(compositions)
        feats = featurize(table) if features is None else features
        x = condition_matrix(feats, condition)  # one design matrix for every tabular task
        logits = None
        if any(m.kind == TRANSFORMER for m in chosen):
            logits = self._transformer_logits(table, feats, condition, folds)
        columns: dict[str, Any] = {"composition": table.canonical_texts()}
        for model in chosen:
            if model.kind == TRANSFORMER:
                columns.update(self._transformer_columns(model, logits))
            else:
                first = model if folds is None else replace(model, files=model.files[:folds])
                columns.update(self._task_columns(first, x))
        columns["extrapolated_tasks"] = ",".join(
            m.task.name for m in chosen if m.coverage.gaps(condition)
        )
        frame = pl.DataFrame(columns)
        if not applicability:
            return frame
        nearest = self.training_set.applicability(table).select(
            "unseen_elements",
            *(
                f"{m.task.name}_{suffix}"
                for m in chosen
                if m.task is not PHASE
                for suffix in ("nearest_composition", "nearest_distance", "nearest_measured")
            ),
        )
        return pl.concat([frame, nearest], how="horizontal")

    def _task_columns(self, model: TaskModel, x: np.ndarray) -> dict[str, np.ndarray]:
        sessions = self._fold_sessions(model.files, None)
        if model.task is PHASE:
            probs = np.mean([s.run(None, {s.get_inputs()[0].name: x})[1] for s in sessions], axis=0)
            return {phase_column(p): probs[:, i] for i, p in enumerate(PHASES)}
        values = np.stack(
            [s.run(None, {s.get_inputs()[0].name: x})[0].reshape(-1) for s in sessions]
        ).astype(np.float64)
        return self._summary(model, values)

    def _transformer_logits(
        self,
        table: CompositionTable,
        features: pl.DataFrame,
        condition: Condition,
        folds: int | None = None,
    ) -> np.ndarray:
        """(folds, rows, outputs) logits of the transformer's fold networks, batched by
        number of elements (one token length per batch). Each fold network runs once per
        batch and gives every task's output (one encoding feeds every fold)."""
        encoder = self.bundle.encoder
        assert encoder is not None, "a transformer task without a tokenizer"
        shared = next(t.files for t in self.bundle.tasks if t.kind == TRANSFORMER)
        sessions = self._fold_sessions(shared, folds)
        counts = (table.micro > 0).sum(axis=1)
        out = np.empty((len(sessions), len(table), len(TRANSFORMER_OUTPUTS)))
        for k in np.unique(counts):
            rows = np.flatnonzero(counts == k)
            feed = encoder.encode(table.take(rows), features[rows], condition).as_dict()
            for f, session in enumerate(sessions):
                out[f, rows] = session.run(["logits"], feed)[0]
        return out

    def _transformer_columns(self, model: TaskModel, logits: np.ndarray) -> dict[str, Any]:
        j = model.output
        if model.task is PHASE:
            z = logits[:, :, j : j + len(PHASES)]
            e = np.exp(z - z.max(axis=2, keepdims=True))
            probs = (e / e.sum(axis=2, keepdims=True)).mean(axis=0)
            return {phase_column(p): probs[:, i] for i, p in enumerate(PHASES)}
        # (folds, [mean, std]) of the fold networks that ran
        scale = np.asarray(model.scalers[: len(logits)], dtype=np.float64)
        values = logits[:, :, j] * scale[:, 1:2] + scale[:, 0:1]
        return self._summary(model, values)

    @staticmethod
    def _summary(model: TaskModel, values: np.ndarray) -> dict[str, np.ndarray]:
        """Mean, fold std and calibrated interval of (folds, rows) values."""
        name = model.task.name
        mean = values.mean(axis=0)
        std = values.std(axis=0, ddof=1 if len(values) > 1 else 0)
        half = model.half_width(std)
        return {
            f"{name}_mean": mean,
            f"{name}_std": std,
            f"{name}_lo": np.maximum(mean - half, 0.0),  # strengths, strains, HV are >= 0
            f"{name}_hi": mean + half,
        }
