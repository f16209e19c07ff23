"""The multi-task, condition-aware BERT member (pretrain/multitask.py) and its ONNX export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
import torch
from transformers import BertForMaskedLM

from export.onnx_export import INPUT_NAMES, check_graph, export_multitask_fold
from hea_screen import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import PHASE, PHASES, REGRESSION_TASKS, Condition, TestType
from hea_screen.datasets.measurements import COLUMNS, measurements
from hea_screen.datasets.sources import load_mpea
from hea_screen.errors import UserInputError
from hea_screen.inference.tokens import (
    CONDITION_TOKENS,
    GRAIN_TOKENS,
    FeatureBins,
    TokenEncoder,
    build_tokenizer,
    vocabulary,
)
from pretrain.architecture import bert_config
from pretrain.config import ModelConfig
from pretrain.folds import Split
from pretrain.multitask import (
    HISTORY_FILE,
    MODEL_DIR,
    N_REGRESSION,
    OUTPUT_TASKS,
    SCALERS_FILE,
    FoldFit,
    MultitaskSettings,
    aggregate,
    fit_fold,
    load_encoder,
    load_fold,
    multitask_loss,
    predict_outputs,
    predict_rows,
)
from pretrain.protocol import grouped_splits

pytestmark = pytest.mark.slow

COLUMN = {name: j for j, name in enumerate(OUTPUT_TASKS)}
TENSION = [t.name for t in REGRESSION_TASKS if t.test_type is TestType.TENSION]
COMPRESSION = [t.name for t in REGRESSION_TASKS if t.test_type is TestType.COMPRESSION]
SETTINGS = MultitaskSettings(
    epochs=4, patience=2, min_epochs=1, batch_size=16, learning_rate=1e-3, seed=7, threads=1
)


def compression_only(frame: pl.DataFrame) -> set[str]:
    """Alloys with a compressive value and no tensile value anywhere in ``frame``."""
    per_alloy = frame.group_by("canonical").agg(
        pl.col("task").is_in(COMPRESSION).any().alias("c"),
        pl.col("task").is_in(TENSION).any().alias("t"),
    )
    return set(per_alloy.filter(pl.col("c") & ~pl.col("t"))["canonical"].to_list())


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    """About 150 measurement rows: 10 alloys with tensile tests, 12 compression-only ones."""
    all_rows = measurements()
    only_c = sorted(compression_only(all_rows))
    tensile = sorted(set(all_rows.filter(pl.col("task").is_in(TENSION))["canonical"]))
    rng = np.random.default_rng(3)
    picked = [*rng.choice(only_c, 12, replace=False), *rng.choice(tensile, 10, replace=False)]
    return all_rows.filter(pl.col("canonical").is_in(picked))


@pytest.fixture(scope="module")
def split(frame: pl.DataFrame) -> Split:
    """The first grouped fold whose test part holds a compression-only alloy."""
    only_c = compression_only(frame)
    canonical = frame["canonical"].to_numpy()
    return next(
        s
        for s in grouped_splits(frame["canonical"].to_list(), 5, seed=0)
        if only_c & set(canonical[s.test])
        and set(frame["task"].to_numpy()[s.train]) >= set(TENSION)
    )


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer dir saved *without* the condition flag (as the training run writes it)."""
    texts = load_mpea()["formula"].unique().sort().to_list()
    out = tmp_path_factory.mktemp("tokenizer")
    TokenEncoder(build_tokenizer(), FeatureBins.fit(featurize(texts))).save(out)
    return out


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BertForMaskedLM whose vocabulary predates the condition tokens."""
    before = -len(CONDITION_TOKENS) - len(GRAIN_TOKENS)
    old = TokenEncoder(build_tokenizer(vocabulary()[:before]), None, False)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("mlm")
    BertForMaskedLM(bert_config(ModelConfig(size="tiny"), old)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def fitted(frame, split, encoder_dir, init_dir, tmp_path_factory) -> tuple[FoldFit, Path]:
    out = tmp_path_factory.mktemp("fit") / "fold_0"
    return fit_fold(frame, split, encoder_dir, init_dir, None, SETTINGS, out), out


def test_masked_loss_ignores_missing_targets() -> None:
    targets = torch.full((2, N_REGRESSION), math.nan)
    targets[0, COLUMN["uts_compression_mpa"]] = 1.5  # row 0: only a compressive value
    targets[1, COLUMN["uts_tension_mpa"]] = -0.5
    labels = torch.tensor([-1, 2])
    outputs = torch.randn(2, len(OUTPUT_TASKS), generator=torch.Generator().manual_seed(0))
    outputs.requires_grad_(True)
    loss = multitask_loss(outputs, targets, labels)
    loss.backward()
    o = outputs.detach()
    mse = (
        (o[0, COLUMN["uts_compression_mpa"]] - 1.5) ** 2
        + (o[1, COLUMN["uts_tension_mpa"]] + 0.5) ** 2
    ) / 2
    ce = torch.nn.functional.cross_entropy(o[1:, N_REGRESSION:], labels[1:])
    assert loss.item() == pytest.approx(float(mse + ce), rel=1e-6)
    grad = outputs.grad
    measured = {(0, COLUMN["uts_compression_mpa"]), (1, COLUMN["uts_tension_mpa"])}
    for r in range(2):
        for j in range(N_REGRESSION):
            assert (grad[r, j] != 0) == ((r, j) in measured), (r, OUTPUT_TASKS[j])
    assert torch.all(grad[0, N_REGRESSION:] == 0)  # unlabelled phase
    moved = o.clone()
    moved[0, COLUMN["uts_tension_mpa"]] += 1000.0  # the compression-only row's tensile output
    assert multitask_loss(moved, targets, labels).item() == loss.item()
    empty = multitask_loss(o, torch.full((2, N_REGRESSION), math.nan), torch.tensor([-1, -1]))
    assert float(empty) == 0.0


def test_aggregation_means_repeats_and_keeps_tasks_apart() -> None:
    rows = [
        (0, "A", "A", "uts_tension_mpa", 25.0, "CAST", None, 500.0),
        (1, "A", "A", "uts_tension_mpa", 25.0, "CAST", None, 700.0),
        (2, "A", "A", "uts_compression_mpa", 25.0, "CAST", None, 1500.0),
        (2, "A", "A", PHASE.name, 25.0, "CAST", None, 0.0),
        (3, "A", "A", PHASE.name, 25.0, "CAST", None, 1.0),
        (4, "A", "A", PHASE.name, 25.0, "CAST", None, 1.0),
        (5, "A", "A", "uts_compression_mpa", 800.0, "CAST", None, 900.0),
        (6, "B", "B", "ys_compression_mpa", 25.0, "ANNEAL", None, 1000.0),
        (7, "A", "A", "uts_tension_mpa", 25.0, "CAST", 5.0, 900.0),  # a stated grain size
    ]
    frame = pl.DataFrame(rows, schema=list(COLUMNS), orient="row")
    ex = aggregate(frame, np.arange(len(rows)))
    assert ex.keys.rows() == [("A", 25.0, "CAST", None), ("A", 25.0, "CAST", 5.0),
                              ("A", 800.0, "CAST", None), ("B", 25.0, "ANNEAL", None)]  # fmt: skip
    assert ex.example_of_row.tolist() == [0, 0, 0, 0, 0, 0, 2, 3, 1]
    assert ex.targets[0, COLUMN["uts_tension_mpa"]] == 600.0  # the 900 MPa at 5 µm apart
    assert ex.targets[1, COLUMN["uts_tension_mpa"]] == 900.0
    assert ex.targets[0, COLUMN["uts_compression_mpa"]] == 1500.0
    assert ex.targets[2, COLUMN["uts_compression_mpa"]] == 900.0
    assert np.isnan(ex.targets[2, COLUMN["uts_tension_mpa"]])
    assert np.isnan(ex.targets[3, [COLUMN[t] for t in TENSION]]).all()
    assert ex.labels.tolist() == [1, -1, -1, -1]


def test_fold_files_predictions_length_and_units(frame, split, fitted) -> None:
    fit, out = fitted
    assert (out / MODEL_DIR / "model.safetensors").is_file()
    assert fit.test_pred.shape == (len(split.test),) and fit.val_pred.shape == (len(split.val),)
    assert np.isfinite(fit.test_pred).all() and np.isfinite(fit.val_pred).all()
    history = pl.read_csv(out / HISTORY_FILE)
    assert history.columns == ["epoch", "train_loss", "val_loss"]
    best = history.filter(pl.col("epoch") == fit.best_epoch)["val_loss"].item()
    assert best == pytest.approx(fit.val_loss) == history["val_loss"].min()
    tasks = frame["task"].to_numpy()[split.test]
    phase = tasks == PHASE.name
    assert set(fit.test_pred[phase].tolist()) <= set(range(len(PHASES)))
    mpa_or_hv = np.isin(tasks, [t.name for t in REGRESSION_TASKS if t.unit in ("MPa", "HV")])
    assert mpa_or_hv.any() and (fit.test_pred[mpa_or_hv] > 50).all()  # units, not z-scores
    scalers = json.loads((out / SCALERS_FILE).read_text())
    assert list(scalers) == [t.name for t in REGRESSION_TASKS]


def test_no_tensile_target_leaks_from_compression(frame, split, encoder_dir, fitted) -> None:
    _, out = fitted
    train = aggregate(frame, split.train)
    only_c = compression_only(frame)
    rows_c = np.isin(train.keys["canonical"].to_numpy(), list(only_c))
    assert rows_c.any()
    assert np.isnan(train.targets[np.ix_(rows_c, [COLUMN[t] for t in TENSION])]).all()
    scalers = json.loads((out / SCALERS_FILE).read_text())
    train_rows = frame[split.train]
    for name in ("uts_tension_mpa", "uts_compression_mpa"):
        per_key = (
            train_rows.filter(pl.col("task") == name)
            .group_by("canonical", "temperature_c", "processing", "grain_size_um")
            .agg(pl.col("value").mean())["value"]
        )
        assert scalers[name]["mean"] == pytest.approx(per_key.mean())
    test_alloy = sorted(only_c & set(frame["canonical"].to_numpy()[split.test]))[0]
    table = CompositionTable.from_compositions([test_alloy])
    out_values = predict_outputs(out, encoder_dir, table, None, Condition())
    assert out_values.shape == (1, len(OUTPUT_TASKS))
    tensile_uts = out_values[0, COLUMN["uts_tension_mpa"]]
    assert np.isfinite(tensile_uts) and tensile_uts > 50
    assert out_values[0, N_REGRESSION:].sum() == pytest.approx(1.0)


def test_same_seed_same_model_other_seed_other_model(
    frame, split, encoder_dir, init_dir, fitted, tmp_path
) -> None:
    fit, out = fitted
    again = fit_fold(frame, split, encoder_dir, init_dir, None, SETTINGS, tmp_path / "again")
    assert np.array_equal(again.test_pred, fit.test_pred)
    assert pl.read_csv(tmp_path / "again" / HISTORY_FILE).equals(pl.read_csv(out / HISTORY_FILE))
    other = MultitaskSettings(**{**SETTINGS.as_json(), "seed": 8})
    moved = fit_fold(frame, split, encoder_dir, init_dir, None, other, tmp_path / "other")
    assert not np.array_equal(moved.test_pred, fit.test_pred)


def test_predict_rows_reproduces_test_pred(frame, split, encoder_dir, fitted) -> None:
    fit, out = fitted
    for where in (out, out / MODEL_DIR):
        again = predict_rows(where, encoder_dir, frame, split.test)
        np.testing.assert_allclose(again, fit.test_pred, rtol=1e-6)
    np.testing.assert_allclose(
        predict_rows(out, encoder_dir, frame, split.val), fit.val_pred, rtol=1e-6
    )
    assert predict_rows(out, encoder_dir, frame, np.zeros(0, dtype=np.int64)).shape == (0,)


def test_scratch_model_from_sizes(frame, split, encoder_dir, tmp_path) -> None:
    short = MultitaskSettings(**{**SETTINGS.as_json(), "epochs": 1, "min_epochs": 0})
    fit = fit_fold(frame, split, encoder_dir, None, {"size": "tiny"}, short, tmp_path / "f")
    model, _ = load_fold(tmp_path / "f")
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(vocabulary()) and fit.best_epoch == 1


def test_onnx_export_reproduces_torch_logits(encoder_dir, fitted, tmp_path) -> None:
    _, out = fitted
    path = export_multitask_fold(out, tmp_path / "multitask.onnx")
    check_graph(path, len(OUTPUT_TASKS))
    encoder = load_encoder(encoder_dir)
    table = CompositionTable.from_compositions(
        ["CoCrFeMnNi", "HfNbTaTiZr", "Al0.5CoCrFeNi", "CoCrNi"]
    )
    temps, routes = np.array([25.0, 1200.0, -196.0, 600.0]), ["CAST", "ANNEAL", "WROUGHT", "OTHER"]
    grains = np.array([np.nan, 1.0, 30.0, 300.0])
    encoded = encoder.encode(table, featurize(table), (temps, routes, grains))
    assert encoded.input_ids.shape[1] == 2 * 5 + 20
    model, _ = load_fold(out)
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in encoded.as_dict().items()}).logits
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {name: encoded.as_dict()[name] for name in INPUT_NAMES})
    assert got.shape == (4, len(OUTPUT_TASKS))
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=0)


def test_fold_records_its_condition_tokens_and_old_folds_are_refused(fitted, tmp_path) -> None:
    import shutil

    _, out = fitted
    model, _ = load_fold(out)
    assert model.config.condition_inputs == ["temperature", "processing", "grain_size"]
    old = tmp_path / "old_fold"
    shutil.copytree(out, old)
    config = json.loads((old / MODEL_DIR / "config.json").read_text())
    del config["condition_inputs"]  # a fold trained before the grain-size token
    (old / MODEL_DIR / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="trained with the condition tokens temperature, "
                       "processing; this version encodes temperature, processing, grain_size"):
        load_fold(old)


def test_bad_settings_and_fold_dirs_are_named(tmp_path) -> None:
    with pytest.raises(UserInputError, match="epochs must be positive, got 0"):
        MultitaskSettings(epochs=0)
    with pytest.raises(UserInputError, match="is not a multi-task fold"):
        load_fold(tmp_path)
