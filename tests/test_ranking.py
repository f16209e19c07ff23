"""Scores, top-k, Pareto fronts and their merge; lab columns of the ranked table."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hea_screen.compositions.composition import parse
from hea_screen.compositions.weighing import lab_columns, weigh_out_mg, weight_fractions
from hea_screen.errors import UserInputError
from hea_screen.screening.ranking import (
    Partial,
    Ranking,
    Reference,
    final_ranking,
    merge_all,
    pareto_front,
    score,
)

REF = Reference(
    {"uts_tension_mpa": 800.0, "elongation_tension_pct": 20.0},
    {"uts_tension_mpa": 200.0, "elongation_tension_pct": 10.0},
)


def predictions(values: list[tuple[float, float, float, float]], names: list[str] | None = None):
    names = names or [f"Co0.{i + 1:02d} Ni0.{99 - i:02d}" for i in range(len(values))]
    u, us, e, es = (list(col) for col in zip(*values))
    return pl.DataFrame(
        {
            "composition": names,
            "uts_tension_mpa_mean": u,
            "uts_tension_mpa_std": us,
            "elongation_tension_pct_mean": e,
            "elongation_tension_pct_std": es,
        }
    )


def test_risk_attitudes_and_objectives():
    frame = predictions([(1000, 100, 10, 5), (950, 10, 30, 1)])
    mean = score(frame, Ranking("uts", "mean"), REF)
    assert mean["score"].to_list() == [1000, 950]
    safe = score(frame, Ranking("uts", "safe", kappa=2), REF)
    assert safe["score"].to_list() == [800, 930]  # mean - 2 std: the certain one wins
    explore = score(frame, Ranking("elongation", "explore", kappa=1), REF)
    assert explore["score"].to_list() == [15, 31]
    weighted = score(frame, Ranking("weighted", weights=(1, 1)), REF)
    expected = [(1000 - 800) / 200 + (10 - 20) / 10, (950 - 800) / 200 + (30 - 20) / 10]
    assert np.allclose(weighted["score"].to_list(), expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"objective": "cost"}, "unknown objective"),
        ({"risk": "yolo"}, "unknown risk"),
        ({"kappa": -1.0}, "kappa"),
        ({"weights": (0.0, 0.0)}, "not both zero"),
        ({"top": 0}, "top"),
    ],
)
def test_bad_ranking_options(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        Ranking(**kwargs)


def test_ties_break_on_composition_text():
    frame = predictions(
        [(900, 0, 20, 0)] * 4, ["Co0.5 Ni0.5", "Al0.5 Ni0.5", "Cr0.5 Ni0.5", "Al0.5 Co0.5"]
    )
    ranked = final_ranking(
        Partial.of(score(frame, Ranking("uts", top=3), REF), 3, 4), Ranking("uts", top=3)
    )
    assert ranked["composition"].to_list() == ["Al0.5 Co0.5", "Al0.5 Ni0.5", "Co0.5 Ni0.5"]
    assert ranked["rank"].to_list() == [1, 2, 3]
    assert ranked["pareto"].to_list() == [True, True, True]  # equal points do not dominate


def _dominated(points: np.ndarray) -> np.ndarray:
    ge = (points[None, :, :] >= points[:, None, :]).all(axis=2)
    gt = (points[None, :, :] > points[:, None, :]).any(axis=2)
    return (ge & gt).any(axis=1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=40))
def test_pareto_front_matches_pairwise_definition(points):
    frame = score(predictions([(x, 0, y, 0) for x, y in points]), Ranking(), REF)
    front = set(pareto_front(frame)["composition"])
    arr = np.array(points, dtype=float)
    expected = {frame["composition"][int(i)] for i in np.flatnonzero(~_dominated(arr))}
    assert front == expected


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 5), st.integers(0, 20)),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 10),
    st.sampled_from(["uts", "weighted", "pareto"]),
    st.randoms(use_true_random=False),
)
def test_merge_of_partitions_equals_whole(values, k, objective, rnd):
    ranking = Ranking(objective, "safe", kappa=0.5, top=k)
    frame = score(predictions([(u, s, e, s) for u, s, e in values]), ranking, REF)
    whole = final_ranking(Partial.of(frame, k, frame.height), ranking)
    cuts = sorted({0, frame.height, *rnd.sample(range(frame.height + 1), min(3, frame.height))})
    pieces = [frame[a:b] for a, b in itertools.pairwise(cuts)]
    rnd.shuffle(pieces)
    merged = merge_all((Partial.of(p, k, p.height) for p in pieces), k)
    assert merged.candidates == frame.height
    assert final_ranking(merged, ranking).equals(whole)


def test_final_ranking_pareto_objective_lists_the_front():
    frame = predictions([(1000, 0, 5, 0), (900, 0, 30, 0), (800, 0, 20, 0), (500, 0, 40, 0)])
    ranking = Ranking("pareto", top=10)
    ranked = final_ranking(Partial.of(score(frame, ranking, REF), 10, 4), ranking)
    assert ranked.height == 3 and ranked["pareto"].all()
    assert "Co0.03 Ni0.97" not in ranked["composition"].to_list()  # (800, 20) is dominated


def test_weight_percent_and_weigh_out_for_cantor_alloy():
    masses = {"Co": 58.933194, "Cr": 51.9961, "Fe": 55.845, "Mn": 54.938043, "Ni": 58.6934}
    w = weight_fractions(list(masses), np.full(5, 0.2))
    m = np.array(list(masses.values()))
    assert np.allclose(w, m / m.sum(), rtol=1e-4)
    mg = weigh_out_mg(w, 50.0)
    assert mg.sum() == 50_000 and np.all(np.abs(mg - w * 50_000) <= 1)


def test_lab_columns_text():
    frame = pl.DataFrame({"composition": ["Co0.2 Cr0.2 Fe0.2 Mn0.2 Ni0.2", "Al0.1 Ni0.9"]})
    out = lab_columns(frame, ingot_mass_g=20)
    assert out["n_elements"].to_list() == [5, 2]
    assert out["at_pct"][1] == "Al 10.00, Ni 90.00"
    al_wt = 0.1 * 26.98 / (0.1 * 26.98 + 0.9 * 58.69)
    assert out["wt_pct"][1] == f"Al {100 * al_wt:.2f}, Ni {100 * (1 - al_wt):.2f}"
    grams = [float(part.split()[1]) for part in out["weigh_out_g"][0].split(", ")]
    assert sum(grams) == pytest.approx(20.0, abs=1e-9)
    with pytest.raises(UserInputError, match="ingot mass"):
        lab_columns(frame, ingot_mass_g=0)


def _lab_row(text: str, ingot_mass_g: float) -> tuple[int, str, str, str]:
    """The lab texts of one composition, computed per element (the reference arithmetic)."""
    comp = parse(text)
    x = np.array(comp.micro, dtype=np.float64) / 1e6
    w = weight_fractions(comp.elements, x)
    grams = weigh_out_mg(w, ingot_mass_g) / 1000

    def join(values: np.ndarray, digits: int, unit: str = "") -> str:
        return ", ".join(f"{el} {v:.{digits}f}{unit}" for el, v in zip(comp.elements, values))

    return len(comp), join(100 * x, 2), join(100 * w, 2), join(grams, 3, " g")


@pytest.mark.parametrize("ingot_mass_g", [50.0, 7.3, 1234.567])
def test_lab_columns_equal_the_per_composition_arithmetic(ingot_mass_g):
    """Vectorized lab columns give every text of the per-composition arithmetic, digit for
    digit: 1 to 10 elements, equimolar (1/3, 1/7), grid and random fractions, and at.% on a
    rounding tie (0.123450 reads 12.35 or 12.34 as the binary value falls)."""
    rng = np.random.default_rng(7)
    palette = ["Al", "Co", "Cr", "Cu", "Fe", "Hf", "Mn", "Mo", "Nb", "Ni", "Ta", "Ti", "V", "W"]
    texts = ["Co0.12345 Ni0.87655", "Al0.000050 Co0.999950", "Co1"]
    for i in range(600):
        k = int(rng.integers(1, 11))
        els = rng.choice(palette, k, replace=False)
        x = [np.full(k, 1 / k), rng.integers(1, 20, k) * 0.05, rng.dirichlet(np.ones(k)) + 1e-3][
            i % 3
        ]
        texts.append("".join(f"{el}{v:.6f}" for el, v in zip(els, x / x.sum())))
    canonical = [str(parse(t)) for t in texts]
    out = lab_columns(pl.DataFrame({"composition": canonical}), ingot_mass_g)
    expected = [_lab_row(t, ingot_mass_g) for t in canonical]
    assert out.select("n_elements", "at_pct", "wt_pct", "weigh_out_g").rows() == expected
    empty = pl.DataFrame({"composition": []}, schema={"composition": pl.Utf8})
    assert lab_columns(empty).height == 0
