"""Atomic writes of training outputs (CSV, Markdown, JSON), on
:func:`hea_screen.output.atomic_write`: a reader, or a crash, never sees a half-written file."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from hea_screen.output import atomic_write


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv_atomic(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a polars frame as CSV atomically."""
    return atomic_write(path, frame.write_csv)
