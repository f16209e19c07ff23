"""``conditions.costly_families`` on the first ``costly_partitions`` partitions only: what a
fresh run fits and reports, what a resumed run adds, and that a cache holding more is
reported as the config asks."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from hea_screen.errors import UserInputError
from pretrain.cli import main, prepare_run
from pretrain.config import ConfigError, TrainConfig

#: A cheap family standing in for the costly GP (the logic does not depend on which).
COSTLY = "random_forest"
FAMILIES = ["knn", COSTLY]


def _config(path: Path, **conditions: object) -> Path:
    base = {
        "seeds": [0, 1, 2],
        "folds": 3,
        "families": FAMILIES,
        "n_estimators": 4,
        "max_alloys": 400,
        "loco_clusters": 3,
        "transformer": False,
    }
    path.write_text(yaml.safe_dump({"conditions": {**base, **conditions}}))
    return path


def _costly(path: Path) -> Path:
    return _config(path, costly_families=[COSTLY], costly_partitions=2)


def _run(config: Path, run: Path) -> Path:
    assert main(["conditions", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    return run / "conditions"


def _models(path: Path) -> set[str]:
    return set(pl.read_parquet(path)["model"])


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``RUN/conditions`` of a fresh run with the costly family on 2 of 3 partitions."""
    tmp = tmp_path_factory.mktemp("costly")
    return _run(_costly(tmp / "costly.yaml"), tmp / "run")


def test_a_costly_family_runs_on_the_first_partitions_and_the_cluster_folds(
    fresh: Path,
) -> None:
    assert _models(fresh / "seed_0.parquet") == _models(fresh / "seed_1.parquet") == {*FAMILIES}
    assert _models(fresh / "seed_2.parquet") == {"knn"}
    assert _models(fresh / "loco.parquet") == {*FAMILIES}
    metrics = pl.read_csv(fresh / "metrics.csv", infer_schema_length=None)
    grouped = metrics.filter(pl.col("protocol") == "grouped")
    seeds = {m: set(grouped.filter(pl.col("model") == m)["seed"]) for m in FAMILIES}
    assert seeds == {"knn": {0, 1, 2}, COSTLY: {0, 1}}
    assert set(pl.read_csv(fresh / "oof_predictions.csv")["partition"]) == {0, 1, 2}
    summary = (fresh / "summary.md").read_text()
    assert "Random Forest (2 partitions)" in summary
    assert "K-NN (3 partitions)" not in summary and "K-NN" in summary
    selection = json.loads((fresh / "selection.json").read_text())
    assert all(COSTLY in s["validation_loss"] for s in selection.values())


def _same_report(got: Path, want: Path) -> None:
    """The reported tables and choices agree (row order and last-bit sums aside)."""
    for name in ("metrics.csv", "oof_predictions.csv"):
        a, b = (pl.read_csv(d / name, infer_schema_length=None) for d in (got, want))
        assert_frame_equal(a.sort(a.columns), b.sort(b.columns), check_exact=False)
    a, b = (json.loads((d / "selection.json").read_text()) for d in (got, want))
    assert {t: s["model"] for t, s in a.items()} == {t: s["model"] for t, s in b.items()}
    for task, choice in a.items():
        assert choice["validation_loss"] == pytest.approx(b[task]["validation_loss"])
    a, b = (json.loads((d / "calibration.json").read_text()) for d in (got, want))
    assert {m: set(t) for m, t in a.items()} == {m: set(t) for m, t in b.items()}


def test_resumed_runs_fit_what_the_limit_allows_and_report_what_the_config_asks(
    fresh: Path, tmp_path: Path, fitted: list[str]
) -> None:
    run = tmp_path / "run"
    out = _run(_config(tmp_path / "knn.yaml", families=["knn"]), run)
    knn = pl.read_parquet(out / "seed_2.parquet")

    # adding the costly family: fitted on the first 2 partitions and the cluster folds only
    fitted.clear()
    _run(_costly(tmp_path / "costly.yaml"), run)
    assert set(fitted) == {COSTLY}
    assert _models(out / "seed_1.parquet") == {*FAMILIES}
    assert pl.read_parquet(out / "seed_2.parquet").equals(knn)
    _same_report(out, fresh)

    # no limit: the third partition gets it, nothing else is refitted
    fitted.clear()
    _run(_config(tmp_path / "all.yaml"), run)
    assert set(fitted) == {COSTLY}
    assert _models(out / "seed_2.parquet") == {*FAMILIES}
    metrics = pl.read_csv(out / "metrics.csv", infer_schema_length=None)
    assert set(
        metrics.filter(pl.col("model") == COSTLY, pl.col("protocol") == "grouped")["seed"]
    ) == {0, 1, 2}
    assert "(2 partitions)" not in (out / "summary.md").read_text()

    # the limit again: the cache holds more than asked, reported as a fresh run would
    fitted.clear()
    _run(_costly(tmp_path / "costly.yaml"), run)
    assert fitted == []
    assert _models(out / "seed_2.parquet") == {*FAMILIES}
    _same_report(out, fresh)
    assert "Random Forest (2 partitions)" in (out / "summary.md").read_text()


def _conditions(**keys: object) -> TrainConfig:
    base = {"seeds": [0, 1, 2], "families": FAMILIES}
    return TrainConfig.from_mapping({"conditions": {**base, **keys}})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"costly_families": ["gp_noise"]},
            "conditions.costly_families: gp_noise not in conditions.families; choose from "
            "knn, random_forest",
        ),
        (
            {"costly_families": ["knn"], "costly_partitions": 4},
            "conditions.costly_partitions 4: need 2 to 3",
        ),
        ({"costly_partitions": 1}, "conditions.costly_partitions 1: need 2 to 3"),
    ],
)
def test_bad_costly_keys_are_refused(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _conditions(**keys)


def test_defaults_fit_every_family_on_every_partition() -> None:
    config = _conditions().conditions
    assert config is not None and config.costly_families == []
    assert [config.partition_families(i) for i in range(3)] == [FAMILIES] * 3


def test_a_run_accepts_a_changed_limit_but_no_other_change(tmp_path: Path) -> None:
    prepare_run(tmp_path, _conditions())
    prepare_run(tmp_path, _conditions(costly_families=[COSTLY], costly_partitions=2))
    prepare_run(tmp_path, _conditions(costly_families=[COSTLY], costly_partitions=3))
    with pytest.raises(UserInputError, match="different config"):
        prepare_run(tmp_path, _conditions(costly_families=[COSTLY], folds=3))


def test_metrics_columns_keep_their_order_whatever_task_comes_first() -> None:
    """``metrics.csv`` columns do not depend on the order ``group_by`` yields the tasks in."""
    from pretrain.condition_eval import METRIC_COLUMNS, metrics_table

    rows = {
        "model": ["m"] * 8,
        "task": ["phase"] * 4 + ["uts_tension_mpa"] * 4,
        "seed": [0] * 8,
        "temperature_c": [25.0] * 8,
        "processing": ["CAST"] * 8,
        "measured": [0.0, 1.0, 2.0, 1.0, 500.0, 600.0, 700.0, 800.0],
        "predicted": [0.0, 1.0, 1.0, 1.0, 510.0, 590.0, 720.0, 790.0],
    }
    for order in (slice(None), slice(None, None, -1)):
        frame = pl.DataFrame({k: v[order] for k, v in rows.items()})
        assert tuple(metrics_table(frame, "grouped").columns) == METRIC_COLUMNS


def test_metrics_keep_the_phase_accuracy_whatever_row_it_comes_at() -> None:
    """Phase rows met after the first 100 metric rows keep their accuracy (the frame's schema
    is every row's keys, not the first rows')."""
    from pretrain.condition_eval import metrics_table

    seeds = 60
    measured = [500.0, 600.0, 700.0, 800.0]
    frame = pl.DataFrame(
        {
            "model": "m",
            "task": ["uts_tension_mpa"] * 4 * seeds + ["phase"] * 4,
            "seed": [s for s in range(seeds) for _ in range(4)] + [0] * 4,
            "temperature_c": 25.0,
            "processing": "CAST",
            "measured": measured * seeds + [0.0, 1.0, 2.0, 1.0],
            "predicted": [510.0, 590.0, 720.0, 790.0] * seeds + [0.0, 1.0, 1.0, 1.0],
        }
    )
    table = metrics_table(frame, "grouped")
    phase = table.filter(pl.col("task") == "phase", pl.col("slice") == "25C")
    assert phase["accuracy"].to_list() == [0.75]
