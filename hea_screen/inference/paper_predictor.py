"""Predict UTS and elongation with the fold models of a bundle, on ONNX Runtime.

``load_model(path)`` verifies a bundle (:mod:`hea_screen.inference.paper_bundle`), picks an
execution
provider and a precision, and opens one ONNX Runtime session per fold model, once, from the
very bytes whose SHA-256 was checked. ``load_model(path, sha256=...)`` refuses any bundle but
the one pinned; :attr:`Predictor.bundle_sha256` is the identity of the bundle loaded.
``Predictor.predict(compositions)`` then:

1. validates the whole input (parsing, element data, features, token vocabulary and
   length) before any model runs;
2. groups rows by their number of elements, which fixes the token length (``2k + 17``
   with features, ``2k + 2`` without), so a batch is never padded (the paper's code padded
   every input to 512 tokens);
3. runs every fold model of every target on each batch (``batch_size`` rows), undoes each
   fold's target scaler, and reports the mean and standard deviation over folds
   (sample standard deviation, ``ddof=1``) in the target's units;
4. adds the applicability columns of :mod:`hea_screen.inference.applicability`.

Providers and precisions:

=========  ==============================  =========================================
device     provider                        precision (``"auto"`` takes the first written)
=========  ==============================  =========================================
``cuda``   CUDAExecutionProvider,          fp16, fp32
           inputs and outputs bound on the
           device with I/O binding
``cpu``    CPUExecutionProvider            int8 (dynamically quantized), fp32
``auto``   CUDA when a GPU is usable and the bundle holds a CUDA variant, else CPU
=========  ==============================  =========================================

A predictor pickles as its bundle path, options and bundle SHA-256 (never its sessions), so
Dask workers receive it cheaply and reopen the sessions on arrival, from the same bundle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl

from hea_screen.compositions.composition import Composition
from hea_screen.compositions.features import FEATURE_NAMES, featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import BundleError, UserInputError
from hea_screen.inference.bundle import FORMAT_VERSION as TASK_FORMAT
from hea_screen.inference.paper_bundle import (
    MANIFEST_FILE,
    Bundle,
    default_bundle_path,
    load_bundle,
)
from hea_screen.inference.predictor import as_table
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
) -> Predictor:
    """Open a model bundle for prediction.

    ``path`` is a bundle directory written by ``hea-export``; ``None`` takes the shipped
    default bundle (``hea_screen/models/default``). ``device`` is ``"auto"``, ``"cpu"`` or
    ``"cuda"``; ``precision`` is ``"auto"``, ``"fp32"``, ``"fp16"`` (CUDA) or ``"int8"`` (CPU);
    ``batch_size`` bounds the rows per model call; ``threads`` sets ONNX Runtime's intra-op
    threads (``None``: one per core); ``io_binding`` binds inputs and outputs to the device
    (``None``: on for CUDA, off for CPU); ``sha256`` pins the bundle: the SHA-256 of its
    ``manifest.json`` (64 hex digits, or a prefix of at least 12), any other is refused.
    Raises :class:`BundleError` for a missing, altered, incomplete or other than pinned bundle
    and :class:`UserInputError` for an option that cannot be honoured.

    A condition-aware bundle (manifest format 2, the shipped kind) opens as a
    :class:`~hea_screen.inference.predictor.TaskPredictor` (tabular members on the CPU provider;
    ``predict(compositions, condition, tasks)``); a format-1 bundle (the paper's pooled
    targets, BERT folds) as a :class:`Predictor`.
    """
    root = bundle_root(path)
    if bundle_format(root) == TASK_FORMAT:
        from hea_screen.inference.predictor import TaskPredictor

        return TaskPredictor(root, threads, sha256)
    return Predictor(root, device, precision, batch_size, threads, io_binding, sha256)


def bundle_root(path: str | Path | None) -> Path:
    """``path``, or the shipped default bundle when ``None`` (which must exist)."""
    if path is not None:
        return Path(path)
    default = default_bundle_path()
    if not default.is_dir():
        raise BundleError(
            f"no shipped default model bundle at {default}: this install has none yet; "
            "pass a bundle path written by hea-export (see docs/inference.md)"
        )
    return default


def bundle_format(root: Path) -> object:
    """The ``format_version`` a bundle's manifest declares (``None`` if unreadable: the full
    check of the loader then says what is wrong)."""
    try:
        return json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8")).get(
            "format_version"
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


class Predictor:
    """Fold-ensemble predictions of every target of a bundle; build it with :func:`load_model`."""

    def __init__(
        self,
        path: str | Path | None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 1024,
        threads: int | None = None,
        io_binding: bool | None = None,
        sha256: str | None = None,
    ):
        _check_choice("device", device, DEVICES)
        _check_choice("precision", precision, PRECISIONS)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise UserInputError(f"threads must be a positive integer or None, got {threads!r}")
        self._options: dict[str, Any] = {
            "path": None if path is None else str(path),
            "device": device,
            "precision": precision,
            "batch_size": batch_size,
            "threads": threads,
            "io_binding": io_binding,
        }
        self.bundle: Bundle = _open_bundle(path, sha256)
        self.batch_size = batch_size
        self.encoder = self.bundle.encoder()
        self.training_set = self.bundle.training_set
        self.provider, self.precision = _resolve(self.bundle, device, precision)
        self._sessions = self._open_sessions(threads)
        if self.provider == CUDA and CUDA not in self._sessions[0][1][0].get_providers():
            if device == "cuda":
                raise UserInputError(
                    "device='cuda' was requested but ONNX Runtime could not start its CUDA "
                    "provider "
                    "(see its log above for the missing library); use device='cpu' or 'auto'"
                )
            log.warning("CUDA provider failed to start; falling back to the CPU provider")
            self.provider, self.precision = _resolve(
                self.bundle, "cpu", "auto" if precision == "auto" else precision
            )
            self._sessions = self._open_sessions(threads)
        self.io_binding = (self.provider == CUDA) if io_binding is None else bool(io_binding)
        log.info("predictor: %s", self.summary)

    @property
    def targets(self) -> tuple[str, ...]:
        """Predicted targets, e.g. ``("uts_mpa", "elongation_pct")``."""
        return tuple(spec.name for spec in self.bundle.targets)

    @property
    def bundle_sha256(self) -> str:
        """The bundle's identity: SHA-256 of its ``manifest.json`` (which hashes every file)."""
        return self.bundle.sha256

    @property
    def summary(self) -> str:
        """One line for users: provider, precision, models, bundle and its SHA-256."""
        folds = ", ".join(f"{spec.name} x{len(spec.folds)}" for spec in self.bundle.targets)
        binding = ", I/O binding" if self.io_binding else ""
        return (
            f"{self.provider} ({self.precision}{binding}); fold models: {folds}; "
            f"bundle {self.bundle.path} (sha256 {self.bundle_sha256})"
        )

    def __repr__(self) -> str:
        return f"Predictor({self.summary})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickle as the bundle path, options and SHA-256 only; sessions are reopened on
        unpickling, from the same bundle or not at all."""
        return {**self._options, "sha256": self.bundle_sha256}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def predict(
        self,
        compositions: CompositionTable | Iterable[Composition | str] | Composition | str,
        features: pl.DataFrame | None = None,
    ) -> pl.DataFrame:
        """Mean and fold standard deviation of every target, plus applicability columns.

        ``compositions``: a :class:`CompositionTable`, one composition, or an iterable of
        compositions or texts. ``features``: the frame :func:`hea_screen.featurize` returned
        for the same rows, when the caller already has it (its ``composition`` column, if
        present, must match row by row). Rows keep their input order.
        """
        table = as_table(compositions)
        batches = self._encode(table, features)
        n = len(table)
        outputs = {
            spec.name: np.empty((len(spec.folds), n), dtype=np.float64)
            for spec in self.bundle.targets
        }
        for rows, encoded in batches:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                feed = {k: v[start : start + self.batch_size] for k, v in encoded.as_dict().items()}
                for name, sessions in self._sessions:
                    outputs[name][:, chunk] = self._run(sessions, feed)
        columns: dict[str, Any] = {"composition": table.canonical_texts()}
        for spec in self.bundle.targets:
            means = np.array([f.scaler_mean for f in spec.folds])[:, None]
            stds = np.array([f.scaler_std for f in spec.folds])[:, None]
            values = outputs[spec.name] * stds + means
            columns[f"{spec.name}_mean"] = values.mean(axis=0)
            columns[f"{spec.name}_std"] = values.std(axis=0, ddof=1 if len(spec.folds) > 1 else 0)
        frame = pl.DataFrame(columns)
        return pl.concat([frame, self.training_set.applicability(table)], how="horizontal")

    def _encode(
        self, table: CompositionTable, features: pl.DataFrame | None
    ) -> list[tuple[np.ndarray, Encoded]]:
        """Validate every row and tokenize it, grouped by number of elements (= token length)."""
        feats = None
        if self.bundle.use_features:
            feats = featurize(table) if features is None else _checked_features(table, features)
        counts = (table.micro > 0).sum(axis=1)
        batches = []
        for k in np.unique(counts):
            rows = np.flatnonzero(counts == k)
            encoded = self.encoder.encode(table.take(rows), None if feats is None else feats[rows])
            if encoded.input_ids.shape[1] > self.bundle.max_length:
                raise UserInputError(
                    f"row {rows[0]}: {table.composition(int(rows[0]))} has {k} elements, "
                    "which makes "
                    f"{encoded.input_ids.shape[1]} tokens; the model reads at most "
                    f"{self.bundle.max_length} tokens"
                )
            batches.append((rows, encoded))
        return batches

    def _run(self, sessions: list[ort.InferenceSession], feed: dict[str, np.ndarray]) -> np.ndarray:
        """Standardized outputs of each fold model, shape (folds, rows)."""
        if not self.io_binding:
            return np.stack([s.run([_OUTPUT], feed)[0][:, 0] for s in sessions])
        device = "cuda" if self.provider == CUDA else "cpu"
        bound = {k: ort.OrtValue.ortvalue_from_numpy(v, device, 0) for k, v in feed.items()}
        out = []
        for session in sessions:
            binding = session.io_binding()
            for name, value in bound.items():
                binding.bind_ortvalue_input(name, value)
            binding.bind_output(_OUTPUT, device, 0)
            session.run_with_iobinding(binding)
            out.append(binding.copy_outputs_to_cpu()[0][:, 0])
        return np.stack(out)

    def _open_sessions(self, threads: int | None) -> list[tuple[str, list[ort.InferenceSession]]]:
        options = session_options(threads)
        providers: list[Any] = [(CUDA, {"device_id": 0}), CPU] if self.provider == CUDA else [CPU]
        return [
            (
                spec.name,
                [
                    ort.InferenceSession(
                        self.bundle.read(fold.files[self.precision]),
                        options,
                        providers=providers,
                    )
                    for fold in spec.folds
                ],
            )
            for spec in self.bundle.targets
        ]


def _checked_features(table: CompositionTable, features: pl.DataFrame) -> pl.DataFrame:
    """The caller's features, checked to be one finite row per composition, in order."""
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
    if features.height != len(table):
        raise UserInputError(
            f"features frame has {features.height} rows for {len(table)} compositions"
        )
    if "composition" in features.columns:
        expected = table.canonical_texts()
        differs = (features["composition"] != expected).fill_null(True)
        if differs.any():
            r = int(differs.arg_true()[0])
            raise UserInputError(
                f"features row {r} is for {features['composition'][r]!r}, not {expected[r]!r}: "
                "features must follow the compositions row by row"
            )
    return features


def _open_bundle(path: str | Path | None, sha256: str | None) -> Bundle:
    return load_bundle(bundle_root(path), sha256)


def _check_choice(what: str, value: object, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise UserInputError(f"unknown {what} {value!r}: choose one of {', '.join(accepted)}")


def _resolve(bundle: Bundle, device: str, precision: str) -> tuple[str, str]:
    """(provider, precision) for the requested device and precision, given the bundle's variants."""
    written = bundle.written_variants
    if precision != "auto" and precision not in written:
        raise BundleError(
            f"bundle {bundle.path} has no {precision} variant ({bundle.variant_note(precision)}); "
            f"it holds {', '.join(written) or 'none'}"
        )
    gpu = cuda_usable()
    if device == "cuda" and not gpu:
        raise UserInputError(
            "device='cuda' was requested but no usable CUDA GPU is visible to ONNX Runtime "
            f"(available providers: {', '.join(ort.get_available_providers())}); "
            "use device='cpu' or 'auto'"
        )
    if device == "auto":
        wanted = PROVIDER_PRECISIONS[CUDA] if precision == "auto" else (precision,)
        runs_on_cuda = any(p in written for p in wanted if p in PROVIDER_PRECISIONS[CUDA])
        device = "cuda" if gpu and runs_on_cuda else "cpu"
        if precision == "fp16" and device == "cpu":
            raise UserInputError(
                "precision 'fp16' runs on CUDA only and no usable CUDA GPU is visible; "
                "choose fp32 or int8"
            )
    provider = CUDA if device == "cuda" else CPU
    accepted = PROVIDER_PRECISIONS[provider]
    if precision == "auto":
        choice = next((p for p in accepted if p in written), None)
        if choice is None:
            raise BundleError(
                f"bundle {bundle.path} holds no variant for {provider} "
                f"(it holds {', '.join(written)}; "
                f"{provider} runs {', '.join(accepted)})"
            )
        return provider, choice
    if precision not in accepted:
        raise UserInputError(
            f"precision {precision!r} does not run on {provider}: "
            f"choose one of {', '.join(accepted)} "
            f"(or device='auto')"
        )
    return provider, precision
