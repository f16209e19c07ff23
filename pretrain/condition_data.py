"""The condition-aware run's data: MPEA measurements with their design matrix, groups and
tokens, and the names the run's files and records share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.datasets.measurements import measurements
from hea_screen.datasets.sources import MPEA_FILE, load_mpea, sha256_file
from hea_screen.inference.design import design_matrix
from pretrain.config import ConditionsConfig

TRANSFORMER = "transformer"


RECORD_SCHEMA = {
    "model": pl.Utf8,
    "seed": pl.Int64,
    "fold": pl.Int64,
    "row": pl.Int64,
    "task": pl.Utf8,
    "predicted": pl.Float64,
    "val_loss": pl.Float64,
    "params": pl.Utf8,
}


OUT_DIR = "conditions"


#: Families that cannot classify the three phases in ONNX (skl2onnx converts only binary GPCs).
NOT_FOR_PHASE = ("gp_noise",)


@dataclass
class Data:
    """Measurements with their design matrix and atomic fractions, row-aligned."""

    frame: pl.DataFrame
    x: np.ndarray
    fractions: np.ndarray
    source_sha256: str


def load_data(data_dir: Path, config: ConditionsConfig, seed: int) -> Data:
    """The measurement table (optionally ``max_alloys`` random alloys) and its inputs."""
    frame = measurements(load_mpea(data_dir))
    if config.max_alloys is not None:
        alloys = frame["canonical"].unique().sort()
        keep = alloys.sample(min(config.max_alloys, alloys.len()), seed=seed)
        frame = frame.filter(pl.col("canonical").is_in(keep.implode()))
    alloys = frame["canonical"].unique().sort().to_list()
    table = CompositionTable.from_compositions(alloys)
    index = frame["canonical"].replace_strict(
        {c: i for i, c in enumerate(alloys)}, return_dtype=pl.Int64
    )
    rows = index.to_numpy()
    feats = featurize(table)[rows]
    x = design_matrix(
        feats,
        frame["temperature_c"].to_numpy(),
        frame["processing"].to_list(),
        frame["grain_size_um"].fill_null(np.nan).to_numpy(),
    )
    return Data(frame, x, table.fractions[rows], sha256_file(data_dir / MPEA_FILE))
