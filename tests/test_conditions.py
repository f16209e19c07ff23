"""Measurements with their conditions: the typed vocabulary, the MPEA measurement table, the
design matrix shared by training and screening."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import hea_screen
from hea_screen.conditions import (
    PHASES,
    TASKS,
    Condition,
    Processing,
    TestType,
    task,
    task_for,
)
from hea_screen.datasets.measurements import COLUMNS, measurements
from hea_screen.datasets.sources import load_mpea, load_paper_dataset
from hea_screen.errors import UserInputError
from hea_screen.inference.design import DESIGN_COLUMNS, condition_matrix, design_matrix


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return measurements()


def test_vocabulary_names_property_and_test_type() -> None:
    assert task_for("uts", TestType.TENSION).name == "uts_tension_mpa"
    assert task_for("elongation", TestType.COMPRESSION).name == "fracture_strain_compression_pct"
    assert task_for("hardness", TestType.COMPRESSION).name == "hardness_hv"
    assert len({t.name for t in TASKS}) == len(TASKS)
    with pytest.raises(UserInputError, match="unknown property 'toughness'"):
        task_for("toughness", TestType.TENSION)
    with pytest.raises(UserInputError, match="uts_tension_mpa"):
        task("uts_mpa")


def test_conditions_parse_user_values_and_refuse_bad_ones() -> None:
    c = Condition.of("T", "600", "as-cast")
    assert (c.test_type, c.temperature_c, c.processing) == (
        TestType.TENSION,
        600.0,
        Processing.CAST,
    )
    assert Condition.of(TestType.COMPRESSION, 25, Processing.ANNEAL).describe() == {
        "test_type": "compression",
        "temperature_c": 25,
        "processing": "ANNEAL",
        "grain_size_um": None,
    }
    for bad, match in (
        (("shear", 25, "cast"), "unknown test type 'shear'"),
        (("tension", "hot", "cast"), "'hot' is not a number"),
        (("tension", float("nan"), "cast"), "finite"),
        (("tension", -300, "cast"), "absolute zero"),
        (("tension", 25, "forged"), "unknown processing route 'forged'"),
    ):
        with pytest.raises(UserInputError, match=match):
            Condition.of(*bad)


def test_measurement_counts_match_the_database(table: pl.DataFrame) -> None:
    """DATA.md: UTS 303 T / 236 C, YS 324 / 743, elongation 300 / 319, HV 530, phase 1,545."""
    counts = dict(table.group_by("task").len().iter_rows())
    assert counts == {
        "uts_tension_mpa": 303,
        "uts_compression_mpa": 236,
        "ys_tension_mpa": 324,
        "ys_compression_mpa": 743,
        "elongation_tension_pct": 300,
        "fracture_strain_compression_pct": 319,
        "hardness_hv": 530,
        "phase": 1545,
    }
    assert tuple(table.columns) == COLUMNS
    room = table.filter(pl.col("temperature_c") == 25)
    alloys = dict(room.group_by("task").agg(pl.col("canonical").n_unique()).iter_rows())
    assert (alloys["uts_tension_mpa"], alloys["ys_tension_mpa"]) == (98, 90)


def test_a_compressive_value_never_lands_in_a_tensile_task(table: pl.DataFrame) -> None:
    mpea = load_mpea().with_row_index("mpea_row").select("mpea_row", "test_type")
    joined = table.join(mpea, on="mpea_row")
    for t in TASKS:
        if t.test_type is None:
            continue
        codes = set(joined.filter(pl.col("task") == t.name)["test_type"].unique())
        assert codes == {t.test_type.mpea_code}, t.name


def test_the_paper_sets_add_no_measurement(table: pl.DataFrame) -> None:
    """Every paper row is an MPEA measurement of the same alloy and value; the UTS set is 53
    tension + 105 compression rows, the elongation set 49 + 149."""
    for target, split in (("uts_mpa", (53, 105)), ("elongation_pct", (49, 149))):
        tasks = [t.name for t in TASKS if t.mpea_column == target]
        ours = (
            table.filter(pl.col("task").is_in(tasks))
            .select("canonical", pl.col("value").alias(target), "task")
            .unique(["canonical", target])
        )
        joined = load_paper_dataset(target).join(ours, on=["canonical", target], how="left")
        assert joined["task"].null_count() == 0
        n_tension = joined.filter(pl.col("task").str.contains("tension")).height
        assert (n_tension, joined.height - n_tension) == split


def test_phase_values_index_the_phase_classes(table: pl.DataFrame) -> None:
    phase = table.filter(pl.col("task") == "phase")["value"]
    assert set(phase.unique()) == set(map(float, range(len(PHASES))))


def test_design_matrix_columns_and_condition_broadcast() -> None:
    feats = hea_screen.featurize(["CoCrFeNi", "Al0.5CoCrFeNi"])
    x = design_matrix(feats, np.array([25.0, 800.0]), ["cast", Processing.ANNEAL])
    assert x.shape == (2, len(DESIGN_COLUMNS)) and x.dtype == np.float32
    col = {name: j for j, name in enumerate(DESIGN_COLUMNS)}
    assert x[1, col["temperature_c"]] == 800.0
    assert x[0, col["processing_CAST"]] == 1 and x[1, col["processing_ANNEAL"]] == 1
    assert x[:, col["processing_CAST"] : col["grain_inv_sqrt"]].sum() == 2
    assert (x[:, col["grain_missing"]] == 1).all() and (x[:, col["grain_inv_sqrt"]] == 0).all()
    np.testing.assert_allclose(x[:, col["vec"]], feats["vec"].to_numpy(), rtol=1e-6)
    at = condition_matrix(feats, Condition.of("compression", 600, "wrought"))
    assert (at[:, col["temperature_c"]] == 600).all()
    assert (at[:, col["processing_WROUGHT"]] == 1).all()
    with pytest.raises(UserInputError, match="3 processing routes for 2 rows"):
        design_matrix(feats, 25.0, ["cast"] * 3)


def test_spec_condition_section() -> None:
    from hea_screen.errors import SpaceError
    from hea_screen.screening.spec import spec_from_dict

    base = {"space": {"elements": ["Co", "Cr", "Fe", "Ni"]}}
    spec = spec_from_dict(
        {**base, "condition": {"test": "compression", "temperature": 600, "processing": "anneal"}}
    )
    assert spec.ranking.condition == Condition.of("compression", 600, "anneal")
    assert spec.ranking.describe()["condition"]["temperature_c"] == 600
    assert spec_from_dict(base).ranking.condition == Condition()
    for bad, match in (
        ({"test": "shear"}, "unknown test type 'shear'"),
        ({"temperature": "1e999"}, "finite"),
        ({"pressure": 1}, "unknown key 'pressure' in condition"),
    ):
        with pytest.raises((SpaceError, UserInputError), match=match):
            spec_from_dict({**base, "condition": bad})


def test_light_install_screens_with_the_shipped_bundle() -> None:
    """No torch, transformers, scikit-learn, skl2onnx, scipy or matplotlib on the screening
    path: the shipped condition-aware bundle loads, predicts and ranks without them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ['torch', 'transformers', 'sklearn', 'skl2onnx', 'optimum', 'matplotlib',"
        " 'scipy']: sys.modules[m] = None\n"
        "import hea_screen\n"
        "out = hea_screen.load_model().predict(['CoCrFeMnNi'])\n"
        "assert out['uts_tension_mpa_mean'][0] > 0\n"
        "from hea_screen.cli import main\n"
        "sys.exit(main(['--elements', 'Co,Cr,Fe,Ni', '--step', '0.1', '--top', '3',"
        " '--quiet', '--workers', '1', '--show', '0']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_grain_size_is_an_optional_checked_condition() -> None:
    c = Condition.of("tension", 25, "wrought", "25")
    assert c.grain_size_um == 25.0 and "grain size 25 µm" in str(c)
    assert c.describe()["grain_size_um"] == 25.0
    assert Condition().grain_size_um is None
    for bad in (-5, 0, float("nan"), float("inf"), 1e6, "fine", True):
        with pytest.raises(UserInputError, match="grain size"):
            Condition.of("tension", 25, "cast", bad)


def test_grain_columns_of_the_design_matrix() -> None:
    feats = hea_screen.featurize(["CoCrFeMnNi"] * 3)
    x = design_matrix(feats, 25.0, "wrought", np.array([4.0, 100.0, np.nan]))
    col = {name: j for j, name in enumerate(DESIGN_COLUMNS)}
    np.testing.assert_allclose(x[:, col["grain_inv_sqrt"]], [0.5, 0.1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(x[:, col["grain_log10"]], [np.log10(4), 2.0, 0.0], rtol=1e-6)
    assert x[:, col["grain_missing"]].tolist() == [0.0, 0.0, 1.0]
    stated = condition_matrix(feats, Condition.of("tension", 25, "wrought", 4.0))
    np.testing.assert_array_equal(stated[0], x[0])


def test_measurements_carry_mpea_grain_sizes(table: pl.DataFrame) -> None:
    tensile = table.filter(pl.col("task") == "uts_tension_mpa", pl.col("temperature_c") == 25)
    sized = tensile["grain_size_um"].drop_nulls()
    assert 100 <= sized.len() < tensile.height and (sized > 0).all()


def test_nearest_measured_alloy_matches_the_stated_condition() -> None:
    import json

    from hea_screen.compositions.table import CompositionTable
    from hea_screen.inference.applicability import TrainingSet

    ts = TrainingSet.from_json(
        json.dumps(
            {
                "targets": {
                    "uts_tension_mpa": {
                        "compositions": ["Co0.5 Ni0.5", "Co0.25 Cr0.25 Fe0.25 Ni0.25"],
                        "values": [500.0, 700.0],
                        "measured_at": [
                            {"CAST|room": 500.0},
                            {"WROUGHT|room": 650.0, "WROUGHT|cryogenic": 900.0},
                        ],
                    }
                }
            }
        )
    )
    table = CompositionTable.from_compositions(["CoNi"])
    cast = ts.applicability(table, Condition.of("tension", 25, "cast")).row(0, named=True)
    assert cast["uts_tension_mpa_nearest_composition"] == "Co0.5 Ni0.5"
    assert cast["uts_tension_mpa_nearest_condition"] == "cast, room"
    cryo = ts.applicability(table, Condition.of("tension", -196, "wrought")).row(0, named=True)
    assert cryo["uts_tension_mpa_nearest_measured"] == 900.0
    assert cryo["uts_tension_mpa_nearest_distance"] == pytest.approx(1.0)
    hot = ts.applicability(table, Condition.of("tension", 800, "anneal")).row(0, named=True)
    assert hot["uts_tension_mpa_nearest_composition"] is None
    assert hot["uts_tension_mpa_nearest_distance"] is None
    assert hot["uts_tension_mpa_nearest_condition"] == "none measured at anneal, hot"
    anywhere = ts.applicability(table).row(0, named=True)  # no condition: every alloy
    assert anywhere["uts_tension_mpa_nearest_measured"] == 500.0


def test_finer_grains_predict_higher_strength_with_the_shipped_model() -> None:
    from hea_screen.inference.bundle_files import default_bundle_path
    from hea_screen.inference.predictor import TaskPredictor

    model = TaskPredictor(default_bundle_path())
    alloys = ["CoCrFeMnNi", "CoCrFeNi", "Al0.3CoCrFeNi", "CoCrNi"]
    for name in ("uts_tension_mpa", "ys_tension_mpa"):
        size = model.bundle.task(name).coverage.grain_size_um
        assert size is not None and size[0] < 5 and size[1] > 200
        got = {
            d: model.predict(alloys, Condition.of("tension", 25, "wrought", d), [name])
            for d in (5.0, 50.0, 200.0)
        }
        fine, mid, coarse = (got[d][f"{name}_mean"].to_numpy() for d in (5.0, 50.0, 200.0))
        assert np.all(fine >= mid) and np.all(mid >= coarse) and np.any(fine > coarse)
