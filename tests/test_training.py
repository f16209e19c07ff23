"""Training pipeline end to end on the tiny config: layout, both protocols, pretrained vs
scratch, determinism, resume, layer-wise freezing and config validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import UserInputError
from hea_screen.inference.tokens import TokenEncoder
from pretrain.cli import main
from pretrain.config import ConfigError, ExperimentConfig, TrainConfig, load_config
from pretrain.cv_results import CV_COLUMNS
from pretrain.finetune import init_model, param_groups, set_trainable
from pretrain.finetune_data import read_source
from pretrain.folds import cv_splits
from pretrain.mlm import pretrain_mlm
from pretrain.run_dir import RunDir

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
CONFIG = load_config(TINY_CONFIG)
TARGETS = [t.name for t in CONFIG.finetune.targets]
EXPERIMENTS = [e.name for e in CONFIG.finetune.experiments]


def test_run_directory_layout(tiny_run: Path) -> None:
    run = RunDir(tiny_run)
    assert yaml.safe_load(run.config.read_text()) == CONFIG.as_dict()
    assert pl.read_parquet(run.corpus).height == CONFIG.corpus.size
    for name in ("tokenizer.json", "feature_bins.json", "tokenizer_config.json"):
        assert (run.tokenizer / name).is_file()
    for name in ("config.json", "model.safetensors", "loss_curve.csv", "loss_curve.png"):
        assert (run.pretrained / name).is_file()
    curve = pl.read_csv(run.pretrained / "loss_curve.csv")
    assert curve["epoch"].to_list() == list(range(1, CONFIG.pretrain.epochs + 1))
    assert not run.pretrain_checkpoints.exists()
    for target in TARGETS:
        info = json.loads(run.dataset_json(target).read_text())
        assert info["rows"] == pl.read_csv(run.dataset_csv(target)).height == 60
        assert len(info["sha256"]) == 64
        for exp in EXPERIMENTS:
            for fold in range(CONFIG.finetune.folds):
                d = run.fold_dir(target, exp, fold)
                for name in ("model/model.safetensors", "model/config.json", "scaler.json",
                             "split.json", "predictions.csv"):  # fmt: skip
                    assert (d / name).is_file(), d / name
    assert (tiny_run / "corpus_report.md").is_file()
    assert not list(tiny_run.rglob(".*.tmp"))


def test_cv_results_have_both_protocols_for_every_fold(tiny_run: Path) -> None:
    cv = pl.read_csv(tiny_run / "cv_results.csv")
    assert tuple(cv.columns) == CV_COLUMNS
    ours = cv.filter(pl.col("model") == "transformer")
    assert ours.height == len(TARGETS) * len(EXPERIMENTS) * CONFIG.finetune.folds * 2
    counts = ours.group_by("experiment", "target", "protocol").len()
    assert set(counts["protocol"]) == {"honest", "paper-leaky"}
    assert (counts["len"] == CONFIG.finetune.folds).all()
    assert ours.select(pl.all_horizontal(pl.col("mse", "mae", "r2").is_finite())).to_series().all()
    wide = ours.pivot("protocol", index=["experiment", "target", "fold"], values="mse")
    # the leaky epoch is the best test epoch of the same run: never worse on the test fold
    assert (wide["paper-leaky"] <= wide["honest"] + 1e-12).all()
    assert cv.filter(pl.col("experiment") == "baseline").height > 0


def test_protocols_pick_their_epochs_from_the_fold_history(tiny_run: Path) -> None:
    """honest: the epoch of lowest validation MSE, whose test MSE (history.csv) is the one
    reported; paper-leaky: the epoch of lowest test MSE. cv_results.csv reports metrics.json."""
    run = RunDir(tiny_run)
    cv = pl.read_csv(tiny_run / "cv_results.csv").filter(pl.col("model") == "transformer")
    for target in TARGETS:
        for exp in EXPERIMENTS:
            for fold in range(CONFIG.finetune.folds):
                d = run.fold_dir(target, exp, fold)
                history = pl.read_csv(d / "history.csv")
                metrics = json.loads((d / "metrics.json").read_text())
                assert history["epoch"].to_list() == list(range(1, metrics["epochs_run"] + 1))
                honest, leaky = metrics["honest"], metrics["paper-leaky"]
                assert honest["epoch"] == int(history["epoch"][history["val_mse"].arg_min()])
                assert honest["val_mse"] == pytest.approx(history["val_mse"].min(), rel=1e-9)
                at_honest = history.filter(pl.col("epoch") == honest["epoch"])
                assert honest["mse"] == pytest.approx(at_honest["test_mse"][0], rel=1e-4)
                assert leaky["epoch"] == int(history["epoch"][history["test_mse"].arg_min()])
                assert leaky["mse"] == pytest.approx(history["test_mse"].min(), rel=1e-4)
                rows = cv.filter(
                    (pl.col("target") == target)
                    & (pl.col("experiment") == exp)
                    & (pl.col("fold") == fold)
                )
                for protocol in ("honest", "paper-leaky"):
                    mse = rows.filter(pl.col("protocol") == protocol)["mse"].to_list()
                    assert mse == [pytest.approx(metrics[protocol]["mse"], rel=1e-9)]


def test_fold_files_agree_with_folds_scaler_and_saved_model(tiny_run: Path) -> None:
    run = RunDir(tiny_run)
    target, exp = "uts_mpa", "pretrained-features-all"
    data = pl.read_csv(run.dataset_csv(target))
    ft = CONFIG.finetune
    splits = cv_splits(data.height, ft.folds, CONFIG.seed, ft.val_fraction)
    encoder = TokenEncoder.load(run.tokenizer, use_features=True)
    for split in splits[:2]:
        d = run.fold_dir(target, exp, split.fold)
        assert json.loads((d / "split.json").read_text()) == split.as_json()
        scaler = json.loads((d / "scaler.json").read_text())
        y = data[target].to_numpy()
        assert scaler == {"target": target, "mean": pytest.approx(y[split.train].mean()),
                          "std": pytest.approx(y[split.train].std())}  # fmt: skip
        predictions = pl.read_csv(d / "predictions.csv")
        assert predictions["row"].to_list() == split.test.tolist()
        # the saved model, fed through the shared encoder, reproduces predictions.csv
        table = CompositionTable.from_compositions(predictions["composition"].to_list())
        batch = encoder.encode(table, featurize(table)).as_dict()
        model = BertForSequenceClassification.from_pretrained(d / "model").eval()
        with torch.no_grad():
            z = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits[:, 0].numpy()
        np.testing.assert_allclose(z * scaler["std"] + scaler["mean"], predictions["y_pred"],
                                   rtol=1e-4, atol=1e-3)  # fmt: skip


def test_pretrained_init_loads_the_encoder_and_scratch_does_not(tiny_run: Path) -> None:
    run = RunDir(tiny_run)
    encoder = TokenEncoder.load(run.tokenizer)
    mlm = load_file(str(run.pretrained / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    torch.manual_seed(0)
    pre = init_model(ExperimentConfig("pretrained"), CONFIG.model, encoder, run.pretrained)
    torch.manual_seed(0)
    scratch = init_model(ExperimentConfig("scratch"), CONFIG.model, encoder, run.pretrained)
    assert torch.equal(pre.state_dict()[key], mlm[key])
    assert not torch.equal(scratch.state_dict()[key], mlm[key])
    assert pre.config.to_diff_dict()["hidden_size"] == scratch.config.hidden_size
    paired = pl.read_csv(tiny_run / "finetune" / "pretrained_vs_scratch.csv")
    assert set(paired["target"]) == set(TARGETS)
    assert set(paired["variant"]) == {"features-all"}


def test_layerwise_freezing_and_weight_decay(tiny_run: Path) -> None:
    run = RunDir(tiny_run)
    model = init_model(ExperimentConfig("scratch"), CONFIG.model,
                       TokenEncoder.load(run.tokenizer), run.pretrained)  # fmt: skip
    set_trainable(model, [2])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier.")) for n in trainable
    )
    assert any(n.startswith("classifier.") for n in trainable)
    assert not any("embeddings" in n for n in trainable)
    decay, no_decay = param_groups(model, 0.02)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.02
    assert all(names[id(p)].startswith("bert.encoder.layer.1.") and "LayerNorm" not in
               names[id(p)] and names[id(p)].endswith("weight") for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable)
    set_trainable(model, "all")
    assert all(p.requires_grad for p in model.parameters())


def test_resume_skips_finished_work_and_retrains_identically(
    tiny_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run = RunDir(run_dir)
    fold = run.fold_dir("uts_mpa", "scratch-features-all", 3)
    before = (fold / "predictions.csv").read_text()
    order = ["experiment", "model", "target", "fold", "protocol"]
    cv_before = pl.read_csv(run.cv_results).sort(order)
    stamps = {p: p.stat().st_mtime_ns for p in (run.corpus, run.pretrained / "model.safetensors",
                                                  run.fold_dir("uts_mpa", EXPERIMENTS[0], 0))}
    shutil.rmtree(fold)
    for step in ("corpus", "tokenizer", "pretrain", "finetune", "baselines"):
        assert main([step, "--config", str(TINY_CONFIG), "--out", str(run_dir), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished work untouched
    assert (fold / "predictions.csv").read_text() == before  # deterministic retraining
    cv_after = pl.read_csv(run.cv_results).sort(order)
    assert cv_after.equals(cv_before)  # no duplicated rows


def test_mlm_resumes_exactly_after_an_interruption(tiny_run: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from pretrain import mlm

    def prepared(name: str) -> RunDir:
        run = RunDir(tmp_path / name)
        run.root.mkdir()
        shutil.copy(tiny_run / "corpus.parquet", run.corpus)
        shutil.copytree(tiny_run / "tokenizer", run.tokenizer)
        return run

    whole, broken = prepared("whole"), prepared("broken")
    pretrain_mlm(whole, CONFIG.model, CONFIG.pretrain, CONFIG.seed)

    real_evaluate = mlm.evaluate
    calls = {"n": 0}

    def failing_evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stopped during epoch 2, after epoch 1's checkpoint
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(mlm, "evaluate", failing_evaluate)
    with pytest.raises(KeyboardInterrupt):
        pretrain_mlm(broken, CONFIG.model, CONFIG.pretrain, CONFIG.seed)
    assert (broken.pretrain_checkpoints / "last" / "state.json").exists()
    assert not broken.pretrained.exists()
    monkeypatch.setattr(mlm, "evaluate", real_evaluate)
    pretrain_mlm(broken, CONFIG.model, CONFIG.pretrain, CONFIG.seed)

    a = load_file(str(whole.pretrained / "model.safetensors"))
    b = load_file(str(broken.pretrained / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert (pl.read_csv(whole.pretrained / "loss_curve.csv")
            .equals(pl.read_csv(broken.pretrained / "loss_curve.csv")))  # fmt: skip


def test_bad_config_key_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["finetune"]["epochz"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key 'epochz' in config.finetune")
    assert "epochs" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"model": {"size": "huge"}}, "config.model.size is 'huge'"),
        ({"finetune": {"experiments": [{"layers": [3]}]}}, "layer 3 does not exist"),
        ({"finetune": {"targets": ["hardness"]}}, "target 'hardness' is not a paper set"),
        ({"corpus": {"size": 0}}, "corpus.size must be positive"),
        ({"pretrain": {"mlm_probability": 1.5}}, "pretrain.mlm_probability"),
        ({"baselines": {"model": ["knn"]}}, "unknown key 'model' in config.baselines"),
        ({"threads": "two"}, "config.threads must be an integer"),
        ({"finetune": {"min_epochs": 10}}, "finetune.min_epochs"),
    ],
)
def test_invalid_values_name_the_key(patch: dict, message: str) -> None:
    data = yaml.safe_load(TINY_CONFIG.read_text())
    for key, value in patch.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        TrainConfig.from_mapping(data)


def test_a_run_keeps_its_config(tiny_run: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["seed"] = 1
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    assert main(["report", "--config", str(other), "--out", str(tiny_run)]) == 2
    assert "different config" in capsys.readouterr().err


def test_any_csv_can_be_a_target(tmp_path: Path) -> None:
    from pretrain.config import TargetSpec

    path = tmp_path / "hv.csv"
    pl.DataFrame({"alloy": ["CoCrFeNi", "Al0.5CoCrFeNi"], "hv": [150.0, 210.0]}).write_csv(path)
    frame, source = read_source(TargetSpec("hardness_hv", str(path), "hv", "alloy"), None)
    assert frame.columns == ["composition", "hardness_hv"]
    assert frame["composition"][0] == "Co0.25 Cr0.25 Fe0.25 Ni0.25"
    assert source == path.resolve()
    with pytest.raises(UserInputError, match="no column 'vickers'"):
        read_source(TargetSpec("hardness_hv", str(path), "vickers", "alloy"), None)


def test_early_stopping_waits_for_min_epochs(tiny_run: Path, tmp_path: Path) -> None:
    import dataclasses

    from pretrain.finetune import train_fold
    from pretrain.finetune_data import prepare_dataset

    run = RunDir(tiny_run)
    ft = dataclasses.replace(CONFIG.finetune, epochs=6, patience=1, min_epochs=5)
    config = dataclasses.replace(CONFIG, finetune=ft)
    data = prepare_dataset(run, CONFIG.finetune.targets[0], ft, CONFIG.seed)
    encoder = TokenEncoder.load(run.tokenizer, use_features=True)
    inputs = {k: torch.from_numpy(v)
              for k, v in encoder.encode(data.table, data.features).as_dict().items()}  # fmt: skip
    split = cv_splits(len(data), ft.folds, CONFIG.seed, ft.val_fraction)[0]
    metrics = train_fold(tmp_path / "fold_0", data, inputs, split, ExperimentConfig("scratch"),
                         config, encoder, run.pretrained)  # fmt: skip
    assert metrics["epochs_run"] >= 5
    history = pl.read_csv(tmp_path / "fold_0" / "history.csv")
    assert history.height == metrics["epochs_run"]
    assert metrics["honest"]["epoch"] == history["val_mse"].arg_min() + 1
