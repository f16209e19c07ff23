"""Which model a screen runs: a reference that workers can load (path and SHA-256), the
per-process cache of loaded predictors, what the model predicts, and the checks of a ranking
and a space against it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hea_screen.compositions.elements import check_elements, mixing_matrix
from hea_screen.conditions import PHASE
from hea_screen.errors import BundleError, ElementDataError
from hea_screen.inference.applicability import TrainingSet
from hea_screen.inference.bundle import Coverage, load_task_bundle
from hea_screen.inference.bundle_files import bundle_root
from hea_screen.inference.predictor import TaskPredictor, load_model, resolve_device
from hea_screen.screening.ranking import Ranking, Reference
from hea_screen.screening.space import Candidates

#: Default rows per model call; partition edges are multiples of it (4,096: the fastest of
#: 512, 4,096 and 16,384 for the shipped tree ensembles, docs/benchmarks.md).
DEFAULT_BATCH = 4096


@dataclass(frozen=True)
class ModelRef:
    """How a worker opens the model: bundle path (``None``: shipped default), options, and the
    pinned SHA-256 of the bundle's ``manifest.json`` (``None``: any; a prefix of >= 12 digits
    is accepted)."""

    path: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = DEFAULT_BATCH
    threads: int | None = None
    sha256: str | None = None


_MODELS: dict[ModelRef, TaskPredictor] = {}


_LOADS: dict[ModelRef, int] = {}


_LOCK = threading.Lock()


def predictor_for(ref: ModelRef) -> TaskPredictor:
    """This process's predictor for ``ref``, loading it on first use only."""
    with _LOCK:
        if ref not in _MODELS:
            _MODELS[ref] = load_model(
                ref.path, ref.device, ref.precision, ref.batch_size, ref.threads, sha256=ref.sha256
            )
            _LOADS[ref] = _LOADS.get(ref, 0) + 1
        return _MODELS[ref]


def model_loads() -> dict[str, int]:
    """How many times each model was loaded in this process (``repr(ref)``: count)."""
    with _LOCK:
        return {repr(ref): n for ref, n in _LOADS.items()}


@dataclass(frozen=True)
class ModelInfo:
    """What the driver reads from a condition-aware bundle (no sessions): identity, the
    tasks it predicts with the conditions their data cover, and score scales."""

    path: Path
    sha256: str
    reference: Reference
    tasks: tuple[str, ...]
    coverage: dict[str, Coverage]


def predicted_tasks(ranking: Ranking, available: Sequence[str]) -> tuple[str, ...]:
    """Tasks a screen predicts: the ranking's, plus phase where the bundle has it."""
    return ranking.tasks + ((PHASE.name,) if PHASE.name in available else ())


def inspect_model(
    path: str | Path | None,
    sha256: str | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> ModelInfo:
    """Verify a bundle (pinned to ``sha256`` when given) and read what ranking and input
    checks need (``path``: a bundle directory, or ``None``, ``"default"``, ``"transformer"``
    for a shipped bundle); ``device`` and ``precision`` are refused here, before any work,
    where they cannot be honoured (``cuda`` or ``fp16`` without a usable GPU, a precision
    the bundle lacks)."""
    root = bundle_root(path)
    bundle = load_task_bundle(root, sha256)
    resolve_device(bundle, device, precision)
    training = TrainingSet.from_json(bundle.training_set_text())
    mean, std = {}, {}
    for name, ts in training.targets.items():
        mean[name] = float(np.mean(ts.values))
        std[name] = float(np.std(ts.values)) or 1.0
    return ModelInfo(
        root,
        bundle.sha256,
        Reference(mean, std),
        tuple(t.task.name for t in bundle.tasks),
        {t.task.name: t.coverage for t in bundle.tasks},
    )


def check_ranking(ranking: Ranking, model: ModelInfo) -> None:
    """Refuse, before any work, a ranking on tasks the bundle lacks or at a condition their
    training data do not cover (a silent extrapolation)."""
    missing = [t for t in ranking.tasks if t not in model.tasks]
    if missing:
        raise BundleError(
            f"model bundle {model.path} has no model for {', '.join(missing)}; it predicts "
            f"{', '.join(model.tasks)}"
        )
    for name in ranking.tasks:
        model.coverage[name].check(name, ranking.condition)


def check_inputs(candidates: Candidates, model: ModelInfo) -> None:
    """Reject, before any work, elements without property data and element pairs without a
    mixing enthalpy (the features of such alloys cannot be computed)."""
    check_elements(candidates.elements)
    dh = mixing_matrix(candidates.elements)
    unknown = [
        f"{a}-{b}"
        for i, a in enumerate(candidates.elements)
        for j, b in enumerate(candidates.elements)
        if i < j and np.isnan(dh[i, j])
    ]
    if unknown:
        raise ElementDataError(
            f"no mixing enthalpy for {', '.join(unknown)} in Takeuchi & Inoue (2005), so h_mix "
            "cannot be computed: drop one element of each pair from the palette"
        )
