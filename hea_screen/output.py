"""Writing result tables and JSON atomically (a temporary file, then ``os.replace``).

A reader (or a crashed run) never sees a half-written file: the content goes to a
temporary file in the destination's directory, is flushed to disk, and replaces the
destination in one rename.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from hea_screen.errors import UserInputError

#: Table formats by file extension.
FORMATS: tuple[str, ...] = (".csv", ".parquet", ".json")


def check_table_path(path: str | Path) -> Path:
    """Validate an output path before any work: known extension, existing directory."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UserInputError(
            f"output {str(path)!r}: unsupported extension {path.suffix or '(none)'!r}; "
            f"use {', '.join(FORMATS)}"
        )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserInputError(f"output {str(path)!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserInputError(f"output {str(path)!r}: directory {str(parent)!r} is not writable")
    return path


def check_output_path(path: str | Path) -> Path:
    """:func:`check_table_path`, then prove the directory takes a file (permissions alone do
    not tell: ``/proc`` looks writable to root) by creating and removing an empty one."""
    path = check_table_path(path)
    check_writable_dir(path.parent if str(path.parent) else Path("."), f"output {str(path)!r}")
    return path


def check_writable_dir(directory: Path, what: str) -> None:
    """Raise :class:`UserInputError` naming ``what`` unless ``directory`` takes a new file."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise UserInputError(
            f"{what}: cannot write in directory {str(directory)!r}: {exc.strerror or exc}"
        ) from None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, flush it to disk, then rename it
    onto ``path``; missing folders are created. ``write`` creates the temporary file itself,
    so it gets the usual permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_table(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as CSV, Parquet or JSON (records) by the extension of ``path``."""
    path = check_table_path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return atomic_write(path, frame.write_csv)
    if suffix == ".parquet":
        return atomic_write(path, frame.write_parquet)
    return atomic_write(path, frame.write_json)


def write_json(data: object, path: str | Path) -> Path:
    """Write ``data`` as indented JSON."""
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
