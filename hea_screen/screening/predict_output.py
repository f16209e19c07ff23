"""The output of ``hea-screen predict FILE`` from its Parquet parts, part by part.

:func:`hea_screen.screening.predict_file.predict_file` writes the predicted rows of a file
to Parquet parts in row order; this module ranks them and writes the output, holding one
part (or one block of ranks) of wide rows at a time:

- the ranks: score descending (missing scores last), then composition, then row. Only the
  ``(row, score)`` of every row are held (16 bytes a row); the compositions are read only
  for the rows whose score another row shares (repeated alloys), and their order within
  such a group becomes a tie-break number;
- the input order: each part with its ranks (by position), ``pareto`` and the user's
  columns (read from the source file alongside, batch by batch), written as it comes;
- the rank order: each of those parts is cut by blocks of :data:`RANK_BLOCK` ranks into
  small Parquet files, then each block's pieces are read, sorted by rank and written;
- CSV is appended chunk by chunk to one temporary file, Parquet goes through temporary
  Parquet chunks streamed into one file (``sink_parquet``), both renamed onto the output
  at the end (:func:`hea_screen.output.atomic_write`); JSON is built in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from hea_screen.output import atomic_write, csv_safe
from hea_screen.screening.engine import result_columns
from hea_screen.screening.ranking import Ranking

#: Ranks written together in ``--order ranked`` (rows of wide output held at a time).
RANK_BLOCK = 65_536

#: The rank order's sort keys and directions.
_KEYS = ["score", "composition", "row"]
_DESCENDING = [True, False, False]


def rank_rows(parts: list[Path]) -> np.ndarray:
    """The rank of every row of ``parts`` (their rows concatenated in order, rows
    ascending): the position of ``(score descending, nulls last; composition; row)``, NaN
    first as polars sorts it.

    One stable NumPy sort of the scores (about 40 bytes a row held; polars' sort of
    ``(score, row)`` held about 110); the rows whose score equals a neighbour's are the only
    ones whose compositions are read: sorted by the full key, they are put back in the
    places their run of equal scores holds."""
    score = pl.scan_parquet(parts).select("row", "score").collect()
    rows, values = score["row"].to_numpy(), score["score"].to_numpy()
    missing = score["score"].is_null().to_numpy()
    nan = np.isnan(values) & ~missing
    kind = np.where(nan, 0, np.where(missing, 2, 1)).astype(np.int8)
    key = np.where(nan | missing, 0.0, -values)
    at = np.lexsort((key, kind))  # stable: equal scores in row order
    kind, key = kind[at], key[at]
    same = (kind[1:] == kind[:-1]) & (key[1:] == key[:-1])
    tied = np.zeros(len(at), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    places = np.flatnonzero(tied)
    shared = pl.Series(rows[at[places]]).implode()
    ties = pl.concat(
        pl.read_parquet(part, columns=_KEYS).filter(pl.col("row").is_in(shared)) for part in parts
    ).sort(_KEYS, descending=_DESCENDING, nulls_last=True)
    at[places] = np.searchsorted(rows, ties["row"].to_numpy())
    ranks = np.empty(len(at), dtype=np.int64)
    ranks[at] = np.arange(1, len(at) + 1)
    return ranks


class UserColumns:
    """The source table's other columns, read batch by batch and matched to parts by row
    (rows ascending across parts); a name the output already uses gets ``input_``."""

    def __init__(self, source: pl.LazyFrame, others: list[str], rows: int) -> None:
        self.others = others
        self._batches = source.select(others).collect_batches(chunk_size=rows)
        self._held = source.select(others).head(0).collect()
        self._first = 1  # row number of the first held row

    def attach(self, table: pl.DataFrame) -> pl.DataFrame:
        """``table`` (rows ascending, above those of the previous call) with the columns
        right after ``row``."""
        last = int(table["row"].max())  # type: ignore[arg-type]
        while self._first + self._held.height <= last:
            self._held = pl.concat([self._held, next(self._batches)])
        picked = self._held[table["row"].to_numpy() - self._first]
        self._held = self._held.slice(last + 1 - self._first)
        self._first = last + 1
        taken = set(table.columns)
        ids = [f"input_{c}" if c in taken else c for c in self.others]
        return table.hstack(picked.rename(dict(zip(self.others, ids)))).select(
            "row", *ids, pl.exclude("row", *ids)
        )


def output_chunks(
    parts: list[Path],
    front: pl.DataFrame,
    ranking: Ranking,
    users: UserColumns | None,
    order_by: str,
    work: Path,
) -> Iterator[pl.DataFrame]:
    """The output rows in input (``order_by="input"``) or rank order, a part or a block of
    ranks at a time."""
    chunks = _input_order(parts, rank_rows(parts), front["row"].implode(), ranking, users)
    return _rank_order(chunks, work) if order_by == "ranked" else chunks


def _input_order(
    parts: list[Path],
    ranks: np.ndarray,
    front: pl.Series,
    ranking: Ranking,
    users: UserColumns | None,
) -> Iterator[pl.DataFrame]:
    start = 0
    for path in parts:
        part = pl.read_parquet(path)
        part = part.with_columns(
            pl.Series("rank", ranks[start : start + part.height]),
            pl.col("row").is_in(front).alias("pareto"),
        )
        start += part.height
        first = [c for c in result_columns(ranking) if c in part.columns]
        part = part.select("row", *first, pl.exclude("row", *first))
        yield users.attach(part) if users is not None else part


def _rank_order(chunks: Iterator[pl.DataFrame], work: Path) -> Iterator[pl.DataFrame]:
    blocks: dict[int, list[Path]] = {}
    block = ((pl.col("rank") - 1) // RANK_BLOCK).alias("_block")
    for i, chunk in enumerate(chunks):
        for piece in chunk.with_columns(block).partition_by("_block", maintain_order=True):
            j = int(piece["_block"][0])
            blocks.setdefault(j, []).append(work / f"rank-{j:06d}-{i:06d}.parquet")
            piece.drop("_block").write_parquet(blocks[j][-1])
    for j in sorted(blocks):
        yield pl.read_parquet(blocks[j]).sort("rank")


def write_chunks(
    chunks: Iterator[pl.DataFrame], out: Path | None, head: int, work: Path
) -> pl.DataFrame:
    """Write ``chunks`` to ``out`` (CSV, Parquet; JSON in memory) atomically; the first
    ``head`` rows (all chunks are read only when ``out`` is given)."""
    kept: list[pl.DataFrame] = []

    def keeping() -> Iterator[pl.DataFrame]:
        held = 0
        for chunk in chunks:
            if not kept or held < head:
                kept.append(chunk.head(head - held))
                held += kept[-1].height
            yield chunk

    frames = keeping()
    suffix = out.suffix.lower() if out is not None else None
    if out is None:
        for _ in frames:
            if sum(k.height for k in kept) >= head:
                break
    elif suffix == ".csv":
        atomic_write(out, lambda tmp: _write_csv(frames, tmp))
    elif suffix == ".parquet":
        written = []
        for k, frame in enumerate(frames):
            written.append(work / f"out-{k:06d}.parquet")
            frame.write_parquet(written[-1])
        atomic_write(out, pl.scan_parquet(written).sink_parquet)
    else:
        atomic_write(out, pl.concat(frames).write_json)
    return pl.concat(kept)


def _write_csv(frames: Iterator[pl.DataFrame], tmp: Path) -> None:
    with open(tmp, "wb") as f:
        for k, frame in enumerate(frames):
            csv_safe(frame).write_csv(f, include_header=k == 0)
