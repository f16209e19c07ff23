"""Classical baselines: the transformer's folds, honest tuning, cv_results schema, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from hea_screen.datasets.sources import load_paper_dataset
from hea_screen.errors import UserInputError
from pretrain.baseline_config import MODEL_LABELS, BaselineConfig
from pretrain.baselines import main, read_dataset, run_baselines
from pretrain.cv_results import CV_COLUMNS
from pretrain.folds import cv_splits

N_ROWS = 40
CONFIG = BaselineConfig(tuned_n_estimators=10, inner_folds=3)


def write_subset(run_dir: Path, target: str, n_rows: int = N_ROWS) -> pl.DataFrame:
    """The first rows of a paper set, laid out as RUN/finetune/<target>/dataset.csv."""
    data = load_paper_dataset(target).head(n_rows)
    frame = data.select(pl.col("canonical").alias("composition"), target)
    path = run_dir / "finetune" / target / "dataset.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path)
    return frame


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    write_subset(run, "uts_mpa")
    # a row of another experiment that the baselines must leave alone
    pl.DataFrame(
        {
            "experiment": ["other"],
            "model": ["bert"],
            "target": ["uts_mpa"],
            "fold": [0],
            "protocol": ["honest"],
            "mse": [0.5],
            "mae": [0.5],
            "r2": [0.5],
        }
    ).write_csv(run / "cv_results.csv")
    run_baselines(run, CONFIG)
    return run


def test_cv_results_schema_and_finite(run_dir: Path) -> None:
    cv = pl.read_csv(run_dir / "cv_results.csv")
    assert tuple(cv.columns) == CV_COLUMNS
    base = cv.filter(pl.col("experiment") == "baseline")
    expected_models = {m + s for m in MODEL_LABELS for s in ("", "-composition")}
    assert set(base["model"]) == expected_models
    assert set(base["protocol"]) == {"honest"} and set(base["target"]) == {"uts_mpa"}
    counts = base.group_by("model").agg(pl.col("fold").sort().alias("folds"))
    assert all(f.to_list() == [0, 1, 2, 3, 4] for f in counts["folds"])
    for col in ("mse", "mae", "r2"):
        assert np.isfinite(base[col].to_numpy()).all()
    assert (base["mse"] >= 0).all() and (base["mae"] >= 0).all()
    assert cv.filter(pl.col("experiment") == "other").height == 1


def test_predictions_on_the_shared_test_folds(run_dir: Path) -> None:
    dataset = pl.read_csv(run_dir / "finetune" / "uts_mpa" / "dataset.csv")
    splits = cv_splits(dataset.height)
    for model in ("random_forest", "extra_trees_tuned-composition"):
        pred = pl.read_csv(run_dir / "baselines" / "uts_mpa" / f"{model}_predictions.csv")
        assert pred.columns == ["fold", "row", "composition", "y_true", "y_pred"]
        assert pred["row"].to_list() == list(range(dataset.height))
        assert pred["y_true"].to_list() == dataset["uts_mpa"].to_list()
        assert pred["composition"].to_list() == dataset["composition"].to_list()
        for split in splits:
            rows = pred.filter(pl.col("fold") == split.fold)["row"].to_numpy()
            assert np.array_equal(np.sort(rows), split.test)


def test_metrics_are_on_training_fold_standardized_targets(run_dir: Path) -> None:
    y = pl.read_csv(run_dir / "finetune" / "uts_mpa" / "dataset.csv")["uts_mpa"].to_numpy()
    pred = pl.read_csv(run_dir / "baselines" / "uts_mpa" / "knn_predictions.csv")
    cv = pl.read_csv(run_dir / "cv_results.csv").filter(pl.col("model") == "knn").sort("fold")
    for split, row in zip(cv_splits(len(y)), cv.iter_rows(named=True)):
        mean, std = y[split.train_full].mean(), y[split.train_full].std()
        fold = pred.filter(pl.col("fold") == split.fold)
        t = (fold["y_true"].to_numpy() - mean) / std
        p = (fold["y_pred"].to_numpy() - mean) / std
        assert row["mse"] == pytest.approx(mean_squared_error(t, p))
        assert row["mae"] == pytest.approx(mean_absolute_error(t, p))
        assert row["r2"] == pytest.approx(r2_score(t, p))


def test_tuned_model_never_sees_test_rows(run_dir: Path) -> None:
    tuning = json.loads((run_dir / "baselines" / "uts_mpa" / "tuning.json").read_text())
    splits = {s.fold: s for s in cv_splits(N_ROWS)}
    records = [r for r in tuning["folds"] if r["model"] == "extra_trees_tuned"]
    assert sorted(r["fold"] for r in records) == [0, 1, 2, 3, 4]
    for record in records:
        split = splits[record["fold"]]
        seen = {r for s in record["inner_splits"] for r in s["train"] + s["val"]}
        assert seen.isdisjoint(split.test.tolist())
        assert seen == set(split.train_full.tolist())
        vals = [set(s["val"]) for s in record["inner_splits"]]
        assert len(vals) == 3 and set().union(*vals) == seen
        for s in record["inner_splits"]:
            assert set(s["train"]).isdisjoint(s["val"])
        assert set(record["best_params"]) == {"max_features", "min_samples_leaf"}


def test_rerun_replaces_its_rows(run_dir: Path) -> None:
    before = pl.read_csv(run_dir / "cv_results.csv")
    run_baselines(run_dir, BaselineConfig(models=("knn",), inputs=("features",)))
    after = pl.read_csv(run_dir / "cv_results.csv")
    assert after.height == before.height
    assert after.filter(pl.col("model") == "knn").height == 5


def test_config_from_mapping_and_repeats(tmp_path: Path) -> None:
    write_subset(tmp_path, "elongation_pct", n_rows=30)
    config = {
        "baselines": {
            "models": ["decision_tree"],
            "inputs": ["features"],
            "repeat_seeds": [43, 44],
        },
        "seed": 42,
    }
    rows = run_baselines(tmp_path, config)
    assert set(rows["model"]) == {"decision_tree"} and rows.height == 5
    repeats = pl.read_csv(tmp_path / "baselines" / "repeats.csv")
    assert sorted(set(repeats["seed"])) == [43, 44] and repeats.height == 10
    # another outer seed really gives other test folds
    assert not np.array_equal(cv_splits(30, seed=43)[0].test, cv_splits(30, seed=42)[0].test)


def test_user_mistakes(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="unknown baseline model 'svm'"):
        BaselineConfig(models=("svm",))
    with pytest.raises(UserInputError, match="input mode"):
        BaselineConfig(inputs=("pictures",))
    bad = tmp_path / "bad.csv"
    pl.DataFrame({"composition": ["CoCrFeNi"] * 12, "uts": ["a"] * 12}).write_csv(bad)
    with pytest.raises(UserInputError, match="not numeric"):
        read_dataset(bad, "uts")
    with pytest.raises(UserInputError, match="no target column 'uts_mpa'"):
        read_dataset(bad, "uts_mpa")
    with pytest.raises(UserInputError, match="no finetune"):
        run_baselines(tmp_path / "empty", CONFIG)


def test_standalone_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_paper_dataset("elongation_pct").head(25).select("composition", "elongation_pct")
    csv = tmp_path / "mine.csv"
    data.write_csv(csv)
    out = tmp_path / "out"
    argv = [
        "--data",
        str(csv),
        "--target",
        "elongation_pct",
        "--out",
        str(out),
        "--models",
        "knn",
        "random_forest",
        "--inputs",
        "features",
    ]
    assert main(argv) == 0
    cv = pl.read_csv(out / "cv_results.csv")
    assert cv.height == 10 and set(cv["model"]) == {"knn", "random_forest"}
    assert (out / "finetune" / "elongation_pct" / "dataset.csv").exists()
    assert main(["--data", str(csv), "--target", "nope", "--out", str(out)]) == 2
    assert "no target column 'nope'" in capsys.readouterr().err
