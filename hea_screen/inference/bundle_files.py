"""The files of a model bundle: reading ``manifest.json`` and verifying every file before
anything in the bundle is used.

A bundle is a directory written by ``hea-export`` (:mod:`hea_screen.inference.bundle` says what
it holds). These checks apply to every file of it:

- ``manifest.json`` is strict JSON (no NaN, Infinity or repeated key) and no symlink; its
  SHA-256, which covers every other file's SHA-256, is the bundle's identity, and
  ``sha256=`` pins it (:func:`check_pin`: 64 hex digits or a prefix of at least
  :data:`MIN_PIN_DIGITS`);
- every listed file exists with the listed size and SHA-256, no path leaves the bundle, no
  file is unlisted and nothing in the bundle is a symlink (:func:`verify_files`);
- a file a predictor uses is read once and the bytes whose SHA-256 was checked are the
  bytes handed on (:func:`read_checked`), so no file can be swapped between check and use;
- the tokenizer and feature bins are checked before use (:func:`checked_encoder`).

A missing, truncated, altered or unlisted file raises
:class:`~hea_screen.errors.BundleError` naming it. Nothing in a bundle is executable: there is
no pickle, and ONNX graphs are only ever handed to ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tokenizers import Tokenizer

from hea_screen.compositions.features import FEATURE_NAMES
from hea_screen.datasets.sources import sha256_file
from hea_screen.errors import BundleError, UserInputError
from hea_screen.inference.tokens import (
    BINS_FILE,
    N_FEATURE_BINS,
    TOKENIZER_FILE,
    FeatureBins,
    TokenEncoder,
)

MANIFEST_FILE = "manifest.json"
README_FILE = "README.md"
TOKENIZER_DIR = "tokenizer"
TRAINING_SET_FILE = "training_set.json"

#: Fewest leading hex digits of a manifest SHA-256 accepted as a pin.
MIN_PIN_DIGITS = 12

_HEX = re.compile(r"[0-9a-f]+")

#: The shipped bundles, by the name ``--model`` accepts for each (``hea_screen/models/<name>``).
SHIPPED_MODELS: tuple[str, ...] = ("default", "transformer")


def shipped_bundle_path(name: str = "default") -> Path:
    """Where a shipped bundle lives: ``hea_screen/models/<name>`` (``default``: the
    condition-aware bundle of tree ensembles; ``transformer``: the multi-task BERT's)."""
    return Path(__file__).resolve().parents[1] / "models" / name


def default_bundle_path() -> Path:
    """Where the shipped default bundle lives: ``hea_screen/models/default``."""
    return shipped_bundle_path("default")


def bundle_root(path: str | Path | None) -> Path:
    """The bundle directory ``path`` names: ``None`` or ``"default"`` is the shipped default
    bundle, ``"transformer"`` the shipped transformer bundle (each must exist); anything else
    is a directory path (a local folder of one of those names is given as ``./default``)."""
    name = "default" if path is None else path
    if isinstance(name, str) and name in SHIPPED_MODELS:
        shipped = shipped_bundle_path(name)
        if not shipped.is_dir():
            raise BundleError(
                f"no shipped {name!r} model bundle at {shipped}: this install has none yet; "
                "pass a bundle path written by hea-export (see docs/inference.md)"
            )
        return shipped
    return Path(name)


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
    except RecursionError:
        raise BundleError(f"{path} nests too deeply to read: not a file of a bundle") from None


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


def checked_encoder(
    root: Path,
    files: Mapping[str, Any],
    vocab_size: object,
    use_features: bool,
    use_conditions: bool = False,
    use_grain_size: bool = False,
) -> TokenEncoder:
    """A bundle's :class:`TokenEncoder` from the checked bytes of ``tokenizer/`` (its
    vocabulary must have ``vocab_size`` tokens, what the models read; ``use_grain_size``:
    whether they read the grain-size token, as the manifest says)."""
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
    return TokenEncoder(tokenizer, bins, use_features, use_conditions, use_grain_size)


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


