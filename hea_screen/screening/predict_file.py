"""Score a user's own list of compositions: ``hea-screen predict FILE``.

The file is a CSV or Parquet table (the compositions in the column ``--column``; default
``composition``, or the only column) or any other file read as text, one composition per
line. Rows are numbered from 1: the line number in a text file, the data row (header not
counted) in a table. Texts are parsed in bulk (:mod:`hea_screen.compositions.bulk_parse`); a row is
bad
when it does not parse or holds an element (or element pair) without property data. The
output has the columns of a screen (:func:`hea_screen.screening.engine.result_columns`) after
``row``,
at the stated condition, every row ranked (``rank``, ``pareto`` on the front of the file's
rows), in input or rank order.

The file is read, parsed, predicted and written in chunks of :data:`CHUNK_ROWS` rows: a
first pass parses every chunk and collects the bad rows (a bad row stops the run before any
model runs); a second pass predicts each chunk in batches of the model's batch size (one
featurization and every fold model once per batch, the nearest-training-data search
vectorized) and writes its rows to a temporary Parquet part; the front comes from the
chunks' fronts merged, and the ranks and the output from the parts, a part (or a block of
ranks) at a time (:mod:`hea_screen.screening.predict_output`; CSV and Parquet, a JSON file
is built in memory). Held for the whole file: about 40 bytes a row while ranking, 8 (the
ranks) while writing (2 × 10^6 rows: 647 MiB peak against 445 MiB at 5 × 10^4, the rest
allocator growth over the chunks; docs/benchmarks.md).
"""

from __future__ import annotations

import codecs
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from hea_screen.compositions.bulk_parse import parse_texts
from hea_screen.compositions.elements import mixing_matrix, supported_elements
from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import UserInputError, brief
from hea_screen.output import check_table_path
from hea_screen.screening.engine import decorate
from hea_screen.screening.model_ref import ModelRef, predicted_tasks, predictor_for
from hea_screen.screening.partition import batches_per_call
from hea_screen.screening.predict_output import UserColumns, output_chunks, write_chunks
from hea_screen.screening.ranking import (
    FRONT_X,
    FRONT_Y,
    Ranking,
    Reference,
    pareto_front,
    score,
)

ORDERS: tuple[str, ...] = ("input", "ranked")

#: Columns of a bad-rows file.
BAD_COLUMNS: tuple[str, ...] = ("row", "text", "reason")

#: Rows read, parsed, predicted and written at a time (a multiple of every usual batch size).
CHUNK_ROWS = 65_536

#: Bytes of a text file decoded at a time.
_TEXT_BLOCK = 1 << 22

#: Line terminators of ``str.splitlines`` (a text file's lines are its ``splitlines()``).
_TERMINATORS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@dataclass(frozen=True)
class Inputs:
    """The parsed rows of a file: their table and row numbers, and the bad rows."""

    table: CompositionTable
    rows: np.ndarray
    bad: pl.DataFrame


def read_chunks(
    path: str | Path, column: str | None = None, rows: int | None = None
) -> Iterator[pl.Series]:
    """The composition texts of ``path`` (see module docstring) in file order, in chunks of
    at most ``rows`` (default :data:`CHUNK_ROWS`); the file's format and column are checked
    before the first chunk."""
    path = Path(path)
    rows = rows or CHUNK_ROWS
    if not path.is_file():
        raise UserInputError(f"input {str(path)!r} is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        if column is not None:
            raise UserInputError(
                f"--column {column!r}: {str(path)!r} is not a CSV or Parquet table"
            )
        return _text_chunks(path, rows)
    try:
        frame = pl.scan_csv(path, infer_schema=False) if suffix == ".csv" else pl.scan_parquet(path)
        schema = frame.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UserInputError(f"cannot read {str(path)!r} as {suffix[1:]}: {brief(exc)}") from None
    chosen = _column(schema, column, path)
    return _table_chunks(frame.select(pl.col(chosen).cast(pl.Utf8)), path, rows)


def _table_chunks(frame: pl.LazyFrame, path: Path, rows: int) -> Iterator[pl.Series]:
    try:
        for batch in frame.collect_batches(chunk_size=rows):
            for start in range(0, batch.height, rows):
                yield batch.to_series().slice(start, rows)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UserInputError(
            f"cannot read {str(path)!r} as {path.suffix.lower()[1:]}: {brief(exc)}"
        ) from None


def _text_chunks(path: Path, rows: int) -> Iterator[pl.Series]:
    """The lines of a UTF-8 text file (``str.splitlines``), decoded block by block."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending, lines, offset = "", [], 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_TEXT_BLOCK)
            try:
                text = pending + decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                raise UserInputError(
                    f"input {str(path)!r} is not UTF-8 text: {brief(exc)} (in the block at "
                    f"byte {offset:,})"
                ) from None
            offset += len(block)
            pieces = text.splitlines(keepends=True)
            # the last piece may be a line cut by the block's end ("\r" maybe half of "\r\n")
            pending = pieces.pop() if block and pieces else ""
            if pending and pending.rstrip(_TERMINATORS) != pending and not pending.endswith("\r"):
                pieces.append(pending)
                pending = ""
            lines.extend(piece.rstrip(_TERMINATORS) for piece in pieces)
            while len(lines) >= rows or (not block and lines):
                yield pl.Series("composition", lines[:rows], dtype=pl.Utf8)
                lines = lines[rows:]
            if not block:
                return


def _column(schema: pl.Schema, column: str | None, path: Path) -> str:
    names = schema.names()
    if column is None:
        column = "composition" if "composition" in names or len(names) != 1 else None
        column = column or names[0]
    if column not in names:
        raise UserInputError(
            f"{str(path)!r} has no column {column!r}: its columns are "
            f"{', '.join(c[:24] for c in names[:20])} (choose one with --column)"
        )
    if schema[column].is_nested():
        raise UserInputError(
            f"{str(path)!r}: column {column!r} is of type {schema[column]}, not text"
        )
    return column


def parse_inputs(texts: pl.Series, first_row: int = 1) -> Inputs:
    """Parse ``texts``; rows that do not parse or lack element data are bad (rows numbered
    from ``first_row``)."""
    parsed = parse_texts(texts)
    table = CompositionTable(parsed.elements, parsed.micro)
    reasons = _element_reasons(table)
    unsupported = reasons != ""
    bad = pl.concat(
        [
            parsed.bad.with_columns(pl.col("row") + first_row),
            pl.DataFrame(
                {
                    "row": parsed.rows[unsupported] + first_row,
                    "text": texts.gather(parsed.rows[unsupported]),
                    "reason": reasons[unsupported],
                },
                schema={"row": pl.Int64, "text": pl.Utf8, "reason": pl.Utf8},
            ),
        ]
    ).sort("row")
    good = np.flatnonzero(~unsupported)
    table = table.take(good)
    used = table.micro.any(axis=0)
    table = CompositionTable(
        tuple(el for el, u in zip(table.elements, used) if u), table.micro[:, used]
    )
    return Inputs(table, parsed.rows[good] + first_row, bad)


def _element_reasons(table: CompositionTable) -> np.ndarray:
    """Per row, why its features cannot be computed ("" where they can)."""
    supported = set(supported_elements())
    reasons = np.full(len(table), "", dtype=object)
    present = table.micro > 0
    known = [el for el in table.elements if el in supported]
    for j, el in enumerate(table.elements):
        if el not in supported:
            reasons[present[:, j] & (reasons == "")] = (
                f"no property data for {el}: supported elements are {', '.join(sorted(supported))}"
            )
    dh = mixing_matrix(known)
    index = {el: table.elements.index(el) for el in known}
    for a in range(len(known)):
        for b in range(a + 1, len(known)):
            if np.isnan(dh[a, b]):
                both = present[:, index[known[a]]] & present[:, index[known[b]]]
                reasons[both & (reasons == "")] = (
                    f"no mixing enthalpy for {known[a]}-{known[b]} in Takeuchi & Inoue (2005)"
                )
    return reasons.astype(str)


@dataclass(frozen=True)
class Checked:
    """The first pass over a file: its bad rows, how many rows it has and how many are good,
    the elements of its good rows, and the parsed rows themselves when the file is a single
    chunk (not parsed again)."""

    path: Path
    column: str | None
    bad: pl.DataFrame
    rows: int
    good: int
    elements: tuple[str, ...]
    parsed: Inputs | None


def check_file(path: str | Path, column: str | None = None) -> Checked:
    """Parse every row of ``path`` in chunks of :data:`CHUNK_ROWS` and collect the bad
    ones."""
    bad, read, good, first, elements = [], 0, 0, None, set()
    for texts in read_chunks(path, column):
        inputs = parse_inputs(texts, read + 1)
        first = inputs if read == 0 else None
        bad.append(inputs.bad)
        read += len(texts)
        good += len(inputs.rows)
        elements.update(inputs.table.elements)
    frame = pl.concat(bad) if bad else pl.DataFrame(schema=dict.fromkeys(BAD_COLUMNS, pl.Utf8))
    frame = frame.cast({"row": pl.Int64})
    return Checked(Path(path), column, frame, read, good, tuple(sorted(elements)), first)


def _good_chunks(checked: Checked) -> Iterator[Inputs]:
    if checked.parsed is not None:
        yield checked.parsed
        return
    read = 0
    for texts in read_chunks(checked.path, checked.column):
        yield parse_inputs(texts, read + 1)
        read += len(texts)


def _calls(
    batches: Iterator[tuple[CompositionTable, np.ndarray]], group: int, size: int
) -> Iterator[list[tuple[CompositionTable, np.ndarray]]]:
    """Consecutive batches, ``group`` whole ones at a time; a shorter (last) batch alone."""
    pending: list[tuple[CompositionTable, np.ndarray]] = []
    for batch in batches:
        if len(batch[1]) < size:
            if pending:
                yield pending
            pending = []
            yield [batch]
            continue
        pending.append(batch)
        if len(pending) == group:
            yield pending
            pending = []
    if pending:
        yield pending


def _batches(checked: Checked, size: int) -> Iterator[tuple[CompositionTable, np.ndarray]]:
    """The good rows of a file and their row numbers in batches of ``size`` rows over the
    file's palette: the batches (and so every feature and model value, to the last bit) of
    the whole file in one table, whatever the chunks it is read in."""
    palette = checked.elements
    micro = np.zeros((0, len(palette)), dtype=np.int32)
    rows = np.zeros(0, dtype=np.int64)
    for inputs in _good_chunks(checked):
        chunk = np.zeros((len(inputs.table), len(palette)), dtype=np.int32)
        chunk[:, [palette.index(el) for el in inputs.table.elements]] = inputs.table.micro
        micro, rows = np.concatenate([micro, chunk]), np.concatenate([rows, inputs.rows])
        full = len(micro) - len(micro) % size
        for start in range(0, full, size):
            yield CompositionTable(palette, micro[start : start + size]), rows[start : start + size]
        micro, rows = micro[full:], rows[full:]
    if len(micro):
        yield CompositionTable(palette, micro), rows


@dataclass(frozen=True)
class Predicted:
    """What :func:`predict_file` gives back: the first rows of the output, and its size."""

    head: pl.DataFrame
    rows: int


def predict_file(
    checked: Checked,
    model: ModelRef,
    ranking: Ranking,
    reference: Reference,
    *,
    out: str | Path | None = None,
    order_by: str = "input",
    head: int = 20,
    ingot_mass_g: float = 50.0,
    model_sha256: str | None = None,
    progress: bool = False,
) -> Predicted:
    """Every fold model of the ranked tasks and phase on every good row of a checked file
    (:func:`check_file`), ``row`` first and then the columns of a screen, written to
    ``out`` (atomically) in input or rank order; the first ``head`` rows come back."""
    if order_by not in ORDERS:
        raise UserInputError(f"order {order_by!r}: choose one of {', '.join(ORDERS)}")
    if out is not None:
        check_table_path(out)
    where = Path(out).parent if out is not None and str(Path(out).parent) else None
    work = Path(tempfile.mkdtemp(prefix=".hea-predict-", dir=where))
    try:
        parts, front = _predict_parts(
            checked, model, ranking, reference, work, ingot_mass_g, model_sha256, progress
        )
        chunks = output_chunks(parts, front, ranking, _user_columns(checked), order_by, work)
        table = write_chunks(chunks, None if out is None else Path(out), head, work)
        return Predicted(table, checked.good)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _predict_parts(
    checked: Checked,
    model: ModelRef,
    ranking: Ranking,
    reference: Reference,
    work: Path,
    ingot_mass_g: float,
    model_sha256: str | None,
    progress: bool,
) -> tuple[list[Path], pl.DataFrame]:
    """Predict and score the good rows batch by batch; decorate them and write them to a
    Parquet part every :data:`CHUNK_ROWS` rows; the merged front of the parts."""
    predictor = predictor_for(model)
    tasks = predicted_tasks(ranking, predictor.tasks)
    parts: list[Path] = []
    front: pl.DataFrame | None = None
    bar = tqdm(
        total=checked.good,
        unit="row",
        unit_scale=True,
        disable=not progress,
        leave=False,
        desc="predict",
    )
    frames: list[pl.DataFrame] = []
    held = done = 0
    group = batches_per_call(model.batch_size, predictor, tasks)
    with bar:
        for batches in _calls(_batches(checked, model.batch_size), group, model.batch_size):
            # featurized batch by batch (featurize's arithmetic depends on its table's widest
            # row), predicted as one call (batches_per_call: the same values)
            table = CompositionTable(
                checked.elements, np.concatenate([t.micro for t, _ in batches])
            )
            features = pl.concat(featurize(t) for t, _ in batches)
            rows = np.concatenate([r for _, r in batches])
            predicted = predictor.predict(table, ranking.condition, tasks, features)
            frames.append(
                score(predicted, ranking, reference).with_columns(
                    pl.Series("row", rows, dtype=pl.Int64)
                )
            )
            held, done = held + len(rows), done + len(rows)
            bar.update(len(rows))
            if held >= CHUNK_ROWS or done == checked.good:
                scored = pl.concat(frames)
                frames, held = [], 0
                part = pareto_front(scored.select("row", "score", "composition", FRONT_X, FRONT_Y))
                front = part if front is None else pareto_front(pl.concat([front, part]))
                table = decorate(scored.drop(FRONT_X, FRONT_Y), ranking, ingot_mass_g, model_sha256)
                parts.append(work / f"part-{len(parts):06d}.parquet")
                table.write_parquet(parts[-1])
    assert front is not None, "predict_file needs at least one good row"
    return parts, front


def _user_columns(checked: Checked) -> UserColumns | None:
    """The input table's other columns (sample ids, notes, ...), put right after ``row`` and
    matched by row; none for a text file."""
    path = checked.path
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        return None
    source = pl.scan_csv(path, infer_schema=False) if suffix == ".csv" else pl.scan_parquet(path)
    schema = source.collect_schema()
    text = _column(schema, checked.column, path)
    others = [c for c in schema.names() if c != text]
    return UserColumns(source, others, CHUNK_ROWS) if others else None
