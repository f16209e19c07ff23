"""Interval scale with the distance to the data: the formula, its fit, its calibration and the
screen's use of it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hea_screen.conditions import Condition, Processing
from hea_screen.errors import BundleError
from hea_screen.inference.bundle import OOF_FILE, load_task_bundle
from hea_screen.inference.bundle_files import default_bundle_path
from hea_screen.inference.intervals import DISTANCE_CAP, Normalizer, ensemble
from hea_screen.inference.predictor import TaskPredictor
from hea_screen.planning.update import new_scores, old_scores
from pretrain.condition_calibration import (
    MIN_ROUTE_ROWS,
    Neighbourhood,
    calibrate,
    distance_slope,
)

TASK = "uts_tension_mpa"


def test_a_scale_without_distance_slope_is_spread_plus_offset() -> None:
    spread = np.array([0.0, 0.05, 0.2])
    for distance in (None, np.array([0.0, 0.3, np.nan]), np.array([2.0, 2.0, 2.0])):
        np.testing.assert_allclose(Normalizer(0.04).scale(spread, distance), spread + 0.04)


def test_the_scale_grows_with_distance_up_to_the_cap_and_unknown_reads_as_far() -> None:
    norm = Normalizer(0.05, distance_slope=2.0)
    d = np.array([0.0, 0.1, 0.4, DISTANCE_CAP, 1.5, np.nan])
    got = norm.scale(np.zeros(len(d)), d)
    assert np.all(np.diff(got[:4]) > 0)
    far = 0.05 * np.exp(2.0 * DISTANCE_CAP)
    np.testing.assert_allclose(got[3:], far)
    np.testing.assert_allclose(norm.scale(np.zeros(2)), far)  # no distance at all: the widest


def test_distance_slope_recovers_a_growing_scale_and_is_never_negative() -> None:
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 0.6, 4000)
    ratio = np.abs(rng.normal(size=d.size)) * np.exp(1.5 * np.minimum(d, DISTANCE_CAP))
    assert distance_slope(ratio, d) == pytest.approx(1.5, abs=0.15)
    shrinking = np.abs(rng.normal(size=d.size)) * np.exp(-1.5 * np.minimum(d, DISTANCE_CAP))
    assert distance_slope(shrinking, d) == 0.0
    assert distance_slope(ratio, np.zeros(d.size)) == 0.0  # no spread in distance: no slope


def _synthetic_run(seeds: int = 4) -> tuple[pl.DataFrame, Neighbourhood]:
    """Out-of-fold ensembles of one task: 1000 cast rows whose error grows with the distance to
    the data, and 32 wrought rows (just over :data:`MIN_ROUTE_ROWS`) with 3x the error; one
    group per alloy of 2 rows; ``seeds`` partitions into 5 folds."""
    rng = np.random.default_rng(1)
    n_cast, n_wrought = 1000, MIN_ROUTE_ROWS + 2
    n = n_cast + n_wrought
    routes = np.array(["CAST"] * n_cast + ["WROUGHT"] * n_wrought)
    distance = rng.uniform(0.02, 0.6, n)
    spread = rng.uniform(0.02, 0.08, n)
    sigma = (spread + 0.05) * np.exp(2.0 * np.minimum(distance, DISTANCE_CAP))
    sigma[routes == "WROUGHT"] *= 3
    centre = np.log(rng.uniform(300, 1200, n))
    measured = np.exp(centre + rng.normal(size=n) * sigma)
    groups = np.arange(n) // 2
    frames = []
    for s in range(seeds):
        fold_of_group = np.random.default_rng(s).permutation(groups.max() + 1) % 5
        frames.append(
            pl.DataFrame(
                {
                    "model": "extra_trees",
                    "seed": s,
                    "fold": fold_of_group[groups],
                    "row": np.arange(n),
                    "task": TASK,
                    "measured": measured,
                    "temperature_c": 25.0,
                    "processing": routes,
                    "predicted_mean": np.exp(centre),
                    "centre": centre,
                    "spread": spread,
                }
            )
        )
    return pl.concat(frames), Neighbourhood(groups, distance, distance)


def test_calibration_fits_the_distance_and_tests_a_small_route_with_its_own_factor() -> None:
    spread, near = _synthetic_run()
    cal = calibrate(spread, 0.9, near)["extra_trees"][TASK]
    assert cal["distance_slope"] == pytest.approx(2.0, abs=0.5)
    assert cal["distance_cap"] == DISTANCE_CAP and cal["coverage_partitions"] == 4
    assert set(cal["factor_by_route"]) == {"CAST", "WROUGHT"}
    # each fold's training part holds < 30 wrought rows; the route still gets its own factor
    # there, as the shipped interval does, instead of the pooled one (coverage 0.48)
    wrought = cal["coverage_by_route"]["WROUGHT"]
    assert wrought["rows"] == MIN_ROUTE_ROWS + 2 and wrought["groups"] == 16
    assert wrought["coverage"] >= 0.8
    assert 0.03 < wrought["sd_if_calibrated"] < 0.12
    # a distance-blind scale would over-cover the near band and under-cover the far one
    for band in cal["coverage_by_distance"].values():
        assert 0.82 <= band["coverage"] <= 0.97
    assert 0.87 <= cal["coverage"] <= 0.93


def _with_distance_slope(tmp_path: Path, slope: object) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["tasks"][TASK]["calibration"]["distance_slope"] = slope
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _without_distance_term(tmp_path: Path) -> Path:
    """A copy of the default bundle as exported before the distance term: no slope or cap."""
    dst = _with_distance_slope(tmp_path, 0.0)
    manifest = json.loads((dst / "manifest.json").read_text())
    for task in manifest["tasks"].values():
        for key in ("distance_slope", "distance_cap"):
            task.get("calibration", {}).pop(key, None)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_bundles_without_the_distance_term_keep_their_intervals(tmp_path: Path) -> None:
    predictor = TaskPredictor(_without_distance_term(tmp_path))
    model = predictor.bundle.task(TASK)
    assert model.distance_slope == 0.0  # built before the term existed
    comps = ["CoCrFeMnNi", "Al0.5CoCrFeNi", "NbMoTaW"]
    cond = Condition.of("tension", 25, "wrought")
    near = predictor.predict(comps, cond, [TASK])
    blind = predictor.predict(comps, cond, [TASK], applicability=False)
    for side in ("lo", "hi"):
        np.testing.assert_array_equal(near[f"{TASK}_{side}"], blind[f"{TASK}_{side}"])
    values = np.array([[500.0, 650.0], [520.0, 700.0], [480.0, 690.0]])
    ens = ensemble(values, "log")
    half = model.factor(Processing.WROUGHT) * (ens.spread + model.interval_offset)
    got = model.interval(values, Processing.WROUGHT, np.array([0.0, 1.0]))
    np.testing.assert_allclose(got["hi"], np.exp(ens.centre + half))


def test_the_screen_widens_the_interval_with_the_distance_to_the_data(tmp_path: Path) -> None:
    predictor = TaskPredictor(_with_distance_slope(tmp_path, 2.0))
    comps = ["CoCrFeMnNi", "Co0.3 Cr0.2 Fe0.1 Mn0.1 Ni0.3", "NbMoTaW", "Al0.5CoCrFeNi"]
    cond = Condition.of("tension", 25, "wrought")
    near = predictor.predict(comps, cond, [TASK])
    blind = predictor.predict(comps, cond, [TASK], applicability=False)
    d = near[f"{TASK}_nearest_distance"].fill_null(np.nan).to_numpy()
    assert np.nanmin(d) < DISTANCE_CAP
    log_width = np.log(near[f"{TASK}_hi"] / near[f"{TASK}_lo"]).to_numpy()
    log_blind = np.log(blind[f"{TASK}_hi"] / blind[f"{TASK}_lo"]).to_numpy()
    capped = np.where(np.isfinite(d), np.minimum(d, DISTANCE_CAP), DISTANCE_CAP)
    np.testing.assert_allclose(log_width / log_blind, np.exp(2.0 * (capped - DISTANCE_CAP)))
    np.testing.assert_array_equal(near[f"{TASK}_mean"], blind[f"{TASK}_mean"])


@pytest.mark.parametrize("slope", [-1.0, "1", True])
def test_a_bad_distance_slope_is_refused(tmp_path: Path, slope: object) -> None:
    with pytest.raises(BundleError, match="distance slope"):
        load_task_bundle(_with_distance_slope(tmp_path, slope))


def test_update_scores_new_rows_at_their_distance_to_the_data(tmp_path: Path) -> None:
    predictor = TaskPredictor(_with_distance_slope(tmp_path, 2.0))
    comps = ["CoCrFeMnNi", "Co0.3 Cr0.2 Fe0.1 Mn0.1 Ni0.3", "NbMoTaW", "Al0.5CoCrFeNi"]
    got = predictor.predict(comps, Condition.of("tension", 25, "cast"), [TASK])
    records = pl.DataFrame(
        {
            "task": TASK,
            "test_type": "tension",
            "temperature_c": 25.0,
            "processing": "CAST",
            "composition": comps,
            "value": got[f"{TASK}_hi"],  # on the screen's upper bound: score = the factor
        }
    )
    scores, inside = new_scores(records, predictor)[TASK]
    factor = predictor.bundle.task(TASK).factor(Processing.CAST)
    np.testing.assert_allclose(scores, factor, rtol=1e-9)
    assert inside.all()


def _replace_oof(root: Path, oof: pl.DataFrame) -> None:
    """Write ``oof`` as the bundle's out-of-fold table, its manifest entry updated."""
    blob = oof.write_csv().encode()
    (root / OOF_FILE).write_bytes(blob)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][OOF_FILE] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_update_scores_the_out_of_fold_rows_at_their_distance(tmp_path: Path) -> None:
    root = _with_distance_slope(tmp_path, 2.0)
    oof = pl.read_csv(root / OOF_FILE)
    _replace_oof(root, oof.drop("distance", strict=False))
    far = old_scores(load_task_bundle(root), TASK)  # no distance column: the widest scale
    _replace_oof(root, oof.with_columns(distance=pl.lit(0.0)))
    at_the_data = old_scores(load_task_bundle(root), TASK)
    np.testing.assert_allclose(at_the_data, far * np.exp(2.0 * DISTANCE_CAP))
