"""Condition-aware model bundles (manifest format 2): one shipped model per task.

Written by ``hea-export --conditions RUN`` (``export/condition_bundle.py``) from a
condition-aware training run (``pretrain/condition_run.py``)::

    BUNDLE/
      manifest.json          format_version 2; per task: unit, test type, the shipped model and
                             its fold files, conformal factor and measured coverage, the
                             conditions its training data cover, CV metrics of every model on the
                             same folds; design columns; per-file SHA-256; training-data SHA-256;
                             the commit the bundle was built from
      README.md              the same for people, with the per-task table
      <task>/fold_<k>.onnx   a tabular task's fold models (skl2onnx; input ``X``, the
                             :mod:`hea_screen.inference.design` matrix)
      transformer/fold_<k>.onnx  the multi-task transformer's fold networks, shared by every
                             task that ships with it (output columns TRANSFORMER_OUTPUTS,
                             per-fold scalers in the manifest), and tokenizer/ (condition tokens);
      transformer/fold_<k>.<fp16|int8>.onnx  its precision variants that passed their parity
                             bounds at export (``transformer.variants`` in the manifest)
      training_set.json      per task, canonical training compositions and mean measured values
      oof_predictions.csv    out-of-fold predictions of the shipped models (one row per evaluated
                             measurement and seed)

:func:`load_task_bundle` verifies every file's size and SHA-256
(:func:`~hea_screen.inference.bundle_files.verify_files`) and every manifest value it uses
before anything runs; nothing in a bundle is executable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hea_screen.conditions import (
    PHASE,
    PHASES,
    REGRESSION_TASKS,
    Condition,
    Processing,
    Task,
    task,
)
from hea_screen.errors import BundleError, UserInputError
from hea_screen.inference.applicability import TrainingSet
from hea_screen.inference.bundle_files import (
    MANIFEST_FILE,
    TRAINING_SET_FILE,
    checked_encoder,
    read_checked,
    read_manifest,
    verify_files,
)
from hea_screen.inference.design import DESIGN_COLUMNS
from hea_screen.inference.intervals import DISTANCE_CAP, SPACES, Normalizer, ensemble
from hea_screen.inference.tokens import CONDITION_INPUTS, TokenEncoder

FORMAT_VERSION = 2
OOF_FILE = "oof_predictions.csv"

#: Model kinds a task can ship with: a tabular model per task and fold (input ``X``, the
#: design matrix), or the multi-task transformer (one network per fold for every task).
TABULAR = "tabular"
TRANSFORMER = "transformer"
MEMBER_KINDS: tuple[str, ...] = (TABULAR, TRANSFORMER)

#: Precision variants of the transformer member: fp32 (the reference, CPU or CUDA), fp16
#: (CUDA), int8 (dynamically quantized, CPU). Tabular members are fp32 and run on the CPU.
VARIANTS: tuple[str, ...] = ("fp32", "fp16", "int8")

#: Output columns of a multi-task transformer fold network: one standardized value per
#: regression task, then one logit per phase (``pretrain/multitask.py`` trains this layout).
TRANSFORMER_OUTPUTS: tuple[str, ...] = (
    *(t.name for t in REGRESSION_TASKS),
    *(f"{PHASE.name}_{p}" for p in PHASES),
)


def task_relpath(task_name: str, fold: int) -> str:
    """Relative path of a tabular fold model: ``uts_tension_mpa/fold_0.onnx``."""
    return f"{task_name}/fold_{fold}.onnx"


def transformer_relpath(fold: int, variant: str = "fp32") -> str:
    """Relative path of a multi-task transformer fold network: ``transformer/fold_0.onnx``
    (fp32), ``transformer/fold_0.int8.onnx``."""
    suffix = "" if variant == "fp32" else f".{variant}"
    return f"{TRANSFORMER}/fold_{fold}{suffix}.onnx"


@dataclass(frozen=True)
class Coverage:
    """The conditions a task's training data cover: temperature range (°C), routes and the
    range of stated grain sizes (µm; ``None`` when the task's model reads no grain size)."""

    temperature_c: tuple[float, float]
    processing: frozenset[Processing]
    grain_size_um: tuple[float, float] | None = None

    def gaps(self, condition: Condition) -> list[str]:
        """Why ``condition`` lies outside these data (empty if it does not)."""
        lo, hi = self.temperature_c
        out = []
        if not lo <= condition.temperature_c <= hi:
            out.append(
                f"test temperature {condition.temperature_c:g} °C outside {lo:g} to {hi:g} °C"
            )
        if condition.processing not in self.processing:
            seen = ", ".join(sorted(p.value.lower() for p in self.processing))
            out.append(f"processing {condition.processing.value.lower()} not among {seen}")
        size = condition.grain_size_um
        if size is not None and self.grain_size_um is None:
            out.append(f"grain size {size:g} µm stated, but this model reads no grain size")
        elif size is not None and not self.grain_size_um[0] <= size <= self.grain_size_um[1]:
            lo, hi = self.grain_size_um
            out.append(f"grain size {size:g} µm outside {lo:g} to {hi:g} µm")
        return out

    def check(self, task_name: str, condition: Condition) -> None:
        """Refuse predicting ``task_name`` at a condition these data do not cover (the model
        would extrapolate silently)."""
        gaps = self.gaps(condition)
        if gaps:
            raise UserInputError(
                f"{task_name} at {condition}: {'; '.join(gaps)} in the model's training data; "
                "the model would extrapolate. Choose a covered condition (--temperature, "
                "--processing, --grain-size; see the bundle's README)"
            )


@dataclass(frozen=True)
class TaskModel:
    """The shipped model of one task: its model family, kind, fold files and calibration."""

    task: Task
    model: str
    kind: str
    files: tuple[str, ...]
    interval_factor: float
    coverage: Coverage
    cv: Mapping[str, Any]
    scalers: tuple[tuple[float, float], ...] = ()
    interval_offset: float = 0.0
    interval_space: str = "log"
    factor_by_route: Mapping[str, float] = field(default_factory=dict)
    #: The interval scale's distance term (0 in bundles built before it existed).
    distance_slope: float = 0.0
    distance_cap: float = DISTANCE_CAP

    def factor(self, processing: Processing) -> float:
        """The conformal factor of a route (Mondrian), the pooled one where the route had too
        few calibration rows."""
        return self.factor_by_route.get(processing.value, self.interval_factor)

    @property
    def normalizer(self) -> Normalizer:
        """The interval's scale (:class:`hea_screen.inference.intervals.Normalizer`)."""
        return Normalizer(self.interval_offset, self.distance_slope, self.distance_cap)

    def interval(
        self, values: np.ndarray, processing: Processing, distance: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """``mean``, ``std`` (task unit, over models) and the calibrated ``lo`` / ``hi`` of
        (models, rows) predictions at ``processing``; ``distance`` per row: L1 to the nearest
        alloy of the task measured at the condition (``None`` or NaN: unknown, the widest
        interval; :mod:`hea_screen.inference.intervals`)."""
        ens = ensemble(values, self.interval_space)
        lo, hi = ens.bounds(self.factor(processing), self.interval_space, self.normalizer, distance)
        std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
        return {"mean": ens.mean, "std": std, "lo": lo, "hi": hi}

    @property
    def output(self) -> int:
        """First output column of this task in a transformer fold network."""
        first = f"{PHASE.name}_{PHASES[0]}" if self.task is PHASE else self.task.name
        return TRANSFORMER_OUTPUTS.index(first)


@dataclass(frozen=True)
class TaskBundle:
    """A verified format-2 bundle."""

    path: Path
    manifest: Mapping[str, Any]
    sha256: str
    tasks: tuple[TaskModel, ...]
    interval: float
    encoder: TokenEncoder | None = None
    #: The transformer member's written precision variants: variant -> file of each fold
    #: (empty without a transformer member), and the most tokens its networks read.
    variants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    max_length: int = 0
    #: ``training_set.json``, checked at load (the nearest-training-data columns read it).
    training_set: TrainingSet | None = None

    def variant_note(self, variant: str) -> str:
        """Why the transformer has no ``variant`` (as recorded at export), or ``"written"``."""
        if variant in self.variants:
            return "written"
        if not self.variants:
            return "the bundle has no transformer member; its tabular models run fp32 on the CPU"
        info = self.manifest.get(TRANSFORMER, {}).get("variants", {}).get(variant)
        return str(info.get("reason", "not written")) if info else "not produced at export"

    def file(self, relpath: str) -> Path:
        return self.path / relpath

    def task(self, name: str) -> TaskModel:
        """The shipped model of task ``name``; a clear error lists what the bundle holds."""
        for t in self.tasks:
            if t.task.name == name:
                return t
        raise BundleError(
            f"model bundle {self.path} has no model for {name!r}: it predicts "
            f"{', '.join(t.task.name for t in self.tasks)}"
        )

    def read(self, relpath: str) -> bytes:
        """The bytes of a listed file, read once and checked against the manifest's SHA-256
        (what is checked is what is used: no swap between check and load)."""
        return read_checked(self.path, relpath, self.manifest["files"])

    def training_set_text(self) -> str:
        return self.read(TRAINING_SET_FILE).decode("utf-8")


def _get(mapping: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    if isinstance(value, bool) and kind in ((int, float), int, float):
        value = None
    if not isinstance(value, kind):
        raise BundleError(f"{MANIFEST_FILE}: {where} lacks a valid {key!r}")
    return value


def _task_model(name: str, info: Any, used: set[str], shared: set[str]) -> TaskModel:
    try:
        spec = task(name)
    except Exception:
        raise BundleError(f"{MANIFEST_FILE}: unknown task {name!r}") from None
    where = f"task {name}"
    kind = _get(info, "kind", str, where)
    if kind not in MEMBER_KINDS:
        raise BundleError(
            f"{MANIFEST_FILE}: {where} has kind {kind!r}; this hea-screen reads "
            f"{', '.join(MEMBER_KINDS)}"
        )
    folds = _get(info, "folds", list, where)
    if not folds:
        raise BundleError(f"{MANIFEST_FILE}: {where} has no fold models")
    files, scalers = [], []
    for k, fold in enumerate(folds):
        rel = _get(fold, "file", str, f"{where} fold {k}")
        expected = transformer_relpath(k) if kind == TRANSFORMER else task_relpath(name, k)
        if _get(fold, "fold", int, f"{where} fold {k}") != k or rel != expected:
            raise BundleError(
                f"{MANIFEST_FILE}: {where} fold {k} points at {rel!r}; expected {expected!r}"
            )
        if kind == TABULAR:
            if rel in used:
                raise BundleError(f"{MANIFEST_FILE}: {rel!r} is used twice")
            used.add(rel)
        else:
            shared.add(rel)
            if spec is not PHASE:
                scaler = _get(fold, "scaler", dict, f"{where} fold {k}")
                mean = float(_get(scaler, "mean", (int, float), f"{where} fold {k} scaler"))
                std = float(_get(scaler, "std", (int, float), f"{where} fold {k} scaler"))
                if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
                    raise BundleError(f"{MANIFEST_FILE}: {where} fold {k} scaler {scaler}")
                scalers.append((mean, std))
        files.append(rel)
    factor = offset = slope = 0.0
    cap = DISTANCE_CAP
    space, by_route = "log", {}
    if spec is not PHASE:
        calibration = _get(info, "calibration", dict, where)
        factor = float(_get(calibration, "factor", (int, float), where))
        space = _get(calibration, "space", str, where)
        if space not in SPACES:
            raise BundleError(f"{MANIFEST_FILE}: {where} has interval space {space!r}")
        by_route = {
            Processing.parse(r).value: float(c)
            for r, c in _get(calibration, "factor_by_route", dict, where).items()
        }
        if not all(math.isfinite(c) and c > 0 for c in (factor, *by_route.values())):
            raise BundleError(f"{MANIFEST_FILE}: {where} has conformal factors {calibration}")
        offset = calibration.get("offset", 0.0)
        if not _non_negative(offset):
            raise BundleError(f"{MANIFEST_FILE}: {where} has interval offset {offset}")
        slope = calibration.get("distance_slope", 0.0)
        cap = calibration.get("distance_cap", DISTANCE_CAP)
        if not (_non_negative(slope) and _non_negative(cap) and cap > 0):
            raise BundleError(
                f"{MANIFEST_FILE}: {where} has distance slope {slope} and cap {cap}: "
                "a slope >= 0 and a cap > 0 are accepted"
            )
    cond = _get(info, "conditions", dict, where)
    temps = _get(cond, "temperature_c", list, where)
    if len(temps) != 2 or not all(isinstance(t, (int, float)) for t in temps):
        raise BundleError(f"{MANIFEST_FILE}: {where} conditions.temperature_c must be [lo, hi]")
    routes = frozenset(Processing.parse(p) for p in _get(cond, "processing", list, where))
    sizes = cond.get("grain_size_um")
    if sizes is not None and not (
        isinstance(sizes, list)
        and len(sizes) == 2
        and all(isinstance(s, (int, float)) and s > 0 for s in sizes)
    ):
        raise BundleError(f"{MANIFEST_FILE}: {where} conditions.grain_size_um must be [lo, hi] µm")
    return TaskModel(
        spec,
        _get(info, "model", str, where),
        kind,
        tuple(files),
        factor,
        Coverage(
            (float(temps[0]), float(temps[1])),
            routes,
            None if sizes is None else (float(sizes[0]), float(sizes[1])),
        ),
        info.get("cv", {}),
        tuple(scalers),
        float(offset),
        space,
        by_route,
        float(slope),
        float(cap),
    )


def _non_negative(value: object) -> bool:
    """A finite JSON number >= 0 (a boolean is not one)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _training_set(
    root: Path, files: Mapping[str, Any], tasks: tuple[TaskModel, ...]
) -> TrainingSet:
    """``training_set.json`` (checked bytes), with measured values of every regression task."""
    try:
        training = TrainingSet.from_json(read_checked(root, TRAINING_SET_FILE, files).decode())
    except UnicodeDecodeError as exc:
        raise BundleError(f"{root / TRAINING_SET_FILE} is not UTF-8 text ({exc})") from None
    except BundleError as exc:
        raise BundleError(f"{root / TRAINING_SET_FILE}: {exc}") from None
    for t in tasks:
        if t.task is not PHASE and t.task.name not in training.targets:
            raise BundleError(
                f"{root / TRAINING_SET_FILE} has no measured values of {t.task.name!r}, a task "
                f"of {MANIFEST_FILE}"
            )
    return training


def _check_scalers(training: TrainingSet, tasks: tuple[TaskModel, ...]) -> None:
    """A transformer fold's scaler must fit its task's training values (per-alloy means from
    ``lo`` to ``hi``): mean within one range width of them, std at most twice the range, so
    an edited mean of 99999 MPa is refused. (The scalers are fitted on examples at single
    conditions, whose spread can exceed that of per-alloy means; hence the margin.)"""
    for t in tasks:
        if not t.scalers:
            continue
        values = training.targets[t.task.name].values if t.task.name in training.targets else []
        if len(values) == 0:
            raise BundleError(f"{TRAINING_SET_FILE} has no values of {t.task.name}")
        lo, hi = float(min(values)), float(max(values))
        for k, (mean, std) in enumerate(t.scalers):
            width = hi - lo
            if not (lo - width <= mean <= hi + width and std <= 2 * width):
                raise BundleError(
                    f"{MANIFEST_FILE}: {t.task.name} fold {k} scaler (mean {mean:g}, std "
                    f"{std:g}) does not fit its training values ({lo:g} to {hi:g} {t.task.unit})"
                )


def load_task_bundle(
    path: str | Path, sha256: str | None = None, *, training_set: bool = True
) -> TaskBundle:
    """Read and verify a format-2 bundle (pinned to ``sha256``, 64 hex digits or a prefix of
    at least 12, when given); :class:`BundleError` names whatever is wrong.

    ``training_set=False`` leaves ``training_set.json`` unparsed (its size and SHA-256 are
    still checked) and the bundle's ``training_set`` ``None``: for predictions without the
    nearest-training-data columns, such as ``update``'s movement report, whose new bundle
    may hold a million stored alloys (parsing them took about 1 GB). The transformer
    scalers' check against the training values is then skipped too."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"model bundle {str(root)!r} is not a directory")
    manifest, digest = read_manifest(root, sha256)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{root / MANIFEST_FILE} has format_version {manifest.get('format_version')!r}; "
            f"this hea-screen reads condition-aware bundles, format_version {FORMAT_VERSION} "
            "(the paper-set bundles of format 1 are no longer read: export a run with "
            "hea-export --conditions RUN)"
        )
    verify_files(root, _get(manifest, "files", dict, "the manifest"))
    columns = _get(manifest, "design_columns", list, "the manifest")
    if tuple(columns) != DESIGN_COLUMNS:
        raise BundleError(
            f"{MANIFEST_FILE}: design columns {columns} differ from this hea-screen's "
            f"{list(DESIGN_COLUMNS)}"
        )
    used: set[str] = set()
    shared: set[str] = set()
    tasks = tuple(
        _task_model(name, info, used, shared)
        for name, info in _get(manifest, "tasks", dict, "the manifest").items()
    )
    if not tasks:
        raise BundleError(f"{MANIFEST_FILE} lists no tasks")
    if used & shared:
        raise BundleError(f"{MANIFEST_FILE}: {sorted(used & shared)} serve two kinds of model")
    folds = {len(t.files) for t in tasks if t.kind == TRANSFORMER}
    if len(folds) > 1:
        raise BundleError(f"{MANIFEST_FILE}: transformer tasks disagree on the number of folds")
    encoder, variants, max_length = None, {}, 0
    if shared:
        info = _get(manifest, "transformer", dict, "the manifest")
        variants = _variants(info, folds.pop())
        max_length = _get(info, "max_length", int, "transformer")
        if tuple(_get(info, "outputs", list, "transformer")) != TRANSFORMER_OUTPUTS:
            raise BundleError(
                f"{MANIFEST_FILE}: transformer outputs must be {list(TRANSFORMER_OUTPUTS)}"
            )
        encoder = checked_encoder(
            root,
            manifest["files"],
            _get(info, "vocab_size", int, "transformer"),
            use_features=True,
            use_conditions=True,
            use_grain_size=_reads_grain_size(info),
        )
    every = (*used, *shared, *(rel for files in variants.values() for rel in files))
    missing = [rel for rel in (*every, TRAINING_SET_FILE) if rel not in manifest["files"]]
    if missing:
        raise BundleError(f"{MANIFEST_FILE} does not list {', '.join(missing)}")
    unused = [rel for rel in manifest["files"] if rel.endswith(".onnx") and rel not in every]
    if unused:
        raise BundleError(
            f"{MANIFEST_FILE} lists {', '.join(map(repr, unused))}, which no model uses: "
            "each model file serves one task's fold (or the transformer's) in one precision"
        )
    phase = next((t for t in tasks if t.task is PHASE), None)
    if phase is not None and tuple(manifest.get("phases", ())) != PHASES:
        raise BundleError(f"{MANIFEST_FILE}: phases must be {list(PHASES)}")
    training = None
    if training_set:
        training = _training_set(root, manifest["files"], tasks)
        _check_scalers(training, tasks)
    interval = float(_get(manifest, "interval", (int, float), "the manifest"))
    if not 0 < interval < 1:
        raise BundleError(f"{MANIFEST_FILE}: interval {interval} must lie in (0, 1)")
    return TaskBundle(
        root, manifest, digest, tasks, interval, encoder, variants, max_length, training
    )


def _reads_grain_size(info: dict[str, Any]) -> bool:
    """Whether the transformer's networks read the grain-size token: ``transformer.
    condition_tokens`` lists what its condition tokens describe (absent: a bundle exported
    before the grain-size token, whose networks read temperature and processing only)."""
    read = tuple(info.get("condition_tokens", CONDITION_INPUTS[:2]))
    accepted = (CONDITION_INPUTS[:2], CONDITION_INPUTS)
    if read not in accepted:
        raise BundleError(
            f"{MANIFEST_FILE}: transformer condition_tokens {list(read)}; this hea-screen reads "
            f"{' or '.join(map(str, map(list, accepted)))}"
        )
    return read == CONDITION_INPUTS


def _variants(info: Mapping[str, Any], n_folds: int) -> dict[str, tuple[str, ...]]:
    """The transformer's written variants (``transformer.variants``: per variant ``written``
    and ``files``, one per fold at :func:`transformer_relpath`); fp32 is always written."""
    entries = _get(info, "variants", dict, "transformer")
    unknown = sorted(set(entries) - set(VARIANTS))
    if unknown:
        raise BundleError(
            f"{MANIFEST_FILE}: transformer variant(s) {unknown}; variants are "
            f"{', '.join(VARIANTS)}"
        )
    out = {}
    for variant, entry in entries.items():
        where = f"transformer variant {variant}"
        if not _get(entry, "written", bool, where):
            continue
        files = tuple(_get(entry, "files", list, where))
        expected = tuple(transformer_relpath(k, variant) for k in range(n_folds))
        if files != expected:
            raise BundleError(
                f"{MANIFEST_FILE}: {where} lists files {list(files)}; expected {list(expected)}"
            )
        out[variant] = files
    if "fp32" not in out:
        raise BundleError(f"{MANIFEST_FILE}: the transformer's fp32 variant is not written")
    return {v: out[v] for v in VARIANTS if v in out}
