"""The fine-tuning sets of a run: read, canonicalized, written to
``RUN/finetune/<target>/dataset.csv`` (composition, target) with ``dataset.json`` (source
path, its SHA-256, rows) and featurized.

Sources: the paper's sets by target name (:func:`hea_screen.datasets.sources.load_paper_dataset`,
Kamnis & Delibasis; derived from the MPEA database, Borg et al., Sci. Data 7 (2020) 430) or
any CSV with a composition column and a numeric target column. Every later step (the
transformer folds, the baselines, the export) reads ``dataset.csv``, so all of them see
exactly the same rows in the same order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from hea_screen.compositions.composition import parse
from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.datasets.sources import (
    data_dir,
    load_paper_dataset,
    paper_dataset_path,
    sha256_file,
)
from hea_screen.errors import UserInputError
from pretrain.atomic import write_csv_atomic, write_text_atomic
from pretrain.config import FinetuneConfig, TargetSpec
from pretrain.run_dir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneDataset:
    """One target's rows: canonical compositions, values, table and features."""

    target: str
    compositions: list[str]
    y: np.ndarray
    table: CompositionTable = field(repr=False)
    features: pl.DataFrame = field(repr=False)

    def __len__(self) -> int:
        return len(self.compositions)


def resolve_csv(csv: str, data_directory: Path | None) -> Path:
    """A CSV path as given (absolute or relative to the working directory), else in the
    data directory."""
    path = Path(csv)
    if path.is_file():
        return path.resolve()
    in_data = (data_directory or data_dir()) / csv
    if not path.is_absolute() and in_data.is_file():
        return in_data.resolve()
    raise UserInputError(f"fine-tuning CSV {csv!r} not found (also looked in {in_data.parent})")


def read_source(spec: TargetSpec, data_directory: Path | None) -> tuple[pl.DataFrame, Path]:
    """``composition`` (canonical) and target columns of a target's source, and its path."""
    if spec.csv is None:
        paper = load_paper_dataset(spec.name, directory=data_directory)
        frame = paper.select(pl.col("canonical").alias("composition"), spec.name)
        return frame, paper_dataset_path(spec.name, data_directory).resolve()
    path = resolve_csv(spec.csv, data_directory)
    raw = pl.read_csv(path, infer_schema_length=None)
    column = spec.column or spec.name
    for needed in (spec.composition_column, column):
        if needed not in raw.columns:
            raise UserInputError(
                f"{path} has no column {needed!r}; columns: {', '.join(raw.columns)}"
            )
    try:
        values = raw[column].cast(pl.Float64)
    except pl.exceptions.InvalidOperationError:
        raise UserInputError(f"{path}: target column {column!r} is not numeric") from None
    bad = np.flatnonzero(~np.isfinite(values.fill_null(float("nan")).to_numpy()))
    if bad.size:
        raise UserInputError(f"{path}: column {column!r} is missing or not finite in rows "
                             f"{bad[:10].tolist()}")  # fmt: skip
    canonical = [str(parse(t)) for t in raw[spec.composition_column].cast(pl.Utf8)]
    return pl.DataFrame({"composition": canonical, spec.name: values}), path


def select_rows(frame: pl.DataFrame, target: str, config: FinetuneConfig,
                seed: int) -> pl.DataFrame:  # fmt: skip
    """Apply the duplicate policy, then the optional random subset (``max_rows``)."""
    if config.duplicates == "mean":
        frame = frame.group_by("composition", maintain_order=True).agg(pl.col(target).mean())
    if config.max_rows is not None and frame.height > config.max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(frame.height, config.max_rows,
                                                          replace=False))  # fmt: skip
        frame = frame[keep]
    if frame.height < 2 * config.folds:
        raise UserInputError(
            f"target {target}: {frame.height} rows are too few for {config.folds} folds"
        )
    return frame


def prepare_dataset(
    run: RunDir,
    spec: TargetSpec,
    config: FinetuneConfig,
    seed: int,
    data_directory: Path | None = None,
) -> FinetuneDataset:
    """Write ``dataset.csv``/``dataset.json`` unless present, then load them featurized."""
    csv_path = run.dataset_csv(spec.name)
    if not csv_path.exists():
        frame, source = read_source(spec, data_directory)
        frame = select_rows(frame, spec.name, config, seed)
        info = {
            "source": str(source),
            "sha256": sha256_file(source),
            "rows": frame.height,
            "duplicates": config.duplicates,
            "max_rows": config.max_rows,
        }
        write_csv_atomic(frame, csv_path)
        write_text_atomic(run.dataset_json(spec.name), json.dumps(info, indent=1))
        log.info("%s: %d rows from %s", spec.name, frame.height, source)
    frame = pl.read_csv(csv_path, schema_overrides={spec.name: pl.Float64})
    compositions = frame["composition"].to_list()
    table = CompositionTable.from_compositions(compositions)
    return FinetuneDataset(
        spec.name, compositions, frame[spec.name].to_numpy(), table, featurize(table)
    )
