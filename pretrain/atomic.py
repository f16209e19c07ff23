"""Atomic file writes: write a temporary file beside the target, then ``os.replace`` it.

A reader (or a crash) never sees a half-written CSV, Markdown report or PNG.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import polars as pl


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name that ``write`` creates itself, so the file gets the usual permissions
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv_atomic(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a polars frame as CSV atomically."""
    return write_atomic(path, lambda tmp: frame.write_csv(tmp))
