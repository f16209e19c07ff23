"""Fit the run's tokenizer: the shared vocabulary plus feature-bin edges.

The bin edges (:class:`hea_screen.inference.tokens.FeatureBins`, quantiles per feature) are fitted
on
compositions only, never on targets: the features of the pre-training corpus stacked with
the features of every distinct MPEA formula that the featurizer covers (all elements with
property data and a Takeuchi–Inoue enthalpy for every pair). Including the measured alloys
makes the bins resolve the region that fine-tuning and screening care about, not only the
random corpus.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from hea_screen.compositions.composition import Composition, parse
from hea_screen.compositions.elements import mixing_matrix, supported_elements
from hea_screen.compositions.features import FEATURE_NAMES, featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.datasets.sources import load_mpea
from hea_screen.errors import CompositionError
from hea_screen.inference.tokens import FeatureBins, TokenEncoder, build_tokenizer

log = logging.getLogger(__name__)


def featurizable(compositions: list[Composition]) -> list[Composition]:
    """The compositions :func:`hea_screen.featurize` accepts (element and pair data known)."""
    supported = set(supported_elements())
    covered = [c for c in compositions if set(c.elements) <= supported]
    if not covered:
        return []
    table = CompositionTable.from_compositions(covered)
    present = table.micro > 0
    missing = np.isnan(mixing_matrix(table.elements)).astype(np.int64)
    # row r has a pair without data if present_r^T M present_r > 0
    bad = np.einsum("ri,ij,rj->r", present, missing, present) > 0
    return [c for c, b in zip(covered, bad) if not b]


def mpea_features(directory: Path | None = None) -> pl.DataFrame:
    """Features of the distinct MPEA formulas the featurizer covers (compositions only)."""
    formulas = load_mpea(directory)["formula"].drop_nulls().unique(maintain_order=True)
    parsed = []
    for text in formulas:
        try:
            parsed.append(parse(text))
        except CompositionError as err:
            log.info("MPEA formula skipped: %s", err)
    distinct = list(dict.fromkeys(parsed))
    usable = featurizable(distinct)
    log.info(
        "MPEA: %d distinct formulas, %d with full element and pair data",
        len(distinct), len(usable),
    )
    return featurize(usable)


def fit_encoder(corpus: pl.DataFrame, mpea: pl.DataFrame) -> TokenEncoder:
    """A with-features :class:`TokenEncoder` with bins fitted on corpus + MPEA features."""
    stacked = pl.concat([corpus.select(FEATURE_NAMES), mpea.select(FEATURE_NAMES)])
    return TokenEncoder(build_tokenizer(), FeatureBins.fit(stacked), use_features=True)


def fit_tokenizer(corpus_path: str | Path, out_dir: str | Path,
                  data_directory: Path | None = None) -> TokenEncoder:  # fmt: skip
    """Fit on ``corpus.parquet`` and the MPEA formulas, save to ``out_dir`` and return it."""
    corpus = pl.read_parquet(corpus_path)
    encoder = fit_encoder(corpus, mpea_features(data_directory))
    encoder.save(out_dir)
    log.info("tokenizer: %d tokens, bins fitted on %d corpus rows + MPEA", encoder.vocab_size,
             corpus.height)  # fmt: skip
    return encoder
