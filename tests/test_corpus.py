"""Pre-training corpus: the paper's generator rules, determinism, partitions, exhaustion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hea_screen.compositions.composition import parse
from hea_screen.compositions.elements import mixing_matrix
from hea_screen.compositions.features import FEATURE_NAMES
from hea_screen.datasets.sources import data_dir
from pretrain import corpus
from pretrain.config import CorpusConfig
from pretrain.corpus import (
    COUNTS_6K,
    ELEMENT_WEIGHTS,
    Stratum,
    draw_block,
    generate_corpus,
    stratum_quotas,
    write_corpus,
)
from pretrain.corpus_report import strata_counts, write_corpus_report

SMALL = CorpusConfig(size=300, partitions=2, block_size=100)


@pytest.fixture(scope="module")
def small_corpus() -> corpus.CorpusResult:
    return generate_corpus(SMALL, seed=7)


def coefficients(text: str) -> list[tuple[str, str]]:
    """(symbol, coefficient text) pairs of a generated text such as ``Al1.71 Mo0.30``."""
    out = []
    for word in text.split():
        split = next(i for i, ch in enumerate(word) if ch.isdigit())
        out.append((word[:split], word[split:]))
    return out


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(2, 8), equimolar=st.booleans())
def test_draw_block_follows_the_rules(seed: int, k: int, equimolar: bool) -> None:
    texts = draw_block(seed, Stratum(k, equimolar), block=0, block_size=40)
    assert texts
    for text in texts:
        pairs = coefficients(text)
        symbols = [s for s, _ in pairs]
        assert len(symbols) == k == len(set(symbols))
        assert set(symbols) <= set(ELEMENT_WEIGHTS)
        assert "Te" not in symbols
        for _, c in pairs:
            assert len(c.split(".")[1]) == 2  # two decimals
            assert 0.1 <= float(c) <= 2.0
        values = {c for _, c in pairs}
        assert (values == {"1.00"}) if equimolar else len(values) > 1


def test_draw_block_is_reproducible_and_blocks_differ() -> None:
    s = Stratum(5, False)
    assert draw_block(3, s, 0, 50) == draw_block(3, s, 0, 50)
    assert draw_block(3, s, 0, 50) != draw_block(3, s, 1, 50)
    assert draw_block(3, s, 0, 50) != draw_block(4, s, 0, 50)


def test_weighted_choice_prefers_heavy_elements() -> None:
    texts = [t for b in range(5) for t in draw_block(0, Stratum(3, True), b, 1000)]
    count = {el: sum(f"{el}1.00" in t.split() for t in texts) for el in ("Fe", "Li")}
    assert count["Fe"] > 10 * count["Li"] > 0


def test_weighted_elements_have_complete_data() -> None:
    matrix = mixing_matrix(tuple(sorted(ELEMENT_WEIGHTS)))
    assert not np.isnan(matrix).any()


@pytest.mark.parametrize("size", [300, 6000, 35_000, 150_000, 12_345])
def test_quotas_scale_the_6k_table_and_sum_to_size(size: int) -> None:
    quotas = stratum_quotas(size)
    assert sum(quotas.values()) == size
    base_total = sum(sum(p) for p in COUNTS_6K.values())
    for s, n in quotas.items():
        base = COUNTS_6K[s.n_elements][0 if s.equimolar else 1]
        assert abs(n - base * size / base_total) < 1


def test_6k_quotas_are_the_papers() -> None:
    quotas = stratum_quotas(sum(sum(p) for p in COUNTS_6K.values()))
    assert quotas == {Stratum(k, eq): COUNTS_6K[k][0 if eq else 1]
                      for k in COUNTS_6K for eq in (True, False)}  # fmt: skip


def test_corpus_rows_are_unique_canonical_and_complete(small_corpus: corpus.CorpusResult) -> None:
    frame = small_corpus.frame
    assert frame.columns == ["composition", *FEATURE_NAMES]
    assert frame.height == SMALL.size
    assert frame["composition"].n_unique() == frame.height
    assert all(str(parse(t)) == t for t in frame["composition"].head(50))
    features = frame.select(FEATURE_NAMES).to_numpy()
    assert np.isfinite(features).all()
    assert (features != 0).all()


def test_corpus_strata_match_quotas(small_corpus: corpus.CorpusResult) -> None:
    from hea_screen.compositions.table import CompositionTable

    table = CompositionTable.from_compositions(small_corpus.frame["composition"].to_list())
    counts = {(r["n_elements"], r["equimolar"]): r["rows"]
              for r in strata_counts(table).to_dicts()}  # fmt: skip
    for s, quota in small_corpus.quotas.items():
        assert counts.get((s.n_elements, s.equimolar), 0) == quota == small_corpus.counts[s]
    assert "Te" not in table.elements


def test_corpus_is_deterministic_for_a_seed(small_corpus: corpus.CorpusResult) -> None:
    again = generate_corpus(SMALL, seed=7)
    assert again.frame.equals(small_corpus.frame)
    other = generate_corpus(SMALL, seed=8)
    assert not other.frame.equals(small_corpus.frame)


@pytest.mark.parametrize("partitions", [1, 5])
def test_corpus_does_not_depend_on_partitions(
    small_corpus: corpus.CorpusResult, partitions: int
) -> None:
    config = CorpusConfig(size=SMALL.size, partitions=partitions, block_size=SMALL.block_size)
    assert generate_corpus(config, seed=7).frame.equals(small_corpus.frame)


def test_exhausted_equimolar_stratum_moves_its_shortfall(monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 elements make 6 equimolar binaries; Co-Ni has zero mixing enthalpy (a zero feature)
    monkeypatch.setattr(corpus, "ELEMENT_WEIGHTS", {"Co": 1.0, "Cr": 1.0, "Fe": 1.0, "Ni": 1.0})
    monkeypatch.setattr(corpus, "COUNTS_6K", {3: (4, 10), 2: (40, 40)})
    result = generate_corpus(CorpusConfig(size=94, block_size=50, partitions=2), seed=1)
    counts = {(s.n_elements, s.equimolar): n for s, n in result.counts.items()}
    assert counts[(2, True)] == 5
    assert counts[(2, False)] == 40 + 35
    assert Stratum(2, True) in result.exhausted
    assert result.frame.height == 94
    assert "Co0.5 Ni0.5" not in result.frame["composition"].to_list()


def test_write_corpus_and_report(small_corpus: corpus.CorpusResult, tmp_path: Path) -> None:
    path = write_corpus(small_corpus, tmp_path / "corpus.parquet")
    assert pl.read_parquet(path).equals(small_corpus.frame)
    report = write_corpus_report(tmp_path, small_corpus, data_dir() / "6K.csv")
    text = report.read_text()
    assert "Te" in text and "| Fe |" in text
    assert (tmp_path / "figures" / "corpus_elements.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".*tmp"))
