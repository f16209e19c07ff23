"""Writing result tables and JSON atomically (a temporary file, then ``os.replace``), and
the checks every output path and every JSON file read pass.

A reader (or a crashed run) never sees a half-written file: the content goes to a
temporary file in the destination's directory, is flushed to disk, and replaces the
destination in one rename. The rename replaces only a regular file (never a FIFO, a device
node, a directory or a symbolic link), and a command's output is never one of its inputs
(:func:`check_output_path`). Text cells of a CSV that a spreadsheet would run as a formula
are escaped (:func:`csv_safe`).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import polars as pl

from hea_screen.errors import UserInputError

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

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


def check_output_path(
    path: str | Path, what: str = "output", others: Mapping[str, str | Path | None] | None = None
) -> Path:
    """:func:`check_table_path` and :func:`check_target`, then prove the directory takes a
    file (permissions alone do not tell: ``/proc`` looks writable to root) by creating and
    removing an empty one."""
    path = check_table_path(path)
    check_target(path, what, others)
    check_writable_dir(path.parent if str(path.parent) else Path("."), f"{what} {str(path)!r}")
    return path


def _kind(mode: int) -> str | None:
    """What a file of ``mode`` (from ``lstat``) is, if not a regular file."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (an existing one by device and inode, else by their
    resolved paths)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_target(
    path: str | Path, what: str, others: Mapping[str, str | Path | None] | None = None
) -> None:
    """Refuse ``path`` as an output unless it is new or a regular file (checked without
    following a link), and unless it differs from every path of ``others`` (label -> path:
    the command's inputs and its other outputs)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UserInputError(f"{what} {str(path)!r}: {exc.strerror or exc}") from None
    kind = None if mode is None else _kind(mode)
    if kind is not None:
        raise UserInputError(
            f"{what} {str(path)!r} is {kind}: an output is a new file or replaces a regular "
            "file only; choose another path"
        )
    for label, other in (others or {}).items():
        if other is not None and same_file(path, other):
            raise UserInputError(
                f"{what} {str(path)!r} is the same file as {label} {str(other)!r}: "
                "choose another path"
            )


def check_writable_dir(directory: Path, what: str) -> None:
    """Raise :class:`UserInputError` naming ``what`` unless ``directory`` takes a new file."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise UserInputError(
            f"{what}: cannot write in directory {str(directory)!r}: {exc.strerror or exc}"
        ) from None


def atomic_write(path: str | Path, write: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, flush it to disk, then rename it
    onto ``path``; missing folders are created, and a ``path`` that exists as anything but a
    regular file is refused (:func:`check_target`). ``write`` creates the temporary file
    itself, so it gets the usual permissions, or ``mode`` when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_target(path, "output")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


#: Text cells a spreadsheet would read as a formula (OWASP, "CSV injection"): those that
#: start with ``= + - @``, a tab or a carriage return; they are written with a leading ``'``.
FORMULA_START = r"^[=+\-@\t\r]"


def csv_safe(frame: FrameT) -> FrameT:
    """``frame`` (eager or lazy) with every text cell that matches :data:`FORMULA_START` and
    is not a number (``-5`` stays) prefixed with ``'``, so no spreadsheet runs it."""
    return frame.with_columns(
        pl.when(
            pl.col(name).str.contains(FORMULA_START)
            & pl.col(name).str.strip_chars().cast(pl.Float64, strict=False).is_null()
        )
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name, dtype in frame.collect_schema().items()
        if dtype == pl.Utf8
    )


def write_table(frame: pl.DataFrame, path: str | Path, mode: int | None = None) -> Path:
    """Write ``frame`` as CSV (formula-safe: :func:`csv_safe`), Parquet or JSON (records) by
    the extension of ``path``; ``mode``: the file's permissions (default: the usual)."""
    path = check_table_path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return atomic_write(path, csv_safe(frame).write_csv, mode)
    if suffix == ".parquet":
        return atomic_write(path, frame.write_parquet, mode)
    return atomic_write(path, frame.write_json, mode)


def write_json(data: object, path: str | Path) -> Path:
    """Write ``data`` as indented JSON."""
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: str | Path, what: str) -> object:
    """The parsed JSON of ``path``; :class:`UserInputError` naming ``what`` when it cannot be
    read, is not UTF-8 JSON, or nests too deeply for the parser (the message quotes none of
    its content)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise UserInputError(f"{what} {str(path)!r} cannot be read: {reason}") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise UserInputError(
            f"{what} {str(path)!r} nests too deeply to read: not a file this program wrote"
        ) from None
    except ValueError as exc:
        where = f"line {exc.lineno}, column {exc.colno}" if hasattr(exc, "lineno") else "?"
        raise UserInputError(
            f"{what} {str(path)!r} is not valid JSON ({where}): truncated or edited"
        ) from None
