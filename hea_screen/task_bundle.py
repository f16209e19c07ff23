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
      <task>/fold_<k>.onnx   the task's fold models (tabular: skl2onnx; input ``X``, the
                             :mod:`hea_screen.design` matrix)
      training_set.json      per task, canonical training compositions and mean measured values
      oof_predictions.csv    out-of-fold predictions of the shipped models (one row per evaluated
                             measurement and seed)

:func:`load_task_bundle` verifies every file's size and SHA-256 (:func:`verify_files`) and
every manifest value it uses before anything runs; nothing in a bundle is executable.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hea_screen.bundle import (
    MANIFEST_FILE,
    TRAINING_SET_FILE,
    check_pin,
    read_checked,
    read_nofollow,
    strict_json,
    verify_files,
)
from hea_screen.conditions import PHASE, PHASES, Condition, Processing, Task, task
from hea_screen.design import DESIGN_COLUMNS
from hea_screen.errors import BundleError

FORMAT_VERSION = 2
OOF_FILE = "oof_predictions.csv"

#: Model kinds a task can ship with.
TABULAR = "tabular"
MEMBER_KINDS: tuple[str, ...] = (TABULAR,)


def task_relpath(task_name: str, fold: int) -> str:
    """Relative path of a fold model: ``uts_tension_mpa/fold_0.onnx``."""
    return f"{task_name}/fold_{fold}.onnx"


@dataclass(frozen=True)
class Coverage:
    """The conditions a task's training data cover: temperature range (°C) and routes."""

    temperature_c: tuple[float, float]
    processing: frozenset[Processing]

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
        return out


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


@dataclass(frozen=True)
class TaskBundle:
    """A verified format-2 bundle."""

    path: Path
    manifest: Mapping[str, Any]
    sha256: str
    tasks: tuple[TaskModel, ...]
    interval: float

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


def read_manifest(root: Path, sha256: str | None = None) -> tuple[dict[str, Any], str]:
    """The parsed manifest of a bundle directory (no NaN, infinity or repeated key; no
    symlink) and its SHA-256, refused unless it matches ``sha256`` when that is given."""
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: {str(root)!r} is not a model bundle")
    data = read_nofollow(path)
    digest = hashlib.sha256(data).hexdigest()
    check_pin(digest, sha256, root)
    manifest = strict_json(data, path)
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return manifest, digest


def _get(mapping: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    if isinstance(value, bool) and kind in ((int, float), int, float):
        value = None
    if not isinstance(value, kind):
        raise BundleError(f"{MANIFEST_FILE}: {where} lacks a valid {key!r}")
    return value


def _task_model(name: str, info: Any, used: set[str]) -> TaskModel:
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
    files = []
    for k, fold in enumerate(folds):
        rel = _get(fold, "file", str, f"{where} fold {k}")
        if _get(fold, "fold", int, f"{where} fold {k}") != k or rel != task_relpath(name, k):
            raise BundleError(
                f"{MANIFEST_FILE}: {where} fold {k} points at {rel!r}; expected "
                f"{task_relpath(name, k)!r}"
            )
        if rel in used:
            raise BundleError(f"{MANIFEST_FILE}: {rel!r} is used twice")
        used.add(rel)
        files.append(rel)
    factor = 0.0
    if spec is not PHASE:
        factor = float(_get(_get(info, "calibration", dict, where), "factor", (int, float), where))
        if not (math.isfinite(factor) and factor > 0):
            raise BundleError(f"{MANIFEST_FILE}: {where} has conformal factor {factor}")
    cond = _get(info, "conditions", dict, where)
    temps = _get(cond, "temperature_c", list, where)
    if len(temps) != 2 or not all(isinstance(t, (int, float)) for t in temps):
        raise BundleError(f"{MANIFEST_FILE}: {where} conditions.temperature_c must be [lo, hi]")
    routes = frozenset(Processing.parse(p) for p in _get(cond, "processing", list, where))
    return TaskModel(
        spec,
        _get(info, "model", str, where),
        kind,
        tuple(files),
        factor,
        Coverage((float(temps[0]), float(temps[1])), routes),
        info.get("cv", {}),
    )


def load_task_bundle(path: str | Path, sha256: str | None = None) -> TaskBundle:
    """Read and verify a format-2 bundle (pinned to ``sha256``, 64 hex digits or a prefix of
    at least 12, when given); :class:`BundleError` names whatever is wrong."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"model bundle {str(root)!r} is not a directory")
    manifest, digest = read_manifest(root, sha256)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{root / MANIFEST_FILE} has format_version {manifest.get('format_version')!r}; "
            f"a condition-aware bundle has {FORMAT_VERSION}"
        )
    verify_files(root, _get(manifest, "files", dict, "the manifest"))
    columns = _get(manifest, "design_columns", list, "the manifest")
    if tuple(columns) != DESIGN_COLUMNS:
        raise BundleError(
            f"{MANIFEST_FILE}: design columns {columns} differ from this hea-screen's "
            f"{list(DESIGN_COLUMNS)}"
        )
    used: set[str] = set()
    tasks = tuple(
        _task_model(name, info, used)
        for name, info in _get(manifest, "tasks", dict, "the manifest").items()
    )
    if not tasks:
        raise BundleError(f"{MANIFEST_FILE} lists no tasks")
    missing = [rel for rel in (*used, TRAINING_SET_FILE) if rel not in manifest["files"]]
    if missing:
        raise BundleError(f"{MANIFEST_FILE} does not list {', '.join(missing)}")
    phase = next((t for t in tasks if t.task is PHASE), None)
    if phase is not None and tuple(manifest.get("phases", ())) != PHASES:
        raise BundleError(f"{MANIFEST_FILE}: phases must be {list(PHASES)}")
    interval = float(_get(manifest, "interval", (int, float), "the manifest"))
    if not 0 < interval < 1:
        raise BundleError(f"{MANIFEST_FILE}: interval {interval} must lie in (0, 1)")
    return TaskBundle(root, manifest, digest, tasks, interval)
