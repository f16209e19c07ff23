"""The ExtraTrees families with and without grain size (``extra_trees_plain``,
``extra_trees_blend``): ONNX export, monotonic blend, tuning keys that ``update`` refits with,
and a run that adds them to finished seeds without refitting what is there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from hea_screen.errors import UserInputError
from hea_screen.inference.design import DESIGN_COLUMNS, grain_columns, monotonic_constraints
from hea_screen.inference.families import make_estimator
from pretrain.cli import main, prepare_run
from pretrain.condition_folds import _onnx_bytes, onnx_predict
from pretrain.config import TrainConfig
from pretrain.tabular import fit_family, predict_proba

NEW = ("extra_trees_plain", "extra_trees_blend")
GRAIN = slice(len(DESIGN_COLUMNS) - 3, len(DESIGN_COLUMNS))


def _design(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs with real grain columns; a strength that rises with d^-1/2."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, len(DESIGN_COLUMNS))).astype(np.float32)
    sizes = np.where(rng.random(n) < 0.5, np.nan, rng.uniform(1, 300, n))
    x[:, GRAIN] = grain_columns(sizes, n)
    y = 300 * x[:, 0] + 400 * x[:, GRAIN.start] + rng.normal(0, 5, n)
    return x, y


@pytest.mark.parametrize("family", NEW)
def test_onnx_export_reproduces_scikit_learn(family: str) -> None:
    x, y = _design(80)
    model = make_estimator(family, False, 0, 8, monotonic_constraints()).fit(x, y)
    np.testing.assert_allclose(
        onnx_predict(_onnx_bytes(model, x, False), x, False), model.predict(x), rtol=1e-5
    )
    phase = (x[:, 0] * 3).astype(int)
    model = make_estimator(family, True, 0, 8).fit(x, phase)
    np.testing.assert_allclose(
        onnx_predict(_onnx_bytes(model, x, True), x, True), predict_proba(model, x), atol=1e-6
    )


def test_plain_trees_ignore_grain_size_and_the_blend_stays_monotonic() -> None:
    x, y = _design(200)
    probe = np.repeat(x[:20], 3, axis=0)
    probe[:, GRAIN] = grain_columns(np.tile([5.0, 50.0, 200.0], 20), 60)
    plain = make_estimator("extra_trees_plain", False, 0, 10, monotonic_constraints())
    by_size = plain.fit(x, y).predict(probe).reshape(20, 3)
    assert np.all(by_size == by_size[:, :1])
    blend = make_estimator("extra_trees_blend", False, 0, 10, monotonic_constraints())
    fine, mid, coarse = blend.fit(x, y).predict(probe).reshape(20, 3).T
    assert np.all(fine >= mid) and np.all(mid >= coarse) and np.any(fine > coarse)


@pytest.mark.parametrize("family", NEW)
def test_tuned_settings_refit_as_update_does(family: str) -> None:
    x, y = _design(120)
    fit = fit_family(
        family,
        x[:80],
        y[:80],
        x[80:],
        y[80:],
        classify=False,
        seed=3,
        n_estimators=6,
        monotonic=monotonic_constraints(),
    )
    assert fit.val_losses.shape == (40,) and fit.val_loss == np.mean(fit.val_losses)
    params = json.loads(json.dumps(fit.params))  # as recorded in the parquet and manifest
    assert params and all(k.endswith(("max_features", "min_samples_leaf")) for k in params)
    refit = make_estimator(family, False, 3, 6, monotonic_constraints()).set_params(**params)
    refit.fit(np.vstack([x[:80], x[80:]]), np.concatenate([y[:80], y[80:]]))
    np.testing.assert_allclose(refit.predict(x), fit.model.predict(x))


def _config(path: Path, families: list[str]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "conditions": {
                    "seeds": [0, 1],
                    "folds": 3,
                    "families": families,
                    "n_estimators": 4,
                    "max_alloys": 400,
                    "loco_clusters": 3,
                    "transformer": False,
                }
            }
        )
    )
    return path


def test_added_families_are_fitted_alone_and_appended(tmp_path: Path, fitted: list[str]) -> None:
    run = tmp_path / "run"
    old = _config(tmp_path / "old.yaml", ["knn"])
    assert main(["conditions", "--config", str(old), "--out", str(run), "--quiet"]) == 0
    out = run / "conditions"
    before = {p.name: pl.read_parquet(p) for p in out.glob("*.parquet")}
    assert set(before) == {"seed_0.parquet", "seed_1.parquet", "loco.parquet"}

    fitted.clear()
    new = _config(tmp_path / "new.yaml", ["knn", *NEW])
    assert main(["conditions", "--config", str(new), "--out", str(run), "--quiet"]) == 0
    assert fitted and set(fitted) == set(NEW)
    for name, frame in before.items():
        after = pl.read_parquet(out / name)
        assert set(after["model"]) == {"knn", *NEW}
        assert after.filter(pl.col("model") == "knn").equals(frame)
    for family in NEW:
        assert sorted((out / "models" / family).glob("*/fold_*.onnx"))
    selection = json.loads((out / "selection.json").read_text())
    assert selection
    assert "extra_trees_blend" in (run / "config.yaml").read_text()

    fitted.clear()
    assert main(["conditions", "--config", str(new), "--out", str(run), "--quiet"]) == 0
    assert fitted == []


def test_a_run_accepts_added_families_only(tmp_path: Path) -> None:
    def config(**conditions: object) -> TrainConfig:
        base = {"seeds": [0, 1], "families": ["knn"], **conditions}
        return TrainConfig.from_mapping({"conditions": base})

    prepare_run(tmp_path, config())
    prepare_run(tmp_path, config(families=["knn", "extra_trees_plain"]))
    with pytest.raises(UserInputError, match="different config"):
        prepare_run(tmp_path, config(families=["extra_trees_plain"]))
    with pytest.raises(UserInputError, match="different config"):
        prepare_run(tmp_path, config(families=["knn", "extra_trees_plain"], folds=3))
