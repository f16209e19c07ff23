"""Loaders for the paper's sets and the MPEA database."""

import pytest

from hea_screen.datasets.sources import (
    compare_with_paper,
    filter_mpea,
    load_mpea,
    load_paper_dataset,
    rebuild_paper_uts,
)
from hea_screen.errors import UserInputError


@pytest.mark.parametrize(("target", "rows"), [("uts_mpa", 158), ("elongation_pct", 198)])
def test_paper_sets(target: str, rows: int) -> None:
    df = load_paper_dataset(target)
    assert df.height == rows
    assert df.columns == ["composition", "canonical", target]
    assert "hardness" not in load_paper_dataset(target, with_features=True).columns
    assert df[target].min() >= 0 and df[target].null_count() == 0


def test_rebuild_paper_uts_reproduces_all_rows() -> None:
    stats = compare_with_paper(rebuild_paper_uts(), load_paper_dataset("uts_mpa"))
    assert stats["matched_rows"] == 158
    assert stats["rebuilt_rows"] == 169


def test_filters_and_dedupe() -> None:
    mpea = load_mpea()
    kw = {"processing": ["CAST"], "test_type": ["T", "C"], "test_temperature_c": 25.0}
    every = filter_mpea(mpea, "uts_mpa", dedupe="none", **kw)
    first = filter_mpea(mpea, "uts_mpa", dedupe="first", **kw)
    mean = filter_mpea(mpea, "uts_mpa", dedupe="mean", **kw)
    assert every.height == 186 and first.height == mean.height == 169
    assert first["canonical"].n_unique() == first.height
    assert set(every["processing"]) == {"CAST"}
    with pytest.raises(UserInputError, match="unknown MPEA property 'uts'"):
        filter_mpea(mpea, "uts")
    with pytest.raises(UserInputError, match="unknown target"):
        load_paper_dataset("hardness")
