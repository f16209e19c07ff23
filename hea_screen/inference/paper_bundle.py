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
manifest does not list, a symlink anywhere in the bundle, or a path leaving the bundle raises
:class:`~hea_screen.errors.BundleError` naming the file. Nothing in a bundle is executable:
there is no pickle, and ONNX graphs are only ever handed to ONNX Runtime.

``manifest.json`` is not hashed by itself, so every value in it is checked: JSON without
NaN, Infinity or repeated keys; per target, folds numbered ``0..n-1`` once each, finite
scalers whose mean lies within the target's measured values in ``training_set.json`` and
whose std is positive and at most their range; per fold and variant, the file
``<target>/fold_<k>.<variant>.onnx`` (:func:`onnx_relpath`), each ONNX file used exactly once.
The SHA-256 of ``manifest.json`` (which lists the SHA-256 of every other file) is the
bundle's identity, :attr:`Bundle.sha256`; ``load_bundle(path, sha256=...)`` refuses any
other bundle. Files a predictor uses are read once, and the bytes whose hash was checked are
the bytes used (:meth:`Bundle.read`), so no file can be swapped between check and use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tokenizers import Tokenizer

from hea_screen.compositions.features import FEATURE_NAMES
from hea_screen.datasets.sources import sha256_file
from hea_screen.errors import BundleError, UserInputError
from hea_screen.inference.applicability import TrainingSet
from hea_screen.inference.tokens import (
    BINS_FILE,
    N_FEATURE_BINS,
    TOKENIZER_FILE,
    FeatureBins,
    TokenEncoder,
)

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

#: Fewest leading hex digits of a manifest SHA-256 accepted as a pin.
MIN_PIN_DIGITS = 12

_HEX = re.compile(r"[0-9a-f]+")


def onnx_relpath(target: str, fold: int, variant: str) -> str:
    """Relative path of one fold model inside a bundle: ``uts_mpa/fold_0.int8.onnx``."""
    return f"{target}/fold_{fold}.{variant}.onnx"


def default_bundle_path() -> Path:
    """Where the shipped default bundle lives: ``hea_screen/models/default``."""
    return Path(__file__).resolve().parents[1] / "models" / "default"


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
    sha256: str
    tokens: TokenEncoder
    training_set: TrainingSet

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

    def read(self, relpath: str) -> bytes:
        """The bytes of a listed file, read once and checked against its SHA-256: hand on these
        bytes (e.g. ``InferenceSession(bundle.read(rel))``), never reopen the path."""
        return read_checked(self.path, relpath, self.manifest["files"])

    def encoder(self) -> TokenEncoder:
        """The bundle's tokenizer (the one the models were trained with), checked at load."""
        return self.tokens


def load_bundle(path: str | Path, sha256: str | None = None) -> Bundle:
    """Read and verify a bundle directory; raise :class:`BundleError` naming what is wrong.

    ``sha256``: the expected SHA-256 of the bundle's ``manifest.json`` (64 hex digits, or a
    prefix of at least :data:`MIN_PIN_DIGITS`); any other bundle is refused.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(
            f"model bundle {str(root)!r} is not a directory: give a folder written by hea-export"
        )
    manifest_path = root / MANIFEST_FILE
    manifest, digest = read_manifest(root, sha256)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path} has format_version {version!r}; "
            f"this hea-screen reads version {FORMAT_VERSION}"
        )
    files = _field(manifest, "files", dict)
    verify_files(root, files)
    use_features = bool(_field(manifest, "use_features", bool))
    training_set = _training_set(root, files)
    bundle = Bundle(
        path=root,
        manifest=manifest,
        targets=_targets(manifest),
        use_features=use_features,
        max_length=int(_field(_field(manifest, "model", dict), "max_position_embeddings", int)),
        sha256=digest,
        tokens=_encoder(root, manifest, use_features),
        training_set=training_set,
    )
    _check_layout(bundle)
    _check_scalers(bundle)
    log.debug("verified model bundle %s (%d files), sha256 %s", root, len(files), digest)
    return bundle


def read_manifest(root: Path, sha256: str | None = None) -> tuple[dict[str, Any], str]:
    """The parsed ``manifest.json`` of a bundle directory (no NaN, infinity or repeated key;
    no symlink) and its SHA-256, refused unless it matches ``sha256`` when that is given."""
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


def check_pin(actual: str, pinned: str | None, root: Path) -> None:
    """Refuse a bundle whose manifest SHA-256 ``actual`` does not start with ``pinned``."""
    if pinned is None:
        return
    pin = pinned.strip().lower() if isinstance(pinned, str) else ""
    if not MIN_PIN_DIGITS <= len(pin) <= 64 or not _HEX.fullmatch(pin):
        raise UserInputError(
            f"model SHA-256 {pinned!r} is not a hex digest: give the 64 hex digits of the "
            f"bundle's {MANIFEST_FILE} (or a prefix of at least {MIN_PIN_DIGITS})"
        )
    if not actual.startswith(pin):
        raise BundleError(
            f"model bundle {root} has {MANIFEST_FILE} SHA-256 {actual}, not the pinned {pin}: "
            "it is another bundle (or was altered); pin the new digest only if you trust it"
        )


def strict_json(data: bytes, path: Path) -> Any:
    """Parse JSON refusing NaN, Infinity and repeated keys; :class:`BundleError` names ``path``."""

    def constant(name: str) -> Any:
        raise BundleError(f"{path} holds {name}: every number in a bundle must be finite")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise BundleError(f"{path} repeats the key {key!r}: each key may appear once")
            out[key] = value
        return out

    try:
        return json.loads(data.decode("utf-8"), parse_constant=constant, object_pairs_hook=pairs)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})") from None


def verify_files(root: Path, files: Mapping[str, Any]) -> None:
    """Check that ``root`` holds exactly the listed files with the listed sizes and SHA-256,
    and no symlink."""
    _refuse_symlinks(root)
    for rel, entry in files.items():
        target = root / _safe_relpath(rel, root)
        if not isinstance(entry, dict) or not {"sha256", "bytes"} <= entry.keys():
            raise BundleError(f"{root / MANIFEST_FILE}: entry for {rel!r} needs sha256 and bytes")
        if not _is_digest(entry["sha256"]) or not _is_count(entry["bytes"]):
            raise BundleError(
                f"{root / MANIFEST_FILE}: entry for {rel!r} needs sha256 as 64 lowercase hex "
                f"digits and bytes as a whole number >= 0, got {entry['sha256']!r}, "
                f"{entry['bytes']!r}"
            )
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
    _check_unlisted(root, listed)


def _refuse_symlinks(root: Path) -> None:
    """A symlink (file or directory, the manifest included) could point outside the bundle
    and be swapped between the hash check and the load: refuse any."""
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs + names):
            found = Path(folder) / name
            if found.is_symlink():
                raise BundleError(
                    f"bundle entry {found} is a symlink: a bundle holds only plain files and "
                    "folders (copy the target in, or re-export)"
                )


def _check_unlisted(root: Path, listed: set[PurePosixPath]) -> None:
    """Every file under ``root`` must be listed (or be the manifest)."""
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
        folds = tuple(_fold(name, i, entry) for i, entry in enumerate(_field(info, "folds", list)))
        if not folds:
            raise BundleError(f"{MANIFEST_FILE}: target {name!r} has no fold models")
        numbers = [f.fold for f in folds]
        if sorted(numbers) != list(range(len(folds))):
            raise BundleError(
                f"{MANIFEST_FILE}: target {name!r} has folds {numbers}; its {len(folds)} folds "
                f"must be numbered 0..{len(folds) - 1}, each once"
            )
        specs.append(
            TargetSpec(name, str(_field(info, "unit", str)), folds, info.get("cv_metrics", {}))
        )
    if not specs:
        raise BundleError(f"{MANIFEST_FILE} lists no targets")
    _check_files_used_once(specs)
    return tuple(specs)


def _fold(target: str, index: int, entry: Any) -> FoldModel:
    """One entry of ``targets.<target>.folds``: fold number, finite scaler, file per variant."""
    where = f"{MANIFEST_FILE}: {target} folds[{index}]"
    fold = entry.get("fold") if isinstance(entry, Mapping) else None
    if isinstance(fold, bool) or not isinstance(fold, int):
        raise BundleError(f"{where} needs 'fold' as a whole number, got {fold!r}")
    scaler = _field(entry, "scaler", dict)
    mean = _finite(scaler.get("mean"), f"{where} (fold {fold}) scaler mean")
    std = _finite(scaler.get("std"), f"{where} (fold {fold}) scaler std")
    if not std > 0:
        raise BundleError(f"{MANIFEST_FILE}: scaler of {target} fold {fold} has std {std}")
    files = dict(_field(entry, "files", dict))
    unknown = [variant for variant in files if variant not in VARIANTS]
    if unknown:
        raise BundleError(
            f"{where} (fold {fold}) lists variant(s) {', '.join(map(repr, unknown))}; variants "
            f"are {', '.join(VARIANTS)}"
        )
    return FoldModel(fold=fold, scaler_mean=mean, scaler_std=std, files=files)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BundleError(f"{what} is {value!r}: it must be a finite number")
    return float(value)


def _check_files_used_once(specs: list[TargetSpec]) -> None:
    """Each file is the model of one (target, fold, variant), at the path
    :func:`onnx_relpath` gives it."""
    users: dict[str, str] = {}
    for spec in specs:
        for fold in spec.folds:
            for variant, rel in fold.files.items():
                user = f"{spec.name} fold {fold.fold} {variant}"
                if rel in users:
                    raise BundleError(
                        f"{MANIFEST_FILE}: {rel!r} is the model of both {users[rel]} and {user}: "
                        "each model file serves exactly one target, fold and variant"
                    )
                users[rel] = user
    for spec in specs:
        for fold in spec.folds:
            for variant, rel in fold.files.items():
                expected = onnx_relpath(spec.name, fold.fold, variant)
                if rel != expected:
                    raise BundleError(
                        f"{MANIFEST_FILE}: the {variant} file of {spec.name} fold {fold.fold} "
                        f"is {rel!r}, it must be {expected!r}"
                    )


def _check_scalers(bundle: Bundle) -> None:
    """A fold's scaler must fit its target's measured values: mean within their range, std
    positive and at most that range (a scaler that does not would rescale the predictions)."""
    for spec in bundle.targets:
        rows = bundle.training_set.targets.get(spec.name)
        if rows is None:
            raise BundleError(
                f"{bundle.path / TRAINING_SET_FILE} has no measured values of {spec.name!r}, "
                f"a target of {MANIFEST_FILE}"
            )
        lo, hi = float(rows.values.min()), float(rows.values.max())
        for fold in spec.folds:
            if not lo <= fold.scaler_mean <= hi or not 0 < fold.scaler_std <= hi - lo:
                raise BundleError(
                    f"{MANIFEST_FILE}: scaler of {spec.name} fold {fold.fold} (mean "
                    f"{fold.scaler_mean:g}, std {fold.scaler_std:g}) does not fit the measured "
                    f"{spec.name} of {TRAINING_SET_FILE} ({lo:g} .. {hi:g}): the mean must lie "
                    f"in that range and the std be > 0 and at most {hi - lo:g}"
                )


def _training_set(root: Path, files: Mapping[str, Any]) -> TrainingSet:
    data = read_checked(root, TRAINING_SET_FILE, files)
    try:
        return TrainingSet.from_json(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"{root / TRAINING_SET_FILE} is not UTF-8 text ({exc})") from None
    except BundleError as exc:
        raise BundleError(f"{root / TRAINING_SET_FILE}: {exc}") from None


def _encoder(root: Path, manifest: Mapping[str, Any], use_features: bool) -> TokenEncoder:
    """The tokenizer and feature bins, from the checked bytes of their files."""
    size = _field(manifest, "model", dict).get("vocab_size")
    return checked_encoder(root, manifest["files"], size, use_features)


def checked_encoder(
    root: Path,
    files: Mapping[str, Any],
    vocab_size: object,
    use_features: bool,
    use_conditions: bool = False,
) -> TokenEncoder:
    """A bundle's :class:`TokenEncoder` from the checked bytes of ``tokenizer/`` (its
    vocabulary must have ``vocab_size`` tokens, what the models read)."""
    rel = f"{TOKENIZER_DIR}/{TOKENIZER_FILE}"
    data = read_checked(root, rel, files)
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # tokenizers raises a bare Exception ("Model missing", ...)
        raise BundleError(
            f"bundle file {root / rel} is not a tokenizers tokenizer ({exc}): re-export the bundle"
        ) from None
    if tokenizer.get_vocab_size() != vocab_size:
        raise BundleError(
            f"bundle file {root / rel} has {tokenizer.get_vocab_size()} tokens; the models of "
            f"{MANIFEST_FILE} read a vocabulary of {vocab_size!r}"
        )
    bins = _feature_bins(root, files) if use_features else None
    return TokenEncoder(
        tokenizer, bins, use_features=use_features, use_conditions=use_conditions
    )


def _feature_bins(root: Path, files: Mapping[str, Any]) -> FeatureBins:
    """``feature_bins.json``: this version's features, each with N-1 finite ascending edges."""
    rel = f"{TOKENIZER_DIR}/{BINS_FILE}"
    path = root / rel
    data = strict_json(read_checked(root, rel, files), path)
    edges = data.get("edges") if isinstance(data, dict) else None
    ok = (
        isinstance(edges, dict)
        and data.get("features") == list(FEATURE_NAMES)
        and data.get("n_bins") == N_FEATURE_BINS
        and sorted(edges) == sorted(FEATURE_NAMES)
        and all(_ascending(edges[name], N_FEATURE_BINS - 1) for name in FEATURE_NAMES)
    )
    if not ok:
        raise BundleError(
            f"bundle file {path} is malformed: it must hold n_bins {N_FEATURE_BINS}, features "
            f"{', '.join(FEATURE_NAMES)} and, per feature, {N_FEATURE_BINS - 1} finite ascending "
            "edges"
        )
    return FeatureBins({name: [float(x) for x in edges[name]] for name in FEATURE_NAMES})


def _ascending(values: Any, n: int) -> bool:
    if not isinstance(values, list) or len(values) != n:
        return False
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)
    return numbers and all(map(math.isfinite, values)) and values == sorted(values)


def read_nofollow(path: Path) -> bytes:
    """The bytes of ``path``, refusing a symlink (``O_NOFOLLOW``: no swap after the check)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if path.is_symlink():
            raise BundleError(
                f"bundle entry {path} is a symlink: a bundle holds only plain files and "
                "folders (copy the target in, or re-export)"
            ) from None
        raise BundleError(f"cannot read bundle file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_checked(root: Path, rel: str, files: Mapping[str, Any]) -> bytes:
    """Read a listed file once and check the SHA-256 of the bytes read."""
    entry = files.get(rel)
    if not isinstance(entry, Mapping):
        raise BundleError(f"{MANIFEST_FILE} does not list {rel!r}, which a bundle needs")
    path = root / _safe_relpath(rel, root)
    data = read_nofollow(path)
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise BundleError(
            f"bundle file {path} does not match its SHA-256 in {MANIFEST_FILE}: altered"
        )
    return data


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and bool(_HEX.fullmatch(value))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_layout(bundle: Bundle) -> None:
    """Each written variant has a listed file for every fold; tokenizer and training set exist."""
    files = bundle.manifest["files"]
    variants = _field(bundle.manifest, "variants", dict)
    if not all(isinstance(info, dict) for info in variants.values()):
        raise BundleError(f"{MANIFEST_FILE}: each entry of 'variants' must be a JSON object")
    required = [f"{TOKENIZER_DIR}/{TOKENIZER_FILE}", TRAINING_SET_FILE]
    for spec in bundle.targets:
        for fold in spec.folds:
            required += list(fold.files.values())
            missing = [v for v in bundle.written_variants if v not in fold.files]
            if missing:
                raise BundleError(
                    f"{MANIFEST_FILE}: {spec.name} fold {fold.fold} has no file "
                    f"for variant(s) {', '.join(missing)}"
                )
    for rel in required:
        if rel not in files:
            raise BundleError(f"{MANIFEST_FILE} does not list {rel!r}, which a bundle needs")
    used = {rel for spec in bundle.targets for fold in spec.folds for rel in fold.files.values()}
    unused = [rel for rel in files if rel.endswith(".onnx") and rel not in used]
    if unused:
        raise BundleError(
            f"{MANIFEST_FILE} lists {', '.join(map(repr, unused))}, which no fold uses: "
            "each model file serves exactly one target, fold and variant"
        )
