"""Model bundles: reading ``manifest.json`` and verifying every file before anything is used.

A bundle is a directory written by ``hea-export`` (``export/bundle_writer.py``)::

    BUNDLE/
      manifest.json        format version, targets (unit, per-fold scalers, CV metrics),
                           tokenizer, model size, variants (files + parity), per-file SHA-256,
                           training-data SHA-256, code version, creation time
      README.md            the same facts for people
      tokenizer/           TokenEncoder.save(): tokenizer.json, feature_bins.json, ...
      <target>/fold_<k>.<variant>.onnx
      training_set.json    canonical training compositions and measured values per target

:func:`load_bundle` reads only JSON and checks it: the format version, the layout, and the
SHA-256 and size of every listed file. A missing, truncated or altered file, a file the
manifest does not list, or a path leaving the bundle raises
:class:`~hea_screen.errors.BundleError` naming the file. Nothing in a bundle is executable:
there is no pickle, and ONNX graphs are only ever handed to ONNX Runtime.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from hea_screen.datasets import sha256_file
from hea_screen.errors import BundleError
from hea_screen.tokens import TokenEncoder

log = logging.getLogger(__name__)

#: Version of the manifest layout this code reads and writes.
FORMAT_VERSION = 1

MANIFEST_FILE = "manifest.json"
README_FILE = "README.md"
TOKENIZER_DIR = "tokenizer"
TRAINING_SET_FILE = "training_set.json"

#: Precision variants a bundle may hold: fp32 (reference, CPU or CUDA), fp16 (CUDA),
#: int8 (dynamically quantized, CPU).
VARIANTS: tuple[str, ...] = ("fp32", "fp16", "int8")


def onnx_relpath(target: str, fold: int, variant: str) -> str:
    """Relative path of one fold model inside a bundle: ``uts_mpa/fold_0.int8.onnx``."""
    return f"{target}/fold_{fold}.{variant}.onnx"


def default_bundle_path() -> Path:
    """Where the shipped default bundle lives: ``hea_screen/models/default``."""
    return Path(__file__).resolve().parent / "models" / "default"


@dataclass(frozen=True)
class FoldModel:
    """One cross-validation fold of one target: its scaler and its ONNX file per variant."""

    fold: int
    scaler_mean: float
    scaler_std: float
    files: Mapping[str, str]


@dataclass(frozen=True)
class TargetSpec:
    """A predicted property: name (``uts_mpa``), unit, fold models and CV metrics."""

    name: str
    unit: str
    folds: tuple[FoldModel, ...]
    cv_metrics: Mapping[str, Any]


@dataclass(frozen=True)
class Bundle:
    """A verified model bundle: the parsed manifest plus typed access to what predictors need."""

    path: Path
    manifest: Mapping[str, Any]
    targets: tuple[TargetSpec, ...]
    use_features: bool
    max_length: int

    @property
    def written_variants(self) -> tuple[str, ...]:
        """Variants whose ONNX files are in the bundle (they passed their parity bounds)."""
        variants = self.manifest["variants"]
        return tuple(v for v in VARIANTS if variants.get(v, {}).get("written"))

    def variant_note(self, variant: str) -> str:
        """Why a variant is absent (as recorded at export), or ``"written"``."""
        info = self.manifest["variants"].get(variant)
        if info is None:
            return "not produced at export"
        return "written" if info.get("written") else str(info.get("reason", "not written"))

    def file(self, relpath: str) -> Path:
        """Absolute path of a verified file of the bundle."""
        return self.path / relpath

    def encoder(self) -> TokenEncoder:
        """The bundle's tokenizer (the one the models were trained with)."""
        return TokenEncoder.load(self.path / TOKENIZER_DIR, use_features=self.use_features)

    def training_set_text(self) -> str:
        """Contents of ``training_set.json``."""
        return (self.path / TRAINING_SET_FILE).read_text(encoding="utf-8")


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle directory; raise :class:`BundleError` naming what is wrong."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(
            f"model bundle {str(root)!r} is not a directory: give a folder written by hea-export"
        )
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path} is missing: {str(root)!r} is not a model bundle")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path} has format_version {version!r}; "
            f"this hea-screen reads version {FORMAT_VERSION}"
        )
    verify_files(root, _field(manifest, "files", dict))
    bundle = Bundle(
        path=root,
        manifest=manifest,
        targets=_targets(manifest),
        use_features=bool(_field(manifest, "use_features", bool)),
        max_length=int(_field(_field(manifest, "model", dict), "max_position_embeddings", int)),
    )
    _check_layout(bundle)
    log.debug("verified model bundle %s (%d files)", root, len(manifest["files"]))
    return bundle


def verify_files(root: Path, files: Mapping[str, Any]) -> None:
    """Check that ``root`` holds exactly the listed files with the listed sizes and SHA-256."""
    for rel, entry in files.items():
        target = root / _safe_relpath(rel, root)
        if not isinstance(entry, dict) or not {"sha256", "bytes"} <= entry.keys():
            raise BundleError(f"{root / MANIFEST_FILE}: entry for {rel!r} needs sha256 and bytes")
        if not target.is_file():
            raise BundleError(f"bundle file {target} is missing (listed in {MANIFEST_FILE})")
        size = target.stat().st_size
        if size != entry["bytes"]:
            raise BundleError(
                f"bundle file {target} has {size} bytes, the manifest lists {entry['bytes']}: "
                "truncated or altered"
            )
        if sha256_file(target) != entry["sha256"]:
            raise BundleError(
                f"bundle file {target} does not match its SHA-256 in {MANIFEST_FILE}: altered"
            )
    listed = {PurePosixPath(rel) for rel in files} | {PurePosixPath(MANIFEST_FILE)}
    for found in sorted(root.rglob("*")):
        if found.is_dir():
            continue
        rel = PurePosixPath(found.relative_to(root).as_posix())
        if rel not in listed:
            raise BundleError(
                f"bundle file {found} is not listed in {MANIFEST_FILE}: "
                "a bundle holds only the files "
                "its manifest lists (remove it or re-export)"
            )


def _safe_relpath(rel: str, root: Path) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BundleError(
            f"{root / MANIFEST_FILE} lists {rel!r}: paths must stay inside the bundle"
        )
    return path


def _field(mapping: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise BundleError(f"{MANIFEST_FILE} lacks {key!r} of type {names}")
    return value


def _targets(manifest: Mapping[str, Any]) -> tuple[TargetSpec, ...]:
    specs = []
    for name, info in _field(manifest, "targets", dict).items():
        folds = []
        for fold in _field(info, "folds", list):
            scaler = _field(fold, "scaler", dict)
            std = float(_field(scaler, "std", (int, float)))
            if not std > 0:
                raise BundleError(
                    f"{MANIFEST_FILE}: scaler of {name} fold {fold.get('fold')} has std {std}"
                )
            folds.append(
                FoldModel(
                    fold=int(_field(fold, "fold", int)),
                    scaler_mean=float(_field(scaler, "mean", (int, float))),
                    scaler_std=std,
                    files=dict(_field(fold, "files", dict)),
                )
            )
        if not folds:
            raise BundleError(f"{MANIFEST_FILE}: target {name!r} has no fold models")
        specs.append(
            TargetSpec(
                name, str(_field(info, "unit", str)), tuple(folds), info.get("cv_metrics", {})
            )
        )
    if not specs:
        raise BundleError(f"{MANIFEST_FILE} lists no targets")
    return tuple(specs)


def _check_layout(bundle: Bundle) -> None:
    """Each written variant has a listed file for every fold; tokenizer and training set exist."""
    files = bundle.manifest["files"]
    required = [f"{TOKENIZER_DIR}/tokenizer.json", TRAINING_SET_FILE]
    for spec in bundle.targets:
        for fold in spec.folds:
            required += [fold.files[v] for v in bundle.written_variants if v in fold.files]
            missing = [v for v in bundle.written_variants if v not in fold.files]
            if missing:
                raise BundleError(
                    f"{MANIFEST_FILE}: {spec.name} fold {fold.fold} has no file "
                    f"for variant(s) {', '.join(missing)}"
                )
    for rel in required:
        if rel not in files:
            raise BundleError(f"{MANIFEST_FILE} does not list {rel!r}, which a bundle needs")
