"""Cross-validated fine-tuning of BERT regressors (``BertForSequenceClassification`` with one
output, ``problem_type="regression"``, on the pooled ``[CLS]`` token).

For every target, experiment (:class:`~pretrain.config.ExperimentConfig`) and outer fold of
:func:`pretrain.folds.cv_splits`:

- the target is standardized with mean and standard deviation of the fold's *training
  part* (``scaler.json``); every metric is computed on standardized values;
- the model starts from ``RUN/pretrained`` (``pretrained``) or from random weights of the
  same architecture (``scratch``); only the chosen encoder layers train (1-based; the
  embeddings train only with ``all``), the regression head (pooler + linear output) always;
- AdamW with weight decay on the weight matrices of the trained encoder layers and none on
  biases, LayerNorm, embeddings or the head (the paper's setting: lr 6e-5, decay 0.02), a
  linear schedule with warm-up over the maximum number of epochs;
- each epoch is scored on the validation part (carved from the training fold) and on the
  test fold. **honest**: the checkpoint with the lowest validation MSE is kept (early
  stopping after ``patience`` epochs without improvement, not before ``min_epochs``); its
  test metrics are reported
  and it is the saved model. **paper-leaky**: from the same run, the epoch with the lowest
  *test* MSE, as the paper's ``load_best_model_at_end`` on the test fold did; reported only
  to measure how much that protocol inflates the scores.

Outputs per fold (``RUN/finetune/<target>/<experiment>/fold_<k>/``, written atomically, so a
present fold directory is finished and a rerun skips it): ``model/`` (``save_pretrained``,
safetensors), ``scaler.json``, ``split.json``, ``predictions.csv`` (test fold, original
units, honest model), ``history.csv`` (per epoch: train loss, validation and test MSE) and
``metrics.json``. Rows of both protocols go to ``RUN/cv_results.csv``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from tqdm.auto import tqdm
from transformers import BertForSequenceClassification, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from hea_screen.errors import UserInputError
from hea_screen.inference.tokens import TokenEncoder
from pretrain.architecture import bert_config
from pretrain.atomic import write_text_atomic
from pretrain.config import ExperimentConfig, FinetuneConfig, ModelConfig, TrainConfig
from pretrain.cv_results import HONEST, LEAKY, merge_cv_results
from pretrain.finetune_data import FinetuneDataset, prepare_dataset
from pretrain.folds import Split, cv_splits
from pretrain.run_dir import RunDir, atomic_directory
from pretrain.seeds import derive_seed

log = logging.getLogger(__name__)

MODEL_NAME = "transformer"
METRICS_JSON = "metrics.json"
EVAL_BATCH = 256


@dataclass(frozen=True)
class Scaler:
    """Target standardization of one fold (population standard deviation)."""

    target: str
    mean: float
    std: float

    @classmethod
    def fit(cls, target: str, y: np.ndarray) -> Scaler:
        std = float(np.std(y))
        return cls(target, float(np.mean(y)), std if std > 0 else 1.0)

    def transform(self, y: np.ndarray) -> np.ndarray:
        return (y - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "mean": self.mean, "std": self.std}


def standardized_metrics(z_true: np.ndarray, z_pred: np.ndarray) -> dict[str, float]:
    """MSE, MAE and R² on standardized targets."""
    return {
        "mse": float(mean_squared_error(z_true, z_pred)),
        "mae": float(mean_absolute_error(z_true, z_pred)),
        "r2": float(r2_score(z_true, z_pred)),
    }


def set_trainable(model: BertForSequenceClassification, layers: str | list[int]) -> None:
    """Freeze all but the chosen encoder layers (1-based) and the head; ``all`` trains all."""
    for name, param in model.named_parameters():
        if layers == "all" or not name.startswith("bert."):
            param.requires_grad = True
        elif name.startswith("bert.encoder.layer."):
            param.requires_grad = int(name.split(".")[3]) + 1 in layers
        else:  # embeddings stay frozen when single layers are chosen; the pooler is head
            param.requires_grad = name.startswith("bert.pooler.")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on trained encoder-layer weight matrices only."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        in_layer = name.startswith("bert.encoder.layer.")
        plain = name.endswith("bias") or "LayerNorm" in name
        (decay if in_layer and not plain else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def init_model(
    experiment: ExperimentConfig, model_config: ModelConfig, encoder: TokenEncoder,
    pretrained: Path,
) -> BertForSequenceClassification:  # fmt: skip
    """A one-output regression BERT, from the pre-trained weights or random."""
    head = {"num_labels": 1, "problem_type": "regression"}
    if experiment.init == "scratch":
        return BertForSequenceClassification(bert_config(model_config, encoder, **head))
    if not (pretrained / "config.json").exists():
        raise UserInputError(
            f"experiment {experiment.name} needs the pre-trained model in {pretrained}: "
            "run the pretrain step first"
        )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the pooler and output layer are new, as intended
    try:
        return BertForSequenceClassification.from_pretrained(pretrained, **head)
    finally:
        hf_logging.set_verbosity(verbosity)


@torch.no_grad()
def predict(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """Standardized predictions for every row of ``inputs``."""
    model.eval()
    n = len(inputs["input_ids"])
    out = [
        model(**{k: v[i : i + EVAL_BATCH] for k, v in inputs.items()}).logits[:, 0]
        for i in range(0, n, EVAL_BATCH)
    ]
    return torch.cat(out).double().cpu().numpy() if out else np.zeros(0)


def _rows(inputs: dict[str, torch.Tensor], rows: np.ndarray) -> dict[str, torch.Tensor]:
    index = torch.as_tensor(rows, device=inputs["input_ids"].device)
    return {k: v[index] for k, v in inputs.items()}


def train_fold(
    out_dir: Path,
    data: FinetuneDataset,
    inputs: dict[str, torch.Tensor],
    split: Split,
    experiment: ExperimentConfig,
    config: TrainConfig,
    encoder: TokenEncoder,
    pretrained: Path,
) -> dict[str, Any]:
    """Train one fold (module docstring), write its directory and return ``metrics.json``."""
    ft: FinetuneConfig = config.finetune
    started = time.perf_counter()
    scaler = Scaler.fit(data.target, data.y[split.train])
    z = torch.as_tensor(scaler.transform(data.y), dtype=torch.float32)
    device = inputs["input_ids"].device
    torch.manual_seed(derive_seed(config.seed, split.fold))
    model = init_model(experiment, config.model, encoder, pretrained).to(device)
    set_trainable(model, experiment.layers)
    optimizer = torch.optim.AdamW(param_groups(model, ft.weight_decay), lr=ft.learning_rate)
    steps_per_epoch = math.ceil(len(split.train) / ft.batch_size)
    total = ft.epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, round(ft.warmup_ratio * total), total)

    train_in, val_in, test_in = (_rows(inputs, r) for r in (split.train, split.val, split.test))
    z_train, z_val, z_test = (z[r].to(device) for r in (split.train, split.val, split.test))
    history: list[dict[str, float]] = []
    best_state, best_val, best_epoch = None, math.inf, 0
    leaky = {"epoch": 0, "test_mse": math.inf, "pred": None}
    for epoch in range(1, ft.epochs + 1):
        model.train()
        torch.manual_seed(derive_seed(config.seed, split.fold, epoch))
        order = torch.randperm(len(split.train), device=device)
        losses = []
        for start in range(0, len(order), ft.batch_size):
            rows = order[start : start + ft.batch_size]
            batch = {k: v[rows] for k, v in train_in.items()}
            loss = model(**batch, labels=z_train[rows]).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        val_pred, test_pred = predict(model, val_in), predict(model, test_in)
        val_mse = float(np.mean((val_pred - z_val.cpu().numpy()) ** 2))
        test_mse = float(np.mean((test_pred - z_test.cpu().numpy()) ** 2))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                        "val_mse": val_mse, "test_mse": test_mse})  # fmt: skip
        if test_mse < leaky["test_mse"]:
            leaky = {"epoch": epoch, "test_mse": test_mse, "pred": test_pred}
        if val_mse < best_val:
            best_state, best_val, best_epoch = copy.deepcopy(model.state_dict()), val_mse, epoch
        elif epoch - best_epoch >= ft.patience and epoch >= ft.min_epochs:
            break

    model.load_state_dict(best_state)
    z_test_np = z_test.cpu().numpy().astype(np.float64)
    honest_pred = predict(model, test_in)
    metrics = {
        "experiment": experiment.name,
        "target": data.target,
        "fold": split.fold,
        "epochs_run": len(history),
        "seconds": round(time.perf_counter() - started, 2),
        HONEST: {"epoch": best_epoch, "val_mse": best_val,
                 **standardized_metrics(z_test_np, honest_pred)},
        LEAKY: {"epoch": leaky["epoch"], **standardized_metrics(z_test_np, leaky["pred"])},
    }  # fmt: skip
    predictions = pl.DataFrame(
        {
            "row": split.test,
            "composition": [data.compositions[i] for i in split.test],
            "y_true": data.y[split.test],
            "y_pred": scaler.inverse(honest_pred),
        }
    )
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        (tmp / "scaler.json").write_text(json.dumps(scaler.as_json(), indent=1))
        (tmp / "split.json").write_text(json.dumps(split.as_json()))
        predictions.write_csv(tmp / "predictions.csv")
        pl.DataFrame(history).write_csv(tmp / "history.csv")
        (tmp / METRICS_JSON).write_text(json.dumps(metrics, indent=1))
    return metrics


def cv_rows(metrics: list[dict[str, Any]]) -> pl.DataFrame:
    """``cv_results.csv`` rows (both protocols) of an experiment's folds."""
    return pl.DataFrame(
        [
            {"experiment": m["experiment"], "model": MODEL_NAME, "target": m["target"],
             "fold": m["fold"], "protocol": protocol,
             **{k: m[protocol][k] for k in ("mse", "mae", "r2")}}
            for protocol in (HONEST, LEAKY)
            for m in metrics
        ]
    )  # fmt: skip


def run_experiment(
    run: RunDir, data: FinetuneDataset, splits: list[Split], experiment: ExperimentConfig,
    config: TrainConfig, device: torch.device,
) -> list[dict[str, Any]]:  # fmt: skip
    """All folds of one experiment on one target (finished folds are read, not retrained)."""
    write_text_atomic(
        run.experiment_dir(data.target, experiment.name) / "experiment.json",
        json.dumps({"name": experiment.name, "init": experiment.init,
                    "inputs": experiment.inputs, "layers": experiment.layers}, indent=1),
    )  # fmt: skip
    encoder = TokenEncoder.load(run.tokenizer, use_features=experiment.use_features)
    encoded = encoder.encode(data.table, data.features if experiment.use_features else None)
    inputs = {k: torch.from_numpy(v).to(device) for k, v in encoded.as_dict().items()}
    results = []
    for split in tqdm(splits, desc=f"{data.target} {experiment.name}", unit="fold"):
        fold_dir = run.fold_dir(data.target, experiment.name, split.fold)
        if (fold_dir / METRICS_JSON).exists():
            results.append(json.loads((fold_dir / METRICS_JSON).read_text()))
            continue
        m = train_fold(fold_dir, data, inputs, split, experiment, config, encoder, run.pretrained)
        log.info(
            "%s %s fold %d: honest R2 %.3f (epoch %d), paper-leaky R2 %.3f (epoch %d), %.0f s",
            data.target, experiment.name, split.fold, m[HONEST]["r2"], m[HONEST]["epoch"],
            m[LEAKY]["r2"], m[LEAKY]["epoch"], m["seconds"],
        )  # fmt: skip
        results.append(m)
    return results


def run_finetune(
    run: RunDir, config: TrainConfig, data_directory: Path | None = None,
    device: str | None = None,
) -> pl.DataFrame:  # fmt: skip
    """Every target and experiment of the config; returns the transformer rows written."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ft = config.finetune
    frames = []
    for spec in ft.targets:
        data = prepare_dataset(run, spec, ft, config.seed, data_directory)
        splits = cv_splits(len(data), n_folds=ft.folds, seed=config.seed,
                           val_fraction=ft.val_fraction)  # fmt: skip
        for experiment in ft.experiments:
            rows = cv_rows(run_experiment(run, data, splits, experiment, config, dev))
            merge_cv_results(run.cv_results, rows)
            frames.append(rows)
    return pl.concat(frames)
