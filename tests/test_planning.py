"""hea-screen plan: acquisition, batch diversity, constraints, reasons, the lab sheet."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hea_screen.cli import main
from hea_screen.compositions.table import CompositionTable
from hea_screen.planning.acquisition import (
    Measured,
    Objective,
    PlanOptions,
    acquisition,
    normal_cdf,
    select,
    table_of,
)
from hea_screen.planning.charts import nice_ticks, place_labels, tick_text
from hea_screen.planning.reasons import expected_gain, labels, percentile_ranks
from hea_screen.screening.ranking import Ranking

UTS = "uts_tension_mpa"
Z90 = 1.6448536269514722


def candidates(rows: list[tuple[str, float, float]], ss: bool = True) -> pl.DataFrame:
    """Candidates with a UTS mean and a 1-sigma spread (as a calibrated 90 % interval)."""
    comps, mean, sigma = zip(*rows)
    m, s = np.array(mean), np.array(sigma)
    return pl.DataFrame(
        {
            "composition": [str(c) for c in comps],
            f"{UTS}_mean": m,
            f"{UTS}_lo": m - Z90 * s,
            f"{UTS}_hi": m + Z90 * s,
            "solid_solution": [ss] * len(m),
            "vec_phase": ["FCC"] * len(m),
        }
    )


UTS_OBJECTIVE = Objective.of(Ranking(objective="uts"), None)
NOTHING = Measured((), {})


def test_expected_improvement_closed_form():
    mu, sigma, best = np.array([110.0, 90.0, 100.0]), np.array([10.0, 30.0, 0.0]), 100.0
    value = acquisition(mu, sigma, best, "ei")
    u = (mu[:2] - best) / sigma[:2]
    pdf = np.exp(-u * u / 2) / math.sqrt(2 * math.pi)
    expected = (mu[:2] - best) * normal_cdf(u) + sigma[:2] * pdf
    assert value[:2] == pytest.approx(expected)
    assert value[2] == 0.0 and np.all(value >= 0)
    assert normal_cdf(np.array([1.6448536269514722]))[0] == pytest.approx(0.95)
    # the same expected improvement, in the task's unit, is what a pick's reason states
    gain, chance = expected_gain(110.0, 10.0, best)
    assert gain == pytest.approx(value[0])
    assert chance == pytest.approx(normal_cdf(np.array([1.0]))[0])


def test_labels_mean_which_side_chose_the_pick():
    # percentiles among the feasible candidates of the pick's mean and uncertainty
    assert labels(np.array([0.95, 0.2, 0.95, 0.5]), np.array([0.1, 0.9, 0.92, 0.5])) == [
        "exploit", "explore", "both", "exploit"]
    ranks = percentile_ranks(np.array([1.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert ranks.tolist() == [0.25, 1.0]


def test_reasons_speak_in_mpa_over_the_best_measured_alloy():
    space = candidates([("Co1", 900.0, 50.0), ("Cr1", 700.0, 300.0), ("Fe1", 600.0, 20.0)])
    measured = Measured(("Ni1",), {UTS: {"Ni1": 800.0}})
    plan = select(space, UTS_OBJECTIVE, measured, PlanOptions(k=3, min_distance=0))
    first = plan.row(0, named=True)
    assert first["composition"] == "Co1" and first["reason"] == "exploit"
    gain, chance = expected_gain(900.0, 50.0, 800.0)
    assert first[f"{UTS}_expected_gain"] == pytest.approx(gain)  # MPa, about 100
    assert first[f"{UTS}_chance_to_beat_best"] == pytest.approx(chance)
    assert first[f"{UTS}_best_measured"] == 800.0 and first["nearest_measured"] == "Ni1"
    assert (
        f"tensile UTS +{gain:,.0f} MPa expected over the best measured 800 MPa "
        f"({100 * chance:.0f} % chance to beat it); predicted 900 [818–982] MPa"
    ) in first["why"]
    assert "nearest measured alloy Ni100 at L1 2.00" in first["why"]
    by_comp = dict(zip(plan["composition"], plan["reason"]))
    assert by_comp["Cr1"] == "explore"  # below the best measured, widest interval


def test_sigma_comes_from_the_calibrated_interval():
    frame = candidates([("Fe1", 100.0, 20.0)])
    mu, sigma = UTS_OBJECTIVE.mean_sigma(frame, 0.9)
    assert mu[0] == 100.0 and sigma[0] == pytest.approx(20.0)
    # the predictor clips the lower bound at 0 (a strength is >= 0): sigma must not shrink
    clipped = candidates([("Fe1", 10.0, 20.0)]).with_columns(pl.lit(0.0).alias(f"{UTS}_lo"))
    assert UTS_OBJECTIVE.mean_sigma(clipped, 0.9)[1][0] == pytest.approx(20.0)


def cluster_space() -> pl.DataFrame:
    """A cluster of near-duplicates with the best predictions, and distant alloys."""
    rows = [(f"Co{50 + i}Ni{50 - i}", 900.0 - i, 50.0) for i in range(6)]  # L1 <= 0.1 apart
    rows += [("Cr1", 880.0, 50.0), ("Fe1", 870.0, 50.0), ("Mn1", 860.0, 50.0)]
    return candidates(rows)


def test_batch_spreads_instead_of_crowding_one_corner():
    crowded = select(cluster_space(), UTS_OBJECTIVE, NOTHING, PlanOptions(k=4, min_distance=0,
                                                                          diversity=0))
    assert all(c.startswith("Co") for c in crowded["composition"])  # what a ranking picks
    plan = select(cluster_space(), UTS_OBJECTIVE, NOTHING, PlanOptions(k=4, min_distance=0.05))
    x = table_of(plan["composition"]).fractions
    d = np.abs(x[:, None, :] - x[None, :, :]).sum(axis=2)[np.triu_indices(len(x), 1)]
    assert d.min() >= 0.05  # no near-duplicates
    assert sum(c.startswith("Co") for c in plan["composition"]) == 1
    assert plan["pick"].to_list() == [1, 2, 3, 4]
    assert set(plan["reason"]) <= {"exploit", "explore", "both"}
    assert plan["why"].str.contains("(no measured value to beat)", literal=True).all()


def test_constraints_bounds_measured_distance_and_phase():
    frame = cluster_space()
    bounded = select(frame, UTS_OBJECTIVE, NOTHING, PlanOptions(k=9, bounds={"Co": (0, 0.52)}))
    x = table_of(bounded["composition"])
    co = x.fractions[:, x.elements.index("Co")]
    assert co.max() <= 0.52 and "Co0.5 Ni0.5" in bounded["composition"].to_list()
    measured = Measured(("Co0.5 Ni0.5",), {UTS: {"Co0.5 Ni0.5": 650.0}})
    far = select(frame, UTS_OBJECTIVE, measured, PlanOptions(k=9, min_distance=0.15))
    assert not far["composition"].str.starts_with("Co").any()
    assert far["distance_to_measured"].min() >= 0.15
    brittle = frame.with_columns(
        pl.when(pl.col("composition") == "Cr1").then(False).otherwise(True).alias("solid_solution")
    )
    screened = select(brittle, UTS_OBJECTIVE, NOTHING, PlanOptions(k=9))
    assert "Cr1" not in screened["composition"].to_list()
    anything = select(brittle, UTS_OBJECTIVE, NOTHING, PlanOptions(k=9, phase="any"))
    assert "Cr1" in anything["composition"].to_list()


def test_no_feasible_candidate_is_a_clear_error():
    with pytest.raises(ValueError, match="no candidate passes the constraints"):
        select(cluster_space(), UTS_OBJECTIVE, NOTHING, PlanOptions(bounds={"Co": (0.9, 1)},
                                                                    phase="bcc"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["Al", "Co", "Cr", "Fe", "Ni"]),
                                st.integers(1, 50), min_size=1), min_size=1, max_size=8))
def test_fast_table_matches_the_parser(amounts):
    texts = [" ".join(f"{el}{n}" for el, n in a.items()) for a in amounts]
    canonical = [str(c) for c in CompositionTable.from_compositions(texts).canonical_texts()]
    for given_texts in (texts, canonical):
        fast = table_of(pl.Series(given_texts))
        slow = CompositionTable.from_compositions(given_texts)
        assert fast.elements == slow.elements and np.array_equal(fast.micro, slow.micro)


@pytest.fixture(scope="module")
def screened(tmp_path_factory) -> Path:
    """A hea-screen output of the Cantor palette with the shipped model."""
    out = tmp_path_factory.mktemp("plan") / "screen.parquet"
    args = ["--elements", "Co,Cr,Fe,Mn,Ni", "--step", "0.1", "--workers", "1", "--quiet"]
    assert main([*args, "--top", "500", "--show", "0", "--out", str(out)]) == 0
    return out


def test_plan_command_writes_csv_and_self_contained_html(screened, tmp_path, capsys):
    csv, page = tmp_path / "plan.csv", tmp_path / "plan.html"
    code = main(["plan", str(screened), "-k", "5", "--out", str(csv), "--html", str(page),
                 "--ingot-mass", "20"])
    err = capsys.readouterr().err
    assert code == 0, err
    plan = pl.read_csv(csv)
    assert plan.height == 5 and set(plan["reason"]) <= {"exploit", "explore", "both"}
    assert plan["solid_solution"].all()  # the default phase screen
    assert {"omega", "vec_phase", "phase_fcc_prob", "weigh_out_g"} <= set(plan.columns)
    grams = [sum(float(p.split()[1]) for p in w.split(", ")) for w in plan["weigh_out_g"]]
    assert grams == pytest.approx([20.0] * 5)
    html = page.read_text(encoding="utf-8")
    assert "<svg" in html and html.count('class="pick"') == 5 and 'class="front"' in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html and "<script" not in html  # opens from disk, no network
    assert "Yang" in html and "Guo" in html


def test_plan_from_compositions_only_predicts_them(tmp_path, capsys):
    comps = tmp_path / "mine.csv"
    pl.DataFrame({"composition": ["CoCrFeNi", "CoCrFeMnNi", "Co2CrFeNi", "CoCr2FeNi"]}).write_csv(
        comps
    )
    code = main(["plan", str(comps), "-k", "2", "--objective", "uts", "--phase", "any",
                 "--min-distance", "0", "--out", str(tmp_path / "p.csv")])
    assert code == 0, capsys.readouterr().err
    plan = pl.read_csv(tmp_path / "p.csv")
    assert plan.height == 2 and plan[f"{UTS}_mean"].is_not_null().all()


@pytest.mark.parametrize(
    "content, message",
    [
        ({"alloy": ["CoCrFeNi"]}, "no 'composition' column"),
        ({"composition": ["CoCrFeNi", "CoXxFe"]}, "row 1: 'CoXxFe'"),
    ],
)
def test_plan_bad_candidates_exit_2_naming_the_problem(tmp_path, capsys, content, message):
    path = tmp_path / "c.csv"
    pl.DataFrame(content).write_csv(path)
    assert main(["plan", str(path), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
WIDTH_PROBE = (
    "<script>var b = document.body, o = 0;"
    "document.querySelectorAll('.wrap').forEach(function (e) {"
    "o = Math.max(o, e.scrollWidth - e.clientWidth); });"
    "b.setAttribute('data-scroll-width', document.documentElement.scrollWidth + o);"
    "</script></body>"
)


def rendered(page: Path, window: int, printed: bool = False) -> tuple[str, int]:
    """The DOM of ``page`` rendered by headless Chromium in a ``window`` px wide window and
    the document's width (``scrollWidth``, plus any overflow of a table's own scrolling box),
    measured on a copy with one line of script (the page has none); ``printed`` applies the
    print style sheet (A4: 718 px between margins)."""
    text = page.read_text(encoding="utf-8")
    if printed:
        text = text.replace("@media print{", "@media all{")
    probe = page.with_name(f"{page.stem}-{window}-{printed}.html")
    probe.write_text(text.replace("</body>", WIDTH_PROBE), encoding="utf-8")
    dom = subprocess.run(
        [*CHROMIUM, f"--window-size={window},1000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    found = re.search(r'data-scroll-width="(\d+)"', dom)
    assert found, dom[-2000:]
    return dom, int(found[1])


def fits_in_chromium(page: Path, tmp_path: Path) -> str:
    """Check the page's width at 1,280 and 1,400 px and printed on A4; screenshot it."""
    for window in (1280, 1400):
        dom, width = rendered(page, window)
        assert width <= window, f"{page.name} is {width} px wide in a {window} px window"
    assert rendered(page, A4_PX, printed=True)[1] <= A4_PX
    shot = tmp_path / f"{page.stem}.png"
    subprocess.run([*CHROMIUM, "--window-size=1400,1800", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    return dom


A4_PX = 718  # 210 mm less 2 x 12 mm margins at 96 px per inch


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_lab_sheets_render_in_headless_chromium_without_sideways_scrolling(
    screened, tmp_path, capsys
):
    page = tmp_path / "plan.html"
    assert main(["plan", str(screened), "--out", str(tmp_path / "p.csv"), "--html", str(page)]) == 0
    dom = fits_in_chromium(page, tmp_path)
    assert dom.count('class="pick-row') == 8 and dom.count('class="pick"') == 8
    assert "tensile UTS, MPa: mean [90 %]" in dom
    # compositions only, predicted here: three task columns and a long composition
    mine = tmp_path / "mine.csv"
    pl.DataFrame({"composition": ["Al0.3CoCrFeNi", "CoCrFeMnNi", "Co2CrFeNi"]}).write_csv(mine)
    page = tmp_path / "hardness.html"
    args = ["--objective", "hardness", "--phase", "any", "--min-distance", "0", "-k", "3"]
    assert main(["plan", str(mine), *args, "--out", str(tmp_path / "h.csv"), "--html",
                 str(page)]) == 0
    assert "Vickers hardness, HV: mean [90 %]" in fits_in_chromium(page, tmp_path)
    screen = tmp_path / "screen.html"
    args = ["--elements", "Co,Cr,Fe,Mn,Ni", "--step", "0.1", "--workers", "1", "--quiet"]
    assert main([*args, "--top", "60", "--show", "0", "--html", str(screen)]) == 0
    capsys.readouterr()
    dom = fits_in_chromium(screen, tmp_path)
    assert dom.count('class="rank-row"') == 25 and "atomic percent" in dom


def test_plan_from_a_spec_uses_its_space_and_condition(tmp_path, capsys):
    spec = tmp_path / "small.yaml"
    spec.write_text(
        "name: small\nspace:\n  elements: [Co, Cr, Fe, Ni]\n  step: 0.25\n"
        "ranking:\n  objective: ys\n",
        encoding="utf-8",
    )
    out = tmp_path / "p.csv"
    assert main(["plan", "--spec", str(spec), "-k", "3", "--phase", "any", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "objective tensile yield strength (MPa) [ys_tension_mpa]" in err
    plan = pl.read_csv(out)
    assert plan.height == 3
    assert set(table_of(plan["composition"]).elements) <= {"Co", "Cr", "Fe", "Ni"}
    assert "ys_tension_mpa_mean" in plan.columns


def test_axis_ticks_are_round_numbers_with_the_data_inside():
    ticks = nice_ticks(-76.23, 1600.0, 6)
    assert ticks[0] <= -76.23 and ticks[-1] >= 1600.0
    steps = set(np.round(np.diff(ticks), 9))
    assert steps == {500.0} and all(t % 500 == 0 for t in ticks)
    assert nice_ticks(0.0, 130.0, 5) == [0, 50, 100, 150]
    assert tick_text(1500.0, 500.0) == "1,500" and tick_text(2.5, 2.5) == "2.5"


def test_pick_numbers_never_overlap():
    # eight picks on nearly one spot: each number moves to a free place around its point
    spots = place_labels([(100.0 + i, 100.0 + i) for i in range(8)], (0, 0, 400, 400), 10.0)
    for i, (ax, ay) in enumerate(spots):
        for bx, by in spots[i + 1 :]:
            assert math.hypot(ax - bx, ay - by) >= 20.0
