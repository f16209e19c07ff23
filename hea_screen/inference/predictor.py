"""Predict every task of a model bundle at a stated condition, on ONNX Runtime.

``load_model(path)`` verifies a bundle (:mod:`hea_screen.inference.bundle`), picks an execution
provider and a precision for its transformer member and returns a :class:`TaskPredictor`.
``TaskPredictor.predict(compositions, condition)`` featurizes the compositions once (polars),
builds the :mod:`hea_screen.inference.design` matrix at the condition (test temperature,
processing),
runs each task's fold models and reports, per regression task, in the task's unit:

- ``<task>_mean``: mean over the fold models;
- ``<task>_std``: their standard deviation (``ddof=1``);
- ``<task>_lo`` / ``<task>_hi``: the calibrated 90 % interval of
  :mod:`hea_screen.inference.intervals`, built in log space (strengths, hardness) or logit
  space (percentages) so it stays physical (> 0; within 0-100 %), with the conformal factor
  of the condition's processing route, the offset, distance slope and space the bundle's
  manifest holds (measured coverage per route and distance band in the manifest); the
  distance is ``<task>_nearest_distance``, or the distance to the nearest alloy the task's
  models learned where ``update`` added lab alloys they did not (with
  ``applicability=False``, or where no alloy was measured at the condition, it is unknown and
  the interval takes its widest scale);

and for the phase task ``phase_<class>_prob`` (mean class probability over folds). A task
whose training data do not cover the condition (test temperature outside their range, or a
processing route never measured) is named in ``extrapolated_tasks``; callers that rank on
such a task refuse it (:meth:`TaskPredictor.check_condition`). Per-task applicability
(``<task>_nearest_composition``, ``_nearest_distance``, ``_nearest_measured``: the
nearest alloy of that task's own training data, its L1 distance in atomic fractions and its
measured value) comes from
:mod:`hea_screen.inference.applicability`.

Providers and precisions. Tabular members (tree ensembles, GP, K-NN) run fp32 on the CPU
provider: ONNX Runtime has no CUDA kernels for them. The transformer member runs

=========  ==============================  =========================================
device     provider                        precision (``"auto"`` takes the first written)
=========  ==============================  =========================================
``cuda``   CUDAExecutionProvider,          fp16, fp32
           inputs and outputs bound on the
           device with I/O binding
``cpu``    CPUExecutionProvider            int8 (dynamically quantized), fp32
``auto``   CUDA when a GPU is usable and the bundle holds a CUDA variant, else CPU
=========  ==============================  =========================================

on rows grouped by number of elements (one token length per group, so a batch is never
padded), in chunks of ``batch_size`` rows, every fold network on one encoding.

A predictor pickles as its bundle path, options and bundle SHA-256 (never its sessions), so
Dask workers reopen it on arrival, from the same bundle or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl

from hea_screen.compositions.features import FEATURE_NAMES, featurize
from hea_screen.compositions.table import CompositionTable, to_table
from hea_screen.conditions import PHASE, PHASES, Condition, Processing
from hea_screen.errors import BundleError, UserInputError, brief
from hea_screen.inference.applicability import NEAREST_COLUMNS, TrainingSet
from hea_screen.inference.bundle import (
    TRANSFORMER,
    TRANSFORMER_OUTPUTS,
    TaskBundle,
    TaskModel,
    load_task_bundle,
)
from hea_screen.inference.bundle_files import bundle_root
from hea_screen.inference.design import DESIGN_COLUMNS, condition_matrix
from hea_screen.inference.runtime import (
    CPU,
    CUDA,
    DEVICES,
    PRECISIONS,
    PROVIDER_PRECISIONS,
    cuda_usable,
    session_options,
)
from hea_screen.inference.tokens import Encoded

log = logging.getLogger(__name__)

_OUTPUT = "logits"


def load_model(
    path: str | Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 1024,
    threads: int | None = None,
    io_binding: bool | None = None,
    sha256: str | None = None,
) -> TaskPredictor:
    """Open a model bundle for prediction.

    ``path`` is a bundle directory written by ``hea-export --conditions``; ``None`` or
    ``"default"`` takes the shipped default bundle (``hea_screen/models/default``),
    ``"transformer"`` the shipped transformer bundle (``hea_screen/models/transformer``).
    ``device`` is ``"auto"``, ``"cpu"`` or ``"cuda"``; ``precision`` is ``"auto"``, ``"fp32"``,
    ``"fp16"`` (CUDA) or ``"int8"`` (CPU): both apply to the transformer member, tabular members
    run fp32 on the CPU. ``batch_size`` bounds the rows per transformer call; ``threads`` sets
    ONNX Runtime's intra-op threads (``None``: one per core); ``io_binding`` binds the
    transformer's inputs and outputs to the device (``None``: on for CUDA, off for CPU);
    ``sha256`` pins the bundle: the SHA-256 of its ``manifest.json`` (64 hex digits, or a prefix
    of at least 12), any other is refused. Raises :class:`BundleError` for a missing, altered,
    incomplete or other than pinned bundle and :class:`UserInputError` for an option that
    cannot be honoured (``device="cuda"`` or ``precision="fp16"`` without a usable GPU).
    """
    return TaskPredictor(bundle_root(path), threads, sha256, device, precision, batch_size,
                         io_binding)


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
    """Fold-ensemble predictions of the tasks of a bundle; build it with :func:`load_model`."""

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        sha256: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 1024,
        io_binding: bool | None = None,
        training_set: bool = True,
    ):
        _check_choice("device", device, DEVICES)
        _check_choice("precision", precision, PRECISIONS)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise UserInputError(f"threads must be a positive integer or None, got {threads!r}")
        self.bundle: TaskBundle = load_task_bundle(path, sha256, training_set=training_set)
        self._options: dict[str, Any] = {
            "path": str(path),
            "threads": threads,
            "sha256": self.bundle.sha256,
            "device": device,
            "precision": precision,
            "batch_size": batch_size,
            "io_binding": io_binding,
            "training_set": training_set,
        }
        # None with training_set=False: predictions then need applicability=False
        self.training_set: TrainingSet | None = self.bundle.training_set
        self._session_options = session_options(threads)
        self.batch_size = batch_size
        self.provider, self.precision = resolve_device(self.bundle, device, precision)
        self.io_binding = (self.provider == CUDA) if io_binding is None else bool(io_binding)
        # Sessions open on first use (a screen ranks two or three of the eight tasks, and its
        # cheap stage reads one fold of each): :meth:`_fold_sessions`.
        self._sessions: dict[str, ort.InferenceSession] = {}

    @property
    def bundle_sha256(self) -> str:
        """The bundle's identity: SHA-256 of its ``manifest.json`` (which hashes every file)."""
        return self.bundle.sha256

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t.task.name for t in self.bundle.tasks)

    @property
    def summary(self) -> str:
        """One line for users: providers, precision, models, bundle and its SHA-256."""
        models = ", ".join(f"{t.task.name}: {t.model} x{len(t.files)}" for t in self.bundle.tasks)
        where = f"{self.bundle.path} (sha256 {self.bundle.sha256})"
        runs = CPU
        if self.bundle.variants:
            binding = ", I/O binding" if self.io_binding else ""
            runs = f"transformer on {self.provider} ({self.precision}{binding}), tabular on {CPU}"
        return f"{runs}; {models}; bundle {where}"

    def __repr__(self) -> str:
        return f"TaskPredictor({self.summary})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickle as the bundle path, options and SHA-256 only; sessions are reopened on
        unpickling, from the same bundle or not at all."""
        return dict(self._options)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def check_condition(self, condition: Condition, tasks: Sequence[str]) -> None:
        """Refuse ranking ``tasks`` at a condition their training data do not cover."""
        for name in tasks:
            self.bundle.task(name).coverage.check(name, condition)

    def _fold_sessions(
        self, files: Sequence[str], folds: int | None, provider: str = CPU
    ) -> list[ort.InferenceSession]:
        """Sessions of the first ``folds`` (default: all) of ``files``, opened once each from
        the bytes whose SHA-256 was checked."""
        chosen = files[: len(files) if folds is None else folds]
        providers: list[Any] = [(CUDA, {"device_id": 0}), CPU] if provider == CUDA else [CPU]
        for rel in chosen:
            if rel not in self._sessions:
                data = self.bundle.read(rel)  # the bytes whose SHA-256 is checked
                try:
                    session = ort.InferenceSession(data, self._session_options, providers=providers)
                except Exception as exc:  # ONNX Runtime's load errors share no base class
                    raise BundleError(
                        f"bundle file {self.bundle.path / rel} is not an ONNX model ONNX Runtime "
                        f"can load ({brief(exc, 100)})"
                    ) from None
                self._check_signature(rel, session)
                self._sessions[rel] = session
        return [self._sessions[rel] for rel in chosen]

    def _check_signature(self, rel: str, session: ort.InferenceSession) -> None:
        """Refuse a fold model whose inputs or outputs are not those of its task (say, a
        phase classifier copied over a UTS regressor and re-hashed into the manifest)."""
        # None: a network of the transformer's variants, which serve every transformer task
        model = next((t for t in self.bundle.tasks if rel in t.files), None)
        outputs = {o.name: o for o in session.get_outputs()}
        if model is None or model.kind == TRANSFORMER:
            want = f"an output {_OUTPUT!r} of [rows, {len(TRANSFORMER_OUTPUTS)}]"
            ok = _OUTPUT in outputs and _width(outputs[_OUTPUT].shape) == len(TRANSFORMER_OUTPUTS)
        else:
            inputs = session.get_inputs()
            width = len(PHASES) if model.task is PHASE else 1
            index = 1 if model.task is PHASE else 0
            found = session.get_outputs()
            want = (
                f"one input of [rows, {len(DESIGN_COLUMNS)}], output {index} float [rows, {width}]"
            )
            ok = (
                len(inputs) == 1
                and _width(inputs[0].shape) == len(DESIGN_COLUMNS)
                and len(found) > index
                and "float" in found[index].type
                and _width(found[index].shape) == width
            )
        if not ok:
            shapes = ", ".join(f"{o.name} {o.type} {o.shape}" for o in session.get_outputs())
            raise BundleError(
                f"bundle file {self.bundle.path / rel}: the model's outputs ({shapes}) are not "
                f"those of {model.task.name if model else 'the transformer'} (need {want}): "
                "a file of another task?"
            )

    def _transformer_sessions(self, folds: int | None) -> list[ort.InferenceSession]:
        """The transformer's fold sessions in the chosen precision; where the CUDA provider
        fails to start, ``device="cuda"`` raises and ``"auto"`` falls back to the CPU."""
        sessions = self._fold_sessions(self.bundle.variants[self.precision], folds, self.provider)
        if self.provider == CUDA and CUDA not in sessions[0].get_providers():
            if self._options["device"] == "cuda":
                raise UserInputError(
                    "device='cuda' was requested but ONNX Runtime could not start its CUDA "
                    "provider (see its log for the missing library); use device='cpu' or 'auto'"
                )
            log.warning("CUDA provider failed to start; the transformer falls back to the CPU")
            for rel in self.bundle.variants[self.precision]:
                self._sessions.pop(rel, None)
            wanted = self._options["precision"]
            self.provider, self.precision = resolve_device(
                self.bundle, "cpu", "auto" if wanted in ("auto", "fp16") else wanted
            )
            self.io_binding = bool(self._options["io_binding"])
            return self._transformer_sessions(folds)
        return sessions

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

        ``features``: the frame :func:`hea_screen.featurize` returned for the same rows, when
        the caller already has it (its ``composition`` column, if present, must match row by
        row). ``folds`` limits each task to its first fold models (the screen's cheap first
        stage: ``folds=1`` gives the fold-0 value as ``_mean`` and a zero ``_std``);
        ``applicability=False`` leaves out the nearest-training-data columns. The whole input
        (parsing, element data, features, tokens) is validated before any model runs.
        """
        if condition is None:
            condition = Condition()
        if not isinstance(condition, Condition):
            raise UserInputError(
                f"condition {str(condition)[:40]!r} is a {type(condition).__name__}, not a "
                "Condition: pass e.g. Condition.of('tension', 25, 'cast') "
                "(from hea_screen.conditions import Condition)"
            )
        if isinstance(tasks, str):
            raise UserInputError(f"tasks {tasks!r}: pass a list of task names, e.g. [{tasks!r}]")
        chosen = [self.bundle.task(n) for n in (tasks or self.tasks)]
        table = as_table(compositions)
        texts = table.canonical_texts()
        feats = featurize(table) if features is None else _checked_features(texts, features)
        x = condition_matrix(feats, condition)  # one design matrix for every tabular task
        logits = None
        if any(m.kind == TRANSFORMER for m in chosen):
            logits = self._transformer_logits(table, feats, condition, folds)
        nearest, interval_distance = None, {}
        if applicability:
            if self.training_set is None:
                raise UserInputError(
                    "this predictor was loaded without its training set (training_set=False): "
                    "predict with applicability=False"
                )
            nearest, interval_distance = self.training_set.search(table, condition)
            nearest = nearest.select(
                "unseen_elements",
                *(
                    f"{m.task.name}_{suffix}"
                    for m in chosen
                    if m.task is not PHASE
                    for suffix in NEAREST_COLUMNS
                ),
            )
        columns: dict[str, Any] = {"composition": texts}
        for model in chosen:
            distance = None if model.task is PHASE else interval_distance.get(model.task.name)
            if model.kind == TRANSFORMER:
                columns.update(
                    self._transformer_columns(model, logits, condition.processing, distance)
                )
            else:
                first = model if folds is None else replace(model, files=model.files[:folds])
                columns.update(self._task_columns(first, x, condition.processing, distance))
        extrapolated = ",".join(m.task.name for m in chosen if m.coverage.gaps(condition))
        # a literal column keeps its type on no rows (a broadcast scalar makes every column Null)
        frame = pl.DataFrame(columns).with_columns(
            pl.lit(extrapolated, dtype=pl.Utf8).alias("extrapolated_tasks")
        )
        if nearest is None:
            return frame
        return pl.concat([frame, nearest], how="horizontal")

    def _task_columns(
        self,
        model: TaskModel,
        x: np.ndarray,
        processing: Processing,
        distance: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        if not len(x):  # no rows: some graphs (the GP's) cannot run on an empty batch
            if model.task is PHASE:
                return {phase_column(p): np.empty(0, dtype=np.float32) for p in PHASES}
            return self._summary(model, np.empty((len(model.files), 0)), processing, distance)
        sessions = self._fold_sessions(model.files, None)
        if model.task is PHASE:
            probs = np.mean([s.run(None, {s.get_inputs()[0].name: x})[1] for s in sessions], axis=0)
            return {phase_column(p): probs[:, i] for i, p in enumerate(PHASES)}
        values = np.stack(
            [s.run(None, {s.get_inputs()[0].name: x})[0].reshape(-1) for s in sessions]
        ).astype(np.float64)
        return self._summary(model, values, processing, distance)

    def _transformer_logits(
        self,
        table: CompositionTable,
        features: pl.DataFrame,
        condition: Condition,
        folds: int | None = None,
    ) -> np.ndarray:
        """(folds, rows, outputs) logits of the transformer's fold networks. Every row is
        encoded first (an unknown token or too long an input is refused before any network
        runs); rows are grouped by number of elements (one token length per group, never
        padded) and run in chunks of ``batch_size``, every fold network on one encoding."""
        groups = self._encode(table, features, condition)
        sessions = self._transformer_sessions(folds)
        out = np.empty((len(sessions), len(table), len(TRANSFORMER_OUTPUTS)))
        for rows, encoded in groups:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                feed = {k: v[start : start + self.batch_size] for k, v in encoded.as_dict().items()}
                out[:, chunk] = self._run(sessions, feed)
        return out

    def _encode(
        self, table: CompositionTable, features: pl.DataFrame, condition: Condition
    ) -> list[tuple[np.ndarray, Encoded]]:
        """Token batches of ``table`` at ``condition``, one per number of elements."""
        encoder = self.bundle.encoder
        assert encoder is not None, "a transformer task without a tokenizer"
        counts = (table.micro > 0).sum(axis=1)
        groups = []
        for k in np.unique(counts):
            rows = np.flatnonzero(counts == k)
            encoded = encoder.encode(table.take(rows), features[rows], condition)
            if encoded.input_ids.shape[1] > self.bundle.max_length:
                raise UserInputError(
                    f"row {rows[0]}: {table.composition(int(rows[0]))} has {k} elements, which "
                    f"makes {encoded.input_ids.shape[1]} tokens; the transformer reads at most "
                    f"{self.bundle.max_length} tokens"
                )
            groups.append((rows, encoded))
        return groups

    def _run(self, sessions: list[ort.InferenceSession], feed: dict[str, np.ndarray]) -> np.ndarray:
        """Logits of each fold network, shape (folds, rows, outputs); with I/O binding the
        inputs are uploaded once and shared by every fold network."""
        if not self.io_binding:
            return np.stack([s.run([_OUTPUT], feed)[0] for s in sessions])
        device = "cuda" if self.provider == CUDA else "cpu"
        bound = {k: ort.OrtValue.ortvalue_from_numpy(v, device, 0) for k, v in feed.items()}
        out = []
        for session in sessions:
            binding = session.io_binding()
            for name, value in bound.items():
                binding.bind_ortvalue_input(name, value)
            binding.bind_output(_OUTPUT, device, 0)
            session.run_with_iobinding(binding)
            out.append(binding.copy_outputs_to_cpu()[0])
        return np.stack(out)

    def _transformer_columns(
        self,
        model: TaskModel,
        logits: np.ndarray,
        processing: Processing,
        distance: np.ndarray | None = None,
    ) -> dict[str, Any]:
        j = model.output
        if model.task is PHASE:
            z = logits[:, :, j : j + len(PHASES)]
            e = np.exp(z - z.max(axis=2, keepdims=True))
            probs = (e / e.sum(axis=2, keepdims=True)).mean(axis=0)
            return {phase_column(p): probs[:, i] for i, p in enumerate(PHASES)}
        # (folds, [mean, std]) of the fold networks that ran
        scale = np.asarray(model.scalers[: len(logits)], dtype=np.float64)
        values = logits[:, :, j] * scale[:, 1:2] + scale[:, 0:1]
        return self._summary(model, values, processing, distance)

    @staticmethod
    def _summary(
        model: TaskModel,
        values: np.ndarray,
        processing: Processing,
        distance: np.ndarray | None,
    ) -> dict[str, np.ndarray]:
        """Mean, fold std and calibrated interval of (folds, rows) values at a route, each
        row at its ``distance`` to the task's data (``None``: unknown)."""
        got = model.interval(values, processing, distance)
        return {f"{model.task.name}_{k}": got[k] for k in ("mean", "std", "lo", "hi")}


def _width(shape: Sequence[Any]) -> int | str | None:
    """Values per row of a tensor of ``shape`` ([rows] is 1; a symbolic size stays as is)."""
    return 1 if len(shape) == 1 else shape[-1] if len(shape) == 2 else None


def _checked_features(texts: pl.Series, features: pl.DataFrame) -> pl.DataFrame:
    """The caller's features, checked to be one row per composition (canonical ``texts``),
    in order."""
    if not isinstance(features, pl.DataFrame):
        raise UserInputError(
            "features must be the polars DataFrame returned by hea_screen.featurize, "
            f"got {type(features).__name__}"
        )
    missing = [name for name in FEATURE_NAMES if name not in features.columns]
    if missing:
        raise UserInputError(
            f"features frame lacks column(s) {', '.join(missing)}; use hea_screen.featurize"
        )
    if features.height != len(texts):
        raise UserInputError(
            f"features frame has {features.height} rows for {len(texts)} compositions"
        )
    if "composition" in features.columns:
        differs = (features["composition"] != texts).fill_null(True)
        if differs.any():
            r = int(differs.arg_true()[0])
            raise UserInputError(
                f"features row {r} is for {features['composition'][r]!r}, not {texts[r]!r}: "
                "features must follow the compositions row by row"
            )
    return features


def _check_choice(what: str, value: object, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise UserInputError(f"unknown {what} {value!r}: choose one of {', '.join(accepted)}")


def resolve_device(bundle: TaskBundle, device: str, precision: str) -> tuple[str, str]:
    """(provider, precision) of the transformer member for the requested device and precision,
    given the variants the bundle holds (a bundle without a transformer runs fp32 on the CPU)."""
    written = tuple(bundle.variants)
    gpu = cuda_usable()
    if device == "cuda" and not gpu:
        raise UserInputError(
            "device='cuda' was requested but no usable CUDA GPU is visible to ONNX Runtime "
            f"(available providers: {', '.join(ort.get_available_providers())}); "
            "use device='cpu' or 'auto'"
        )
    if precision == "fp16" and device == "auto" and not gpu:
        raise UserInputError(
            "precision 'fp16' runs on CUDA only and no usable CUDA GPU is visible; "
            "choose fp32 or int8"
        )
    if precision not in ("auto", *written) and not (precision == "fp32" and not written):
        raise BundleError(
            f"bundle {bundle.path} has no {precision} variant ({bundle.variant_note(precision)}); "
            f"it holds {', '.join(written) or 'fp32 tabular models'}"
        )
    if device == "auto":
        wanted = PROVIDER_PRECISIONS[CUDA] if precision == "auto" else (precision,)
        runs_on_cuda = any(p in written for p in wanted if p in PROVIDER_PRECISIONS[CUDA])
        device = "cuda" if gpu and runs_on_cuda else "cpu"
    if not written:
        return CPU, "fp32"  # tabular members only: fp32 on the CPU, whatever the device
    provider = CUDA if device == "cuda" else CPU
    accepted = PROVIDER_PRECISIONS[provider]
    if precision == "auto":
        return provider, next(p for p in accepted if p in written)  # fp32 is always written
    if precision not in accepted:
        raise UserInputError(
            f"precision {precision!r} does not run on {provider}: "
            f"choose one of {', '.join(accepted)} (or device='auto')"
        )
    return provider, precision
