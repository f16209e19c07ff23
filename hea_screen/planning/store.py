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
import logging
import re
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from hea_screen.compositions.composition import parse
from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import (
    HARDNESS,
    ROOM_TEMPERATURE_C,
    TASKS_BY_NAME,
    Condition,
    TestType,
    task_for,
)
from hea_screen.errors import CompositionError, UserInputError, brief, excerpt
from hea_screen.output import atomic_write, check_writable_dir, read_json
from hea_screen.planning.acquisition import Measured
from hea_screen.planning.checks import LIMITS, TEMPERATURE_RANGE_C, property_limits, within

log = logging.getLogger("hea_screen")

STORE_FORMAT = 1
MANIFEST = "manifest.json"

REQUIRED_COLUMNS: tuple[str, ...] = ("composition", "test_type", "temperature_c", "processing")

#: Rows of a results file read into records at a time (bounds the working memory).
READ_ROWS = 65_536

#: Measured property columns and the property each one is.
PROPERTY_COLUMNS: dict[str, str] = {
    "uts_mpa": "uts",
    "ys_mpa": "ys",
    "elongation_pct": "elongation",
    "hardness_hv": "hardness",
}

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
    """The records of a results CSV (module docstring), every row checked; one error names
    every bad row."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"measured results {str(path)!r}: no such file")
    try:
        columns = pl.scan_csv(path, infer_schema=False).collect_schema().names()
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, exc) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    props = [c for c in columns if c in PROPERTY_COLUMNS]
    if missing or not props:
        need = ", ".join(missing) if missing else "a property column"
        raise UserInputError(
            f"measured results {str(path)!r} lack {need}: need columns "
            f"{', '.join(REQUIRED_COLUMNS)} and at least one of {', '.join(PROPERTY_COLUMNS)}"
        )
    ignored = [c for c in columns if c not in (*REQUIRED_COLUMNS, *PROPERTY_COLUMNS)]
    if ignored:
        log.warning(
            "measured results %r: ignored column(s) %s (read: %s)",
            str(path),
            ", ".join(repr(c[:24]) for c in ignored[:5]) + (" ..." if len(ignored) > 5 else ""),
            ", ".join((*REQUIRED_COLUMNS, *PROPERTY_COLUMNS)),
        )
    read = _read_slices(path, props)
    if read is None:  # the scan failed: the whole-file reading names the error
        try:
            raw = pl.read_csv(path, infer_schema=False)
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
            raise _unreadable(path, exc) from None
        records, problems = _row_records(raw, 0)
        read = records, _row_hashes(records), problems
    records, hashes, problems = read
    if not records.height and not problems:
        raise UserInputError(f"measured results {str(path)!r} hold no rows")
    records, repeats = _without_repeats(records, hashes)
    problems += repeats
    problems += _feature_problems(records)
    if problems:
        source = f"measured results {str(path)!r}"
        raise bad_rows_error(source, sorted(problems, key=lambda m: int(m.split()[1])))
    return records


def _unreadable(path: Path, exc: BaseException) -> UserInputError:
    return UserInputError(f"measured results {str(path)!r} cannot be read: {brief(exc)}")


def _read_slices(
    path: Path, props: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]] | None:
    """The records of a results file, their rows' hashes (:func:`_row_hashes`) and the
    problems of its bad rows, read by slices of :data:`READ_ROWS` rows (only those rows'
    text in memory at a time): each slice in bulk (:func:`_bulk_records`), or row by row
    where some row of it may be bad, naming every bad row; ``None`` when the file cannot be
    scanned. Linear in rows: a file with one bad row reads one slice row by row."""
    scan = pl.scan_csv(path, infer_schema=False).select(*REQUIRED_COLUMNS, *props)
    parts, hashes, problems, rows = [], [], [], 0
    try:
        for raw in scan.collect_batches(chunk_size=READ_ROWS):
            part = _bulk_records(raw, props, rows)
            if part is None:
                part, bad = _row_records(raw, rows)
                problems += bad
            parts.append(part.cast(RECORD_SCHEMA))
            hashes.append(_row_hashes(parts[-1]))
            rows += raw.height
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError):
        return None
    if not parts:  # a header only
        empty = pl.DataFrame(schema=RECORD_SCHEMA)
        return empty, _row_hashes(empty), []
    return pl.concat(parts), pl.concat(hashes), problems


def _row_records(raw: pl.DataFrame, first_row: int) -> tuple[pl.DataFrame, list[str]]:
    """The records of :func:`_records` for the rows of ``raw`` (row ``first_row`` of the
    file first) that are good, and a problem naming each bad row."""
    records: list[tuple[object, ...]] = []
    problems: list[str] = []
    for i, row in enumerate(raw.iter_rows(named=True), start=first_row):
        try:
            records += _records(i, row)
        except UserInputError as exc:
            problems.append(str(exc))
    frame = pl.DataFrame(records, schema=dict.fromkeys(RECORD_COLUMNS), orient="row")
    # + 0.0: -0.0 becomes 0.0, as in the bulk reading (rows compare by hash)
    return frame.cast(RECORD_SCHEMA).with_columns(pl.col("value") + 0.0), problems


def _row_hashes(records: pl.DataFrame) -> pl.DataFrame:
    """Per ``source_row`` of ``records``: ``_hash``, a 64-bit hash of its records (the sum of
    their hashes)."""
    return records.group_by("source_row", maintain_order=True).agg(
        pl.struct(pl.exclude("source_row")).hash().sum().alias("_hash")
    )


def _without_repeats(
    records: pl.DataFrame, hashes: pl.DataFrame
) -> tuple[pl.DataFrame, list[str]]:
    """``records`` without the rows that repeat an earlier row (same composition, condition
    and values), and a problem naming each. Rows are told apart by ``hashes``
    (:func:`_row_hashes`); rows sharing a hash are compared record by record."""
    shared = hashes.filter(pl.col("_hash").is_duplicated()).select("source_row")
    if not shared.height:
        return records, []
    keyed = (
        records.join(shared, on="source_row", maintain_order="left")
        .group_by("source_row", maintain_order=True)
        .agg(pl.struct(pl.exclude("source_row")).alias("_records"))
    )
    first: dict[tuple[object, ...], int] = {}
    problems, repeats = [], []
    for row, rows in keyed.iter_rows():
        key = tuple(tuple(r.values()) for r in rows)
        if key in first:
            message = (
                f"repeats row {first[key]} (same composition, condition and values): list "
                "each specimen once"
            )
            problems.append(str(_row_error(row, message)))
            repeats.append(row)
        else:
            first[key] = row
    return records.filter(~pl.col("source_row").is_in(repeats)), problems


def _bulk_records(raw: pl.DataFrame, props: list[str], first_row: int) -> pl.DataFrame | None:
    """The records of :func:`_records` for the rows of ``raw`` (row ``first_row`` of the
    file first) at once (bulk parsing, one :class:`Condition` per distinct condition,
    vectorized values), or ``None`` when a row may be bad: a text the bulk parser refuses,
    a condition :func:`_records` refuses, a cell that is not a plain number in its range, a
    yield strength above the UTS, a row without a value."""
    if raw["composition"].null_count():
        return None
    try:
        canonical = CompositionTable.from_compositions(raw["composition"]).canonical_texts()
    except CompositionError:
        return None
    keys = ["test_type", "temperature_c", "processing"]
    conditions = raw.select(keys).unique(maintain_order=True)
    described = []
    for test_type, temperature, processing in conditions.iter_rows():
        try:
            condition = Condition.of(test_type, temperature, processing)
        except UserInputError:
            return None
        lo_t, hi_t = TEMPERATURE_RANGE_C
        if not lo_t <= condition.temperature_c <= hi_t:
            return None
        described.append(
            (condition.test_type.value, condition.temperature_c, condition.processing.value)
        )
    cells = raw.select(
        pl.Series("composition", canonical),
        (pl.int_range(pl.len(), dtype=pl.Int64) + first_row).alias("source_row"),
        *(pl.col(c).str.strip_chars().alias(c) for c in props),
        *(pl.col(k).alias(f"_{k}") for k in keys),
    ).join(
        conditions.rename({k: f"_{k}" for k in keys}).with_columns(
            pl.Series("test_type", [d[0] for d in described], dtype=pl.Utf8),
            pl.Series("temperature_c", [d[1] for d in described], dtype=pl.Float64),
            pl.Series("processing", [d[2] for d in described], dtype=pl.Utf8),
        ),
        on=[f"_{k}" for k in keys],
        how="left",
        nulls_equal=True,
        maintain_order="left",
    )
    parts = []
    for order, (column, prop) in enumerate(PROPERTY_COLUMNS.items()):
        if column not in props:
            continue
        part = cells.filter(pl.col(column).is_not_null() & (pl.col(column) != "")).with_columns(
            (pl.col(column).cast(pl.Float64, strict=False) + 0.0).alias("value"),
            pl.lit(order).alias("_order"),
        )
        lo, hi = LIMITS[prop]
        if not part["value"].is_between(lo, hi).fill_null(False).all():  # not a number, out
            return None
        tasks = {t.value: task_for(prop, t).name for t in TestType}
        hardness = task_for(prop, TestType.TENSION) is HARDNESS
        parts.append(
            part.with_columns(
                pl.col("test_type").replace_strict(tasks).alias("task"),
                pl.lit(ROOM_TEMPERATURE_C).alias("temperature_c")
                if hardness
                else pl.col("temperature_c"),
            )
        )
    records = pl.concat(parts).sort("source_row", "_order", maintain_order=True)
    if records["source_row"].n_unique() != raw.height:  # a row without a value
        return None
    if "uts_mpa" in props and "ys_mpa" in props:
        strengths = cells.select(
            pl.col("uts_mpa").cast(pl.Float64, strict=False),
            pl.col("ys_mpa").cast(pl.Float64, strict=False),
        )
        if (strengths["ys_mpa"] > strengths["uts_mpa"]).any():
            return None
    return records.select(RECORD_COLUMNS)


def _records(i: int, row: dict[str, str | None]) -> list[tuple[object, ...]]:
    text = row["composition"]
    if not text or not text.strip():
        raise _row_error(i, "empty composition")
    try:
        canonical = str(parse(text))
        condition = Condition.of(row["test_type"], row["temperature_c"], row["processing"])
    except UserInputError as exc:  # the message quotes the text only as a short excerpt
        raise _row_error(i, str(exc).replace(repr(text), excerpt(text))) from None
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
    value = {task_name: v for _, task_name, _, _, _, v, _ in out}
    uts, ys = (task_for(p, condition.test_type).name for p in ("uts", "ys"))
    if uts in value and ys in value and value[ys] > value[uts]:  # type: ignore[operator]
        raise _row_error(
            i,
            f"ys_mpa {value[ys]:g} exceeds uts_mpa {value[uts]:g}: the yield strength is at most "
            "the ultimate (fracture) strength; are the columns swapped?",
        )
    return out


def _value(i: int, column: str, cell: str, prop: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise _row_error(i, f"{column} {cell[:24]!r} is not a number") from None
    lo, hi = LIMITS[prop]
    if not within(value, lo, hi):
        raise _row_error(i, f"{column} {cell[:24]!r} outside the accepted {lo:g} to {hi:g}")
    return value


def _feature_problems(frame: pl.DataFrame) -> list[str]:
    """The rows whose composition has no element data (a feature is undefined)."""
    texts = frame["composition"].unique(maintain_order=True)
    bad = []
    for start in range(0, len(texts), READ_ROWS):  # slices: bounded memory
        try:
            featurize(texts.slice(start, READ_ROWS))
        except UserInputError:
            bad.append(texts.slice(start, READ_ROWS))
    problems = []
    for text in pl.concat(bad) if bad else []:
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


#: Types of a stored record's columns.
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "composition": pl.Utf8(),
    "task": pl.Utf8(),
    "test_type": pl.Utf8(),
    "temperature_c": pl.Float64(),
    "processing": pl.Utf8(),
    "value": pl.Float64(),
    "source_row": pl.Int64(),
}
_IMPORT_FILE = re.compile(r"imports/[0-9a-f]{64}\.parquet")


def _entry_problem(entry: object) -> str | None:
    """What is wrong with one import entry of a store manifest (``None``: nothing)."""
    if not isinstance(entry, dict):
        return "not a mapping"
    for key, kind in (("file", str), ("sha256", str), ("rows", int), ("source", str)):
        if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
            return f"{key!r} is missing or not a {kind.__name__}"
    if entry["file"] != f"imports/{entry['sha256']}.parquet" or not _IMPORT_FILE.fullmatch(
        entry["file"]
    ):
        return f"file {entry['file'][:80]!r} is not imports/<its sha256>.parquet"
    return None


def check_records(frame: pl.DataFrame, where: str) -> None:
    """Every stored record is one :func:`read_results` could have made: a canonical
    composition, a regression task, its test type, a known processing route, a test
    temperature and a value within the accepted ranges."""
    for i, row in enumerate(frame.iter_rows(named=True)):
        task = TASKS_BY_NAME.get(row["task"])
        problem = None
        try:
            if task is None or not task.is_regression:
                problem = f"task {str(row['task'])[:40]!r} is not a measured property"
            elif str(parse(row["composition"])) != row["composition"]:
                problem = "composition is not in canonical form"
            elif task.test_type is not None and row["test_type"] != task.test_type.value:
                problem = f"test type {str(row['test_type'])[:20]!r} is not that of {task.name}"
            else:
                Condition.of(row["test_type"], row["temperature_c"], row["processing"])
        except UserInputError as exc:
            problem = str(exc)
        if problem is None and not within(row["temperature_c"], *TEMPERATURE_RANGE_C):
            problem = f"test temperature {row['temperature_c']!r} °C outside the accepted range"
        if problem is None and not within(row["value"], *property_limits(task.name)):
            lo, hi = property_limits(task.name)
            problem = f"value {row['value']!r} outside the accepted {lo:g} to {hi:g}"
        if problem:
            raise UserInputError(f"{where}: record {i}: {problem}")


def records_sha256(records: pl.DataFrame) -> str:
    """Identity of an import: SHA-256 of its records, sorted, without the source rows (the
    CSV text of the sorted records, hashed slice by slice: only the sort order, not a sorted
    copy, is held)."""
    columns = list(RECORD_COLUMNS[:-1])
    order = records.select(pl.arg_sort_by(columns)).to_series()
    digest = hashlib.sha256()
    for start in range(0, max(records.height, 1), READ_ROWS):
        part = records.select(pl.col(columns).gather(order.slice(start, READ_ROWS)))
        digest.update(part.write_csv(include_header=start == 0).encode("utf-8"))
    return digest.hexdigest()


def distinct(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """The distinct rows of ``frame``'s ``columns``, in order of first appearance, found by
    slices of :data:`READ_ROWS` rows: ``unique`` of a whole frame of a few columns held 0.27
    GB for 2 × 10^6 records (docs/benchmarks.md, issue 21)."""
    parts = [p.select(columns).unique(maintain_order=True) for p in frame.iter_slices(READ_ROWS)]
    return pl.concat(parts).unique(maintain_order=True) if parts else frame.select(columns)


class MeasurementStore:
    """A local directory of imported measurements (module docstring).

    ``create``: the store may not exist yet (``update`` makes it); with ``create=False`` a
    missing store is an error (``plan --store`` reads one). Everything read back is checked: the
    manifest's structure, each import's file name, its SHA-256 recomputed from its records,
    and every record's values as an import checks them (:func:`check_records`).
    """

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserInputError(
                f"measurement store {str(self.path)!r} is not a directory: give the store's "
                "directory (hea-screen update --store DIR makes one)"
            )
        if not create and not self.path.exists():
            raise UserInputError(
                f"measurement store {str(self.path)!r} does not exist: hea-screen update "
                "--measured FILE --store DIR makes one"
            )

    def check_writable(self) -> None:
        """Refuse a store that cannot take an import, before anything else is written."""
        existing = next(p for p in (self.path, *self.path.parents, Path(".")) if p.exists())
        if not existing.is_dir():
            raise UserInputError(
                f"measurement store {str(self.path)!r}: {str(existing)!r} is a file"
            )
        check_writable_dir(existing, f"measurement store {str(self.path)!r}")

    def manifest(self) -> dict[str, object]:
        file = self.path / MANIFEST
        if not file.exists():
            return {"format": STORE_FORMAT, "imports": []}
        data = read_json(file, "measurement store manifest")
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            raise UserInputError(f"{str(file)!r} is not a measurement store of format 1")
        imports = data.get("imports")
        if not isinstance(imports, list):
            raise UserInputError(f"{str(file)!r}: 'imports' is not a list")
        for n, entry in enumerate(imports):
            problem = _entry_problem(entry)
            if problem:
                raise UserInputError(f"{str(file)!r}: import {n}: {problem}")
        return data

    def imports(self) -> list[dict[str, object]]:
        return list(self.manifest()["imports"])  # type: ignore[arg-type]

    def check_new(self, records: pl.DataFrame, digest: str | None = None) -> str:
        """The SHA-256 of ``records`` (``digest`` when the caller has it); refuse them if an
        earlier import holds the same."""
        digest = digest or records_sha256(records)
        for entry in self.imports():
            if entry["sha256"] == digest:
                raise UserInputError(
                    f"these measurements were imported before ({entry['source']}, "
                    f"{entry['imported']}, sha256 {digest[:12]}): nothing stored"
                )
        return digest

    def add(
        self, records: pl.DataFrame, source: str, digest: str | None = None
    ) -> dict[str, object]:
        """Store ``records`` as a new import; refuse one stored before (same SHA-256;
        ``digest``: :meth:`check_new`'s answer for them, not computed again)."""
        digest = self.check_new(records, digest)
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
        parts = [self._read(e) for e in self.imports()]
        if not parts:
            return pl.DataFrame(schema={c: pl.Utf8 for c in RECORD_COLUMNS}).cast(
                {"temperature_c": pl.Float64, "value": pl.Float64, "source_row": pl.Int64}
            )
        return pl.concat(parts, how="vertical_relaxed")

    def _read(self, entry: dict[str, object]) -> pl.DataFrame:
        """One import's records, checked against its manifest entry and re-validated."""
        where = f"measurement store {str(self.path)!r}, import {entry['file']!r}"
        try:
            frame = pl.read_parquet(self.path / str(entry["file"]))
        except (pl.exceptions.PolarsError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not Parquet"
            raise UserInputError(
                f"{where} cannot be read ({reason}): truncated or removed?"
            ) from None
        if dict(frame.schema) != RECORD_SCHEMA:
            raise UserInputError(f"{where}: columns or types are not those of stored records")
        if records_sha256(frame) != entry["sha256"]:
            raise UserInputError(
                f"{where}: its records do not match their recorded SHA-256 (edited after the "
                "import): restore the file or remove the import from the store's manifest"
            )
        check_records(frame, where)
        return frame

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
