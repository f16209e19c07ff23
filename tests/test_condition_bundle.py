"""The condition-aware run, its format-2 bundle and the predictor that reads it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from hea_screen.compositions.features import featurize
from hea_screen.conditions import PHASE, TASKS, Condition, Processing
from hea_screen.errors import BundleError, UserInputError
from hea_screen.inference.bundle import OOF_FILE, load_task_bundle
from hea_screen.inference.bundle_files import default_bundle_path
from hea_screen.inference.design import design_matrix
from hea_screen.inference.intervals import Ensemble, conformal_quantile
from hea_screen.inference.predictor import TaskPredictor
from pretrain.condition_data import RECORD_SCHEMA
from pretrain.condition_eval import select

pytestmark = pytest.mark.slow

OOF_COLUMNS = [
    "composition", "property", "test_type", "temperature_c", "processing", "grain_size_um",
    "partition", "fold", "measured", "predicted", "predicted_mean", "centre", "spread",
    "interval_lo", "interval_hi",
]  # fmt: skip


def test_run_reports_every_task_per_protocol(tiny_run: Path) -> None:
    metrics = pl.read_csv(tiny_run / "conditions" / "metrics.csv")
    assert set(metrics["protocol"]) == {"grouped", "loco"}
    grouped = metrics.filter(pl.col("protocol") == "grouped", pl.col("slice") == "25C")
    assert set(grouped["task"]) == {t.name for t in TASKS}
    assert set(grouped["seed"]) == {0, 1}
    regression = grouped.filter(pl.col("task") != PHASE.name)
    assert regression.select(pl.col("r2", "mae", "spearman").is_finite().all()).row(0) == (
        True, True, True,
    )  # fmt: skip
    assert grouped.filter(pl.col("task") == PHASE.name)["accuracy"].is_between(0, 1).all()


def test_selection_reads_validation_loss_only() -> None:
    rows = []
    for model, val_loss, error in (("good_on_val", 1.0, 100.0), ("good_on_test", 2.0, 0.0)):
        for fold in range(3):
            rows.append((model, 0, fold, fold, "uts_tension_mpa", 500.0 + error, val_loss, "{}"))
    frame = pl.DataFrame(rows, schema=RECORD_SCHEMA, orient="row")
    assert select(frame)["uts_tension_mpa"]["model"] == "good_on_val"


def test_conformal_quantile() -> None:
    scores = np.arange(1.0, 11.0)  # 10 scores: the ceil(11 * 0.9) = 10th smallest
    assert conformal_quantile(scores, 0.9) == 10.0
    assert conformal_quantile(scores, 0.5) == 6.0


def test_bundle_manifest_says_what_ships_and_how_well(condition_bundle: Path) -> None:
    manifest = json.loads((condition_bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["interval"] == 0.9
    for name, info in manifest["tasks"].items():
        assert info["model"] in info["cv"] and info["selection"]["model"] == info["model"]
        if name != PHASE.name:
            cal = info["calibration"]
            assert cal["factor"] > 0 and 0 <= cal["coverage"] <= 1
            assert cal["space"] == ("logit" if info["unit"] == "%" else "log")
            assert set(cal["coverage_by_distance"]) == {"< 0.1", "0.1-0.25", ">= 0.25"}
            assert cal["distance_slope"] >= 0 and cal["distance_cap"] > 0
            assert {"rows", "groups", "sd_if_calibrated"} < set(cal["coverage_by_route"]["CAST"])
    text = json.dumps(manifest)
    assert '"/work' not in text and '"/tmp' not in text  # no absolute path of the builder


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_shipped_fold_models_reproduce_their_out_of_fold_predictions(
    which: str, request: pytest.FixtureRequest
) -> None:
    path = default_bundle_path() if which == "shipped" else request.getfixturevalue(
        "condition_bundle"
    )
    bundle = load_task_bundle(path)
    oof = pl.read_csv(path / OOF_FILE)
    assert oof.columns[: len(OOF_COLUMNS)] == OOF_COLUMNS
    shipped = oof.filter(pl.col("partition") == bundle.manifest["protocol"]["shipped_seed"])
    checked = 0
    for model in bundle.tasks:
        if model.task is PHASE or model.kind != "tabular":
            continue
        rows = shipped.filter(pl.col("property") == model.task.name)
        for fold, rel in enumerate(model.files):
            part = rows.filter(pl.col("fold") == fold)
            x = design_matrix(
                featurize(part["composition"].to_list()),
                part["temperature_c"].to_numpy(),
                part["processing"].to_list(),
                part["grain_size_um"].fill_null(np.nan).to_numpy(),
            )
            session = ort.InferenceSession(str(path / rel))
            got = session.run(None, {session.get_inputs()[0].name: x})[0].reshape(-1)
            np.testing.assert_allclose(got, part["predicted"].to_numpy(), rtol=1e-5)
            checked += part.height
    assert checked > 100


def test_out_of_fold_intervals_are_the_screens_at_each_rows_distance(
    condition_bundle: Path,
) -> None:
    bundle = load_task_bundle(condition_bundle)
    oof = pl.read_csv(condition_bundle / OOF_FILE)
    assert oof.columns[-1] == "distance" and oof["distance"].min() > 0  # another group's alloy
    for model in bundle.tasks:
        if model.task is PHASE:
            continue
        rows = oof.filter(pl.col("property") == model.task.name)
        ens = Ensemble(*(rows[c].to_numpy() for c in ("predicted_mean", "centre", "spread")))
        factor = np.array([model.factor(Processing.parse(p)) for p in rows["processing"]])
        lo, hi = ens.bounds(
            factor, model.interval_space, model.normalizer, rows["distance"].to_numpy()
        )
        np.testing.assert_allclose(lo, rows["interval_lo"].to_numpy(), rtol=1e-9)
        np.testing.assert_allclose(hi, rows["interval_hi"].to_numpy(), rtol=1e-9)


def test_predictor_columns_carry_task_and_interval(condition_bundle: Path) -> None:
    predictor = TaskPredictor(condition_bundle)
    out = predictor.predict(["CoCrFeMnNi", "Al0.5CoCrFeNi"], Condition())
    for name in ("uts_tension_mpa", "elongation_tension_pct", "hardness_hv"):
        mean, lo, hi = (out[f"{name}_{s}"].to_numpy() for s in ("mean", "lo", "hi"))
        assert np.all(lo <= mean) and np.all(mean <= hi) and np.all(lo > 0)
    assert (out["elongation_tension_pct_hi"] < 100).all()  # logit space: physical bounds
    probs = out.select(pl.col("^phase_.*_prob$")).to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert out["composition"][0] == "Co0.2 Cr0.2 Fe0.2 Mn0.2 Ni0.2"
    assert "uts_mpa_mean" not in out.columns


def test_condition_changes_predictions_and_extrapolation_is_flagged(
    condition_bundle: Path,
) -> None:
    predictor = TaskPredictor(condition_bundle)
    room = predictor.predict(["CoCrFeMnNi"], Condition(), tasks=["ys_compression_mpa"])
    assert room["extrapolated_tasks"][0] == ""
    hot = predictor.predict(
        ["CoCrFeMnNi"], Condition.of("compression", 5000, "cast"), tasks=["ys_compression_mpa"]
    )
    assert hot["extrapolated_tasks"][0] == "ys_compression_mpa"
    with pytest.raises(UserInputError, match="5000 °C outside"):
        predictor.check_condition(Condition.of("compression", 5000, "cast"), ["ys_compression_mpa"])
    with pytest.raises(BundleError, match="has no model for 'uts_mpa'"):
        predictor.predict(["CoCrFeMnNi"], tasks=["uts_mpa"])


def _tampered(src: Path, tmp_path: Path, edit) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m["tasks"]["hardness_hv"]["calibration"].update(factor=-1), "conformal factor"),
        (
            lambda m: m["tasks"]["hardness_hv"]["folds"][1].update(
                file=m["tasks"]["hardness_hv"]["folds"][0]["file"]
            ),
            "fold 1 points at",
        ),
        (
            lambda m: m["tasks"]["hardness_hv"]["conditions"].update(temperature_c=[25]),
            r"\[lo, hi\]",
        ),
        (lambda m: m.update(design_columns=m["design_columns"][::-1]), "design columns"),
    ],
)
def test_tampered_manifest_is_refused(condition_bundle: Path, tmp_path: Path, edit, match) -> None:
    with pytest.raises(BundleError, match=match):
        load_task_bundle(_tampered(condition_bundle, tmp_path, edit))


def test_nan_in_manifest_is_refused(condition_bundle: Path, tmp_path: Path) -> None:
    dst = tmp_path / "bundle"
    shutil.copytree(condition_bundle, dst)
    text = (dst / "manifest.json").read_text().replace('"interval": 0.9', '"interval": NaN')
    (dst / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match="NaN"):
        load_task_bundle(dst)


def test_a_task_that_picks_the_transformer_ships_its_fold_networks(
    tiny_run: Path, tmp_path: Path
) -> None:
    """Where validation picks the transformer, the bundle holds its ONNX fold networks and the
    tokenizer; the predictor's mean equals the torch fold models' mean at the condition."""
    from export.condition_bundle import write_condition_bundle
    from pretrain.multitask import OUTPUT_TASKS, predict_outputs

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    selection_path = run / "conditions" / "selection.json"
    selection = json.loads(selection_path.read_text())
    for name in ("ys_compression_mpa", "phase"):
        selection[name]["model"] = "transformer"  # as if validation had picked it
    selection_path.write_text(json.dumps(selection))
    out = tmp_path / "bundle"
    manifest = write_condition_bundle(run, out, allow_dirty=True)
    assert manifest["tasks"]["ys_compression_mpa"]["kind"] == "transformer"
    assert manifest["tasks"]["hardness_hv"]["kind"] == "tabular"
    predictor = TaskPredictor(out)
    condition = Condition.of("compression", 25, "cast")
    texts = ["CoCrFeMnNi", "Al0.5CoCrFeNi", "HfNbTaTiZr"]
    got = predictor.predict(texts, condition, tasks=["ys_compression_mpa", "phase", "hardness_hv"])
    folds = sorted((run / "conditions" / "transformer" / "seed_0").glob("fold_*"))
    from hea_screen.compositions.table import CompositionTable

    table = CompositionTable.from_compositions(texts)
    torch_out = np.stack([predict_outputs(f, run / "tokenizer", table, None, condition)
                          for f in folds])
    j = OUTPUT_TASKS.index("ys_compression_mpa")
    np.testing.assert_allclose(
        got["ys_compression_mpa_mean"].to_numpy(), torch_out[:, :, j].mean(axis=0), rtol=1e-4
    )
    k = OUTPUT_TASKS.index("phase_BCC")
    np.testing.assert_allclose(
        got["phase_bcc_prob"].to_numpy(), torch_out[:, :, k].mean(axis=0), rtol=1e-4
    )
    assert (out / "transformer" / "fold_0.onnx").is_file() and (out / "tokenizer").is_dir()

    def inflate(m: dict) -> None:
        m["tasks"]["ys_compression_mpa"]["folds"][1]["scaler"]["mean"] = 99999.0

    with pytest.raises(BundleError, match="fold 1 scaler"):
        load_task_bundle(_tampered(out, tmp_path / "tampered", inflate))
