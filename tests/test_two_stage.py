"""Two-stage screening with the shipped model: the cheap first stage keeps the exact top."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hea_screen.cli import main
from hea_screen.errors import UserInputError
from hea_screen.screening.engine import screen
from hea_screen.screening.model_ref import ModelRef, inspect_model, predictor_for
from hea_screen.screening.partition import (
    CHEAP_FOLDS,
    MIN_SHORTLIST,
    SHORTLIST_FACTOR,
    Stage,
    first_stage,
)
from hea_screen.screening.ranking import Ranking
from hea_screen.screening.space import SampledSpace
from hea_screen.screening.spec import build_space, parse_elements


@pytest.fixture(scope="module")
def cantor():
    """The 7,051 candidates of ``hea-screen --elements Co,Cr,Fe,Ni,Mn``."""
    return build_space(parse_elements("Co,Cr,Fe,Ni,Mn"))


def run(space, ranking: Ranking, **kwargs) -> pl.DataFrame:
    info = inspect_model(None)
    model = ModelRef(None, device="cpu", sha256=info.sha256)
    out = screen(space, ranking, model, info.reference, ingot_mass_g=50.0, **kwargs)
    assert out.merged.candidates == space.size
    return out.table


def test_first_stage_choice():
    ranking = Ranking(top=10)
    assert first_stage(ranking, 10**6) == Stage(CHEAP_FOLDS, MIN_SHORTLIST)  # 100 x 10 < 10,000
    assert first_stage(Ranking(top=500), 10**6) == Stage(CHEAP_FOLDS, SHORTLIST_FACTOR * 500)
    assert first_stage(ranking, 10**6, exact=True) == Stage(None, 10)
    assert first_stage(ranking, 50, shortlist=100) == Stage(None, 10)  # whole space: exact
    with pytest.raises(UserInputError, match="shortlist 5"):
        first_stage(ranking, 10**6, shortlist=5)


@pytest.mark.parametrize("objective", ["weighted", "uts", "elongation"])
def test_default_and_exact_screens_agree(cantor, objective):
    """The cheap stage runs (shortlist 1,000 of 7,051) and the re-scored top is the exact top,
    with the full ensemble's values (std, interval, phase, nearest data). Values agree to
    float32 rounding: ONNX Runtime's tree ensembles sum their trees in an order that depends
    on the batch size."""
    ranking = Ranking(objective, top=10)
    assert first_stage(ranking, cantor.size, shortlist=1000).folds == CHEAP_FOLDS
    exact = run(cantor, ranking, exact=True)
    default = run(cantor, ranking, shortlist=1000)
    assert default.columns == exact.columns
    for column in exact.columns:
        if exact[column].dtype.is_float():  # a grain size not stated is null in both
            assert default[column].fill_null(np.nan).to_list() == pytest.approx(
                exact[column].fill_null(np.nan).to_list(), rel=1e-5, abs=1e-2, nan_ok=True
            )
        else:
            assert default[column].equals(exact[column]), column
    assert (default["uts_tension_mpa_std"] > 0).all()


def test_exact_flag_on_the_command_line(tmp_path: Path, capsys):
    """--exact gives the library's exact screen; a two-stage screen (shortlist 500 of the
    space's candidates) lists the same compositions; a shortlist below --top is refused."""
    space = build_space(parse_elements("Co,Cr,Fe,Ni"))
    assert first_stage(Ranking(top=5), space.size, shortlist=500).folds == CHEAP_FOLDS
    out_exact, out_default = tmp_path / "exact.csv", tmp_path / "default.csv"
    base = ["--elements", "Co,Cr,Fe,Ni", "--top", "5", "--show", "0", "--quiet"]
    assert main([*base, "--exact", "--out", str(out_exact)]) == 0
    assert main([*base, "--shortlist", "500", "--out", str(out_default)]) == 0
    exact, default = pl.read_csv(out_exact), pl.read_csv(out_default)
    library = run(space, Ranking(top=5), exact=True)
    assert exact["composition"].to_list() == library["composition"].to_list()
    assert default["composition"].to_list() == exact["composition"].to_list()
    assert main([*base, "--shortlist", "4"]) == 2
    assert "shortlist 4: need at least --top (5)" in capsys.readouterr().err


def test_batch_runs_the_two_stages_of_the_main_command(tmp_path: Path):
    """``hea-screen batch`` with the main command's fidelity rule lists the main command's
    rows (the same shortlist of 1,000 of 7,051, re-scored by the full ensemble)."""
    spec = tmp_path / "cantor5.yaml"
    spec.write_text(
        "name: cantor5\nspace: {elements: [Co, Cr, Fe, Mn, Ni]}\nranking: {top: 10}\n"
        "run: {partition_size: 4096}\n"
    )
    ranked = tmp_path / "ranked.csv"
    quiet = ["--quiet", "--shortlist", "1000"]
    assert main(["--spec", str(spec), "--show", "0", "--out", str(ranked), *quiet]) == 0
    assert main(["batch", str(spec), "--out", str(tmp_path / "job"), *quiet]) == 0
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["first_stage"] == {"folds": CHEAP_FOLDS, "keep": 1000}
    assert (tmp_path / "job" / "ranked.csv").read_bytes() == ranked.read_bytes()


@pytest.mark.parametrize("folds", [None, CHEAP_FOLDS])
def test_grouped_predictor_calls_give_the_batches_values(monkeypatch, folds):
    """A partition predicts up to CALL_ROWS rows of whole batches per call (tree ensembles
    only): the kept rows are those of one call per batch to the last bit, the space's short
    last batch (37 rows, below ONNX Runtime's row-parallel size) included."""
    from hea_screen.screening import partition

    space = SampledSpace(build_space(parse_elements("Al,Co,Cr,Fe,Ni,Ti")), 2 * 256 + 37, seed=3)
    info = inspect_model(None)
    model = ModelRef(None, device="cpu", batch_size=256, sha256=info.sha256)
    stage = Stage(folds, 300)
    ranking = Ranking(top=20)
    grouped = partition.screen_partition(
        space, 0, space.size, model, ranking, info.reference, stage
    )
    assert len(partition._calls(0, space.size, 256, predictor_for(model), ranking.tasks)) == 2
    monkeypatch.setattr(partition, "CALL_ROWS", 256)  # one call per batch, as before
    single = partition.screen_partition(space, 0, space.size, model, ranking, info.reference, stage)
    assert grouped.top.equals(single.top) and grouped.front.equals(single.front)
