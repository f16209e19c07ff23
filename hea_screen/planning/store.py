"""The lab's measurements: reading a results file and a local, append-only store.

A results file (CSV) has one row per tested specimen:

=================  ============================================================
column             meaning
=================  ============================================================
``composition``    the alloy, any text :func:`hea_screen.parse` reads
``test_type``      ``tension`` or ``compression`` (``T``/``C``)
``temperature_c``  test temperature in °C
``processing``     processing route (``cast``, ``wrought``, ``anneal``, ``powder``,
                   ``other``)
property columns   at least one of :data:`PROPERTY_COLUMNS` (empty cells allowed)
=================  ============================================================

Each property value becomes one record of a task of :mod:`hea_screen.conditions`
(``uts_mpa`` in a tension row is ``uts_tension_mpa``; hardness is read at 25 °C). A bad
row (unknown or unparseable composition, element without data, bad condition, missing,
negative or absurd value: see :data:`LIMITS`) raises :class:`UserInputError` naming the row
(counted from 0, with its line in the file) before anything is stored.

The store is a directory::

    STORE/manifest.json          {"format": 1, "imports": [{file, sha256, rows, source, imported}]}
    STORE/imports/<sha256>.parquet  one file per import: the records of :data:`RECORD_COLUMNS`

An import writes its Parquet file atomically, then the manifest atomically (a temporary file,
then a rename), so a crash leaves the store as it was before or after, never half-written
(a Parquet file the manifest does not list is ignored). The SHA-256 of the import's
normalized records identifies it: importing the same measurements again is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from hea_screen.compositions.composition import parse
from hea_screen.compositions.features import featurize
from hea_screen.conditions import HARDNESS, ROOM_TEMPERATURE_C, Condition, task_for
from hea_screen.errors import UserInputError
from hea_screen.output import atomic_write
from hea_screen.planning.acquisition import Measured

STORE_FORMAT = 1
MANIFEST = "manifest.json"

REQUIRED_COLUMNS: tuple[str, ...] = ("composition", "test_type", "temperature_c", "processing")

#: Measured property columns and the property each one is.
PROPERTY_COLUMNS: dict[str, str] = {
    "uts_mpa": "uts",
    "ys_mpa": "ys",
    "elongation_pct": "elongation",
    "hardness_hv": "hardness",
}

#: Accepted range of each property (inclusive) and of test temperatures; beyond is absurd.
LIMITS: dict[str, tuple[float, float]] = {
    "uts": (1.0, 10000.0),
    "ys": (1.0, 10000.0),
    "elongation": (0.0, 300.0),
    "hardness": (1.0, 2500.0),
}
TEMPERATURE_RANGE_C: tuple[float, float] = (-273.15, 2500.0)

#: Columns of a stored record.
RECORD_COLUMNS: tuple[str, ...] = (
    "composition",
    "task",
    "test_type",
    "temperature_c",
    "processing",
    "value",
    "source_row",
)


def _row_error(i: int, message: str) -> UserInputError:
    return UserInputError(f"row {i} (line {i + 2}): {message}")


def read_results(path: str | Path) -> pl.DataFrame:
    """The records of a results CSV (module docstring), checked row by row."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"measured results {str(path)!r}: no such file")
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"measured results {str(path)!r} cannot be read: {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    props = [c for c in raw.columns if c in PROPERTY_COLUMNS]
    if missing or not props:
        need = ", ".join(missing) if missing else "a property column"
        raise UserInputError(
            f"measured results {str(path)!r} lack {need}: need columns "
            f"{', '.join(REQUIRED_COLUMNS)} and at least one of {', '.join(PROPERTY_COLUMNS)}"
        )
    if raw.height == 0:
        raise UserInputError(f"measured results {str(path)!r} hold no rows")
    records, problems = [], []
    for i, row in enumerate(raw.iter_rows(named=True)):
        try:
            records += _records(i, row)
        except UserInputError as exc:
            problems.append(str(exc))
    frame = pl.DataFrame(records, schema=dict.fromkeys(RECORD_COLUMNS), orient="row")
    problems += _feature_problems(frame)
    if problems:
        source = f"measured results {str(path)!r}"
        raise bad_rows_error(source, sorted(problems, key=lambda m: int(m.split()[1])))
    if not records:
        raise UserInputError(f"measured results {str(path)!r} hold no measured value")
    return frame.cast({"temperature_c": pl.Float64, "value": pl.Float64, "source_row": pl.Int64})


def _records(i: int, row: dict[str, str | None]) -> list[tuple[object, ...]]:
    text = row["composition"]
    if not text or not text.strip():
        raise _row_error(i, "empty composition")
    try:
        canonical = str(parse(text))
        condition = Condition.of(row["test_type"], row["temperature_c"], row["processing"])
    except UserInputError as exc:
        raise _row_error(i, str(exc)) from None
    lo_t, hi_t = TEMPERATURE_RANGE_C
    if not lo_t <= condition.temperature_c <= hi_t:
        raise _row_error(
            i, f"test temperature {condition.temperature_c:g} °C outside {lo_t:g} to {hi_t:g}"
        )
    out = []
    for column, prop in PROPERTY_COLUMNS.items():
        cell = row.get(column)
        if cell is None or not cell.strip():
            continue
        value = _value(i, column, cell, prop)
        task = task_for(prop, condition.test_type)
        temperature = ROOM_TEMPERATURE_C if task is HARDNESS else condition.temperature_c
        out.append(
            (
                canonical,
                task.name,
                condition.test_type.value,
                temperature,
                condition.processing.value,
                value,
                i,
            )
        )
    if not out:
        raise _row_error(i, f"no measured value in {', '.join(PROPERTY_COLUMNS)}")
    return out


def _value(i: int, column: str, cell: str, prop: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise _row_error(i, f"{column} {cell!r} is not a number") from None
    lo, hi = LIMITS[prop]
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _row_error(i, f"{column} {cell!r} outside the accepted {lo:g} to {hi:g}")
    return value


def _feature_problems(frame: pl.DataFrame) -> list[str]:
    """The rows whose composition has no element data (a feature is undefined)."""
    texts = frame["composition"].unique(maintain_order=True)
    try:
        featurize(texts)
        return []
    except UserInputError:
        pass
    problems = []
    for text in texts:
        try:
            featurize([text])
        except UserInputError as exc:
            rows = frame.filter(pl.col("composition") == text)["source_row"].unique().sort()
            problems += [str(_row_error(int(r), str(exc).split(": ", 1)[-1])) for r in rows]
    return problems


#: Bad rows named in one error; the rest are counted.
MAX_BAD_ROWS_SHOWN = 20


def bad_rows_error(source: str, problems: list[str]) -> UserInputError:
    """One error naming every bad row (up to :data:`MAX_BAD_ROWS_SHOWN`, then a count), so
    a results file is fixed in one pass."""
    shown = problems[:MAX_BAD_ROWS_SHOWN]
    more = len(problems) - len(shown)
    lines = [f"{source}: {len(problems)} bad row(s); nothing was stored:", *shown]
    if more:
        lines.append(f"... and {more} more bad row(s)")
    return UserInputError("\n  ".join(lines))


def records_sha256(records: pl.DataFrame) -> str:
    """Identity of an import: SHA-256 of its records, sorted, without the source rows."""
    norm = records.drop("source_row").sort(list(RECORD_COLUMNS[:-1]))
    return hashlib.sha256(norm.write_csv().encode("utf-8")).hexdigest()


class MeasurementStore:
    """A local directory of imported measurements (module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def manifest(self) -> dict[str, object]:
        file = self.path / MANIFEST
        if not file.exists():
            return {"format": STORE_FORMAT, "imports": []}
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserInputError(f"measurement store {str(file)!r} is unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            raise UserInputError(f"{str(file)!r} is not a measurement store of format 1")
        return data

    def imports(self) -> list[dict[str, object]]:
        return list(self.manifest()["imports"])  # type: ignore[arg-type]

    def check_new(self, records: pl.DataFrame) -> str:
        """The SHA-256 of ``records``; refuse them if an earlier import holds the same."""
        digest = records_sha256(records)
        for entry in self.imports():
            if entry["sha256"] == digest:
                raise UserInputError(
                    f"these measurements were imported before ({entry['source']}, "
                    f"{entry['imported']}, sha256 {digest[:12]}): nothing stored"
                )
        return digest

    def add(self, records: pl.DataFrame, source: str) -> dict[str, object]:
        """Store ``records`` as a new import; refuse one stored before (same SHA-256)."""
        digest = self.check_new(records)
        manifest = self.manifest()
        imports = list(manifest["imports"])  # type: ignore[arg-type]
        rel = f"imports/{digest}.parquet"
        atomic_write(self.path / rel, records.write_parquet)
        entry = {
            "file": rel,
            "sha256": digest,
            "rows": records.height,
            "source": source,
            "imported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        manifest["imports"] = [*imports, entry]
        text = json.dumps(manifest, indent=1) + "\n"
        atomic_write(self.path / MANIFEST, lambda p: p.write_text(text, encoding="utf-8"))
        return entry

    def records(self) -> pl.DataFrame:
        """Every stored record, in import order (an empty frame for a new store)."""
        parts = [pl.read_parquet(self.path / str(e["file"])) for e in self.imports()]
        if not parts:
            return pl.DataFrame(schema={c: pl.Utf8 for c in RECORD_COLUMNS}).cast(
                {"temperature_c": pl.Float64, "value": pl.Float64, "source_row": pl.Int64}
            )
        return pl.concat(parts, how="vertical_relaxed")

    def measured(self, condition: Condition | None = None) -> Measured:
        """Every stored alloy with, per task, its mean measured value (only the values
        measured at ``condition``'s temperature and route when given; hardness is a 25 °C
        value of any route's alloy)."""
        every = self.records()
        rec = every
        if condition is not None:
            rec = every.filter(
                (pl.col("task") == HARDNESS.name)
                | (
                    (pl.col("temperature_c") == condition.temperature_c)
                    & (pl.col("processing") == condition.processing.value)
                )
            )
        means = rec.group_by("task", "composition").agg(pl.col("value").mean())
        values: dict[str, dict[str, float]] = {}
        for task, comp, value in means.iter_rows():
            values.setdefault(task, {})[comp] = value
        return Measured(tuple(every["composition"].unique(maintain_order=True)), values)
