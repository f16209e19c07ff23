"""The multi-task, condition-aware BERT member: one model for every task of
:mod:`hea_screen.conditions`, with the test temperature and processing route as input tokens.

Input: composition tokens (segment A), then the 14 feature-bin tokens and the three condition
tokens (test temperature, processing route, grain size; segment B) of a
:class:`~hea_screen.inference.tokens.TokenEncoder` with ``use_features``, ``use_conditions`` and
``use_grain_size``. Output: ``BertForSequenceClassification`` with
``len(OUTPUT_TASKS)`` logits (an ordinary sequence-classification head, so optimum exports
it like the single-target models): one standardized value per regression task, in the order
of :data:`~hea_screen.conditions.REGRESSION_TASKS`, then one logit per phase of
:data:`~hea_screen.conditions.PHASES`.

Training (:func:`fit_fold`, on one :class:`~pretrain.folds.Split` of the measurement frame
of :func:`hea_screen.datasets.measurements.measurements`):

- the rows of a part (train or validation) become *examples* keyed by (canonical
  composition, test temperature, processing route, grain size or not stated): a target
  vector over the regression tasks (the mean of repeats; NaN where the task was not
  measured at that key) and a phase label (the most frequent, ties to the lower class
  index; -1 where none). A compressive value fills only its compression task, so it never
  trains a tensile output;
- each regression task is standardized with the mean and standard deviation of the
  training examples (a task without training values keeps mean 0 and std 1, one with a
  single value std 1);
- loss (:func:`multitask_loss`): the mean squared error over the measured (example, task)
  entries plus the cross-entropy of the phase logits over the labelled examples; missing
  targets contribute neither loss nor gradient;
- AdamW (weight decay on the encoder layers' weight matrices only), linear schedule with
  warm-up, early stopping on the validation examples' loss (after ``patience`` epochs
  without improvement, never before ``min_epochs``), the best epoch kept. Initialisation,
  shuffling and dropout come from seeds derived from (``seed``, fold, epoch), so a fit is
  reproducible.

A model may start from a pre-trained ``BertForMaskedLM`` whose vocabulary predates the
condition tokens: its embeddings are resized to the encoder's vocabulary (the condition
tokens are the last ids, so every other id keeps its embedding). The fold model's
``config.json`` records the condition tokens it read (``condition_inputs``); a fold trained
before the grain-size token (no such entry) is refused by :func:`load_fold` and must be refit.

Files of a fold (``out_dir``): ``model/`` (``save_pretrained``, safetensors),
``scalers.json`` (``{task: {"mean": m, "std": s}}`` per regression task) and
``history.csv`` (epoch, train_loss, val_loss).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import PHASE, PHASES, REGRESSION_TASKS, Condition
from hea_screen.errors import UserInputError
from hea_screen.inference.tokens import CONDITION_INPUTS, TokenEncoder
from pretrain.architecture import bert_config
from pretrain.config import ModelConfig
from pretrain.finetune import param_groups
from pretrain.folds import Split
from pretrain.run_dir import atomic_directory
from pretrain.seeds import derive_seed

#: The model's output columns: regression tasks (standardized), then phase logits.
OUTPUT_TASKS: tuple[str, ...] = (
    *(t.name for t in REGRESSION_TASKS),
    *(f"{PHASE.name}_{p}" for p in PHASES),
)
N_REGRESSION = len(REGRESSION_TASKS)

#: What makes one training example: an alloy measured at one condition.
KEY: tuple[str, ...] = ("canonical", "temperature_c", "processing", "grain_size_um")

MODEL_DIR = "model"
SCALERS_FILE = "scalers.json"
HISTORY_FILE = "history.csv"
EVAL_BATCH = 256


@dataclass(frozen=True)
class MultitaskSettings:
    """Optimisation of one fold (defaults for the ``small`` model on CPUs)."""

    epochs: int = 60
    patience: int = 10
    min_epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    threads: int = 2

    def __post_init__(self) -> None:
        for name in ("epochs", "patience", "batch_size", "learning_rate", "threads"):
            if getattr(self, name) <= 0:
                raise UserInputError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.min_epochs <= self.epochs:
            raise UserInputError(
                f"min_epochs ({self.min_epochs}) must lie in 0..epochs ({self.epochs})"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise UserInputError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0:
            raise UserInputError(f"weight_decay must be >= 0, got {self.weight_decay!r}")

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class FoldFit:
    """A fitted fold: predictions for ``split.test`` and ``split.val`` rows in task units
    (phase rows: the predicted class index), the best validation loss and its epoch."""

    test_pred: np.ndarray
    val_pred: np.ndarray
    val_loss: float
    best_epoch: int
    seconds: float


@dataclass(frozen=True)
class Examples:
    """Measurement rows aggregated per :data:`KEY`: ``keys`` (one row per example),
    ``targets`` (examples x regression tasks, NaN where unmeasured), ``labels`` (phase
    class index, -1 where none) and ``example_of_row`` (the example of each input row)."""

    keys: pl.DataFrame
    targets: np.ndarray
    labels: np.ndarray
    example_of_row: np.ndarray


@dataclass(frozen=True)
class Scalers:
    """Per regression task standardization (population std) fit on training examples."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, targets: np.ndarray) -> Scalers:
        counts = np.sum(~np.isnan(targets), axis=0)
        mean = np.zeros(targets.shape[1])
        std = np.ones(targets.shape[1])
        for j in np.flatnonzero(counts):
            mean[j] = np.nanmean(targets[:, j])
            spread = np.nanstd(targets[:, j])
            std[j] = spread if counts[j] > 1 and spread > 0 else 1.0
        return cls(mean, std)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean

    def as_json(self) -> dict[str, dict[str, float]]:
        return {
            t.name: {"mean": float(m), "std": float(s)}
            for t, m, s in zip(REGRESSION_TASKS, self.mean, self.std)
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, float]]) -> Scalers:
        try:
            mean = [float(data[t.name]["mean"]) for t in REGRESSION_TASKS]
            std = [float(data[t.name]["std"]) for t in REGRESSION_TASKS]
        except KeyError as err:
            raise UserInputError(f"{SCALERS_FILE} lacks the scaler of {err}") from None
        return cls(np.asarray(mean), np.asarray(std))


def aggregate(frame: pl.DataFrame, rows: np.ndarray) -> Examples:
    """The examples of measurement rows ``rows`` of ``frame`` (see the module docstring)."""
    part = frame[np.asarray(rows, dtype=np.int64)].with_row_index("_row")
    keys = part.select(KEY).unique().sort(KEY).with_row_index("example")
    part = part.join(keys, on=list(KEY), how="left", nulls_equal=True).sort("_row")
    column = {t.name: j for j, t in enumerate(REGRESSION_TASKS)}
    regression = (
        part.filter(pl.col("task") != PHASE.name)
        .group_by("example", "task")
        .agg(pl.col("value").mean())
    )
    targets = np.full((keys.height, N_REGRESSION), np.nan)
    targets[
        regression["example"].to_numpy(),
        regression["task"].replace_strict(column, return_dtype=pl.Int64).to_numpy(),
    ] = regression["value"].to_numpy()
    phases = (
        part.filter(pl.col("task") == PHASE.name)
        .group_by("example", "value")
        .len()
        .sort(["example", "len", "value"], descending=[False, True, False])
        .unique("example", keep="first", maintain_order=True)
    )
    labels = np.full(keys.height, -1, dtype=np.int64)
    labels[phases["example"].to_numpy()] = phases["value"].to_numpy().astype(np.int64)
    return Examples(keys.drop("example"), targets, labels, part["example"].to_numpy())


def multitask_loss(
    outputs: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Masked MSE over the measured regression targets (``targets`` NaN where missing) plus
    cross-entropy of the phase logits over labelled rows (``labels`` -1 where none).

    ``outputs`` has the :data:`OUTPUT_TASKS` columns. Each term is a mean over the entries
    it covers and is 0 when it covers none; a missing entry adds no loss and no gradient.
    """
    predicted = outputs[:, :N_REGRESSION]
    measured = ~torch.isnan(targets)
    error = torch.where(measured, predicted - torch.nan_to_num(targets), 0.0)
    mse = error.pow(2).sum() / measured.sum().clamp(min=1)
    labelled = labels >= 0
    ce = F.cross_entropy(outputs[:, N_REGRESSION:], labels.clamp(min=0), reduction="none")
    return mse + torch.where(labelled, ce, 0.0).sum() / labelled.sum().clamp(min=1)


def load_encoder(encoder_dir: Path) -> TokenEncoder:
    """The tokenizer dir as a with-features, with-conditions (grain size included) encoder,
    upgraded if needed."""
    encoder = TokenEncoder.load(
        encoder_dir, use_features=True, use_conditions=True, use_grain_size=True
    )
    if encoder.bins is None:
        raise UserInputError(f"{encoder_dir} holds no feature_bins.json: cannot encode features")
    return encoder


def encode_keys(encoder: TokenEncoder, keys: pl.DataFrame) -> dict[str, torch.Tensor]:
    """Token ids of every :data:`KEY` row of ``keys`` (grain size null or NaN: not stated)."""
    return {k: torch.from_numpy(v) for k, v in encoder.encode_rows(keys).as_dict().items()}


def init_model(
    encoder: TokenEncoder, init_dir: Path | None, model_config: Mapping[str, Any] | None
) -> BertForSequenceClassification:
    """A ``len(OUTPUT_TASKS)``-output BERT from a pre-trained MLM (embeddings resized to the
    encoder's vocabulary) or random with ``model_config`` sizes (:class:`ModelConfig` keys);
    its config records the encoder's condition inputs (``condition_inputs``)."""
    head = {
        "num_labels": len(OUTPUT_TASKS),
        "id2label": dict(enumerate(OUTPUT_TASKS)),
        "label2id": {name: i for i, name in enumerate(OUTPUT_TASKS)},
    }
    if init_dir is None:
        model = BertForSequenceClassification(
            bert_config(ModelConfig(**dict(model_config or {})), encoder, **head)
        )
        model.config.condition_inputs = list(encoder.condition_inputs)
        return model
    if not (Path(init_dir) / "config.json").is_file():
        raise UserInputError(f"{init_dir} holds no pre-trained model (config.json missing)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the pooler and output layer are new, as intended
    try:
        model = BertForSequenceClassification.from_pretrained(init_dir, **head)
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.config.vocab_size > encoder.vocab_size:
        raise UserInputError(
            f"{init_dir} has {model.config.vocab_size} token embeddings, more than the "
            f"tokenizer's {encoder.vocab_size}: it was pre-trained with another tokenizer"
        )
    model.resize_token_embeddings(encoder.vocab_size)
    model.config.condition_inputs = list(encoder.condition_inputs)
    return model


@torch.no_grad()
def raw_outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's :data:`OUTPUT_TASKS` logits for every row (eval mode, batched)."""
    model.eval()
    n = len(inputs["input_ids"])
    parts = [
        model(**{k: v[i : i + EVAL_BATCH] for k, v in inputs.items()}).logits
        for i in range(0, n, EVAL_BATCH)
    ]
    return torch.cat(parts) if parts else torch.zeros((0, len(OUTPUT_TASKS)))


def task_values(logits: np.ndarray, scalers: Scalers) -> np.ndarray:
    """Logits -> task units: unscaled regression values, then phase probabilities."""
    logits = np.asarray(logits, dtype=np.float64)
    values = scalers.inverse(logits[:, :N_REGRESSION])
    phase = logits[:, N_REGRESSION:]
    e = np.exp(phase - phase.max(axis=1, keepdims=True))
    return np.concatenate([values, e / e.sum(axis=1, keepdims=True)], axis=1)


def row_predictions(
    model: torch.nn.Module,
    encoder: TokenEncoder,
    scalers: Scalers,
    frame: pl.DataFrame,
    rows: np.ndarray,
) -> np.ndarray:
    """Prediction of each measurement row in its task's unit (phase: the class index)."""
    if len(rows) == 0:
        return np.zeros(0)
    examples = aggregate(frame, rows)
    values = task_values(raw_outputs(model, encode_keys(encoder, examples.keys)).numpy(), scalers)
    of_row = values[examples.example_of_row]
    tasks = frame["task"].to_numpy()[np.asarray(rows, dtype=np.int64)]
    column = {t.name: j for j, t in enumerate(REGRESSION_TASKS)}
    out = np.empty(len(of_row))
    for r, name in enumerate(tasks):
        if name == PHASE.name:
            out[r] = float(np.argmax(of_row[r, N_REGRESSION:]))
        elif name in column:
            out[r] = of_row[r, column[name]]
        else:
            raise UserInputError(f"row {rows[r]} has task {name!r}, which this model lacks")
    return out


@dataclass
class _Tensors:
    """Inputs, standardized targets and phase labels of a part's examples."""

    inputs: dict[str, torch.Tensor]
    z: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def of(cls, encoder: TokenEncoder, examples: Examples, scalers: Scalers) -> _Tensors:
        return cls(
            encode_keys(encoder, examples.keys),
            torch.as_tensor(scalers.transform(examples.targets), dtype=torch.float32),
            torch.as_tensor(examples.labels),
        )

    def __len__(self) -> int:
        return len(self.labels)

    def loss(self, model: torch.nn.Module) -> float:
        """The multi-task loss of the whole part (eval mode)."""
        return float(multitask_loss(raw_outputs(model, self.inputs), self.z, self.labels))


@dataclass
class _Best:
    state: dict[str, torch.Tensor]
    val_loss: float = math.inf
    epoch: int = 0


def _train_epoch(
    model: torch.nn.Module,
    train: _Tensors,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch_size: int,
) -> float:
    """One pass over the shuffled training examples; the mean batch loss."""
    model.train()
    order = torch.randperm(len(train))
    losses = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        logits = model(**{k: v[rows] for k, v in train.inputs.items()}).logits
        loss = multitask_loss(logits, train.z[rows], train.labels[rows])
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return float(np.mean(losses))


def _fit(
    model: torch.nn.Module, train: _Tensors, val: _Tensors, settings: MultitaskSettings, fold: int
) -> tuple[_Best, list[dict[str, float]]]:
    """Train with early stopping on the validation loss; the best epoch and the history."""
    optimizer = torch.optim.AdamW(
        param_groups(model, settings.weight_decay), lr=settings.learning_rate
    )
    total = settings.epochs * math.ceil(len(train) / settings.batch_size)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(settings.warmup_ratio * total), total
    )
    best = _Best(copy.deepcopy(model.state_dict()))
    history = []
    for epoch in range(1, settings.epochs + 1):
        torch.manual_seed(derive_seed(settings.seed, fold, epoch))
        train_loss = _train_epoch(model, train, optimizer, scheduler, settings.batch_size)
        val_loss = val.loss(model)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best.val_loss:
            best = _Best(copy.deepcopy(model.state_dict()), val_loss, epoch)
        elif epoch - best.epoch >= settings.patience and epoch >= settings.min_epochs:
            break
    return best, history


def fit_fold(
    frame: pl.DataFrame,
    split: Split,
    encoder_dir: Path,
    init_dir: Path | None,
    model_config: dict | None,
    settings: MultitaskSettings,
    out_dir: Path,
) -> FoldFit:
    """Train the multi-task model on ``split`` of the measurement ``frame`` (module
    docstring), write ``out_dir`` and return the validation and test predictions."""
    started = time.perf_counter()
    torch.set_num_threads(settings.threads)
    encoder = load_encoder(Path(encoder_dir))
    train_examples = aggregate(frame, split.train)
    scalers = Scalers.fit(train_examples.targets)
    train = _Tensors.of(encoder, train_examples, scalers)
    val = _Tensors.of(encoder, aggregate(frame, split.val), scalers)
    torch.manual_seed(derive_seed(settings.seed, split.fold))
    model = init_model(encoder, None if init_dir is None else Path(init_dir), model_config)
    best, history = _fit(model, train, val, settings, split.fold)
    model.load_state_dict(best.state)
    test_pred = row_predictions(model, encoder, scalers, frame, split.test)
    val_pred = row_predictions(model, encoder, scalers, frame, split.val)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp / MODEL_DIR, safe_serialization=True)
        (tmp / SCALERS_FILE).write_text(json.dumps(scalers.as_json(), indent=1))
        pl.DataFrame(history).write_csv(tmp / HISTORY_FILE)
    return FoldFit(
        test_pred, val_pred, best.val_loss, best.epoch, round(time.perf_counter() - started, 2)
    )


def fold_paths(model_dir: Path) -> tuple[Path, Path]:
    """(``model/`` directory, ``scalers.json``) of a fold, given the fold's ``out_dir`` or its
    ``model/`` subdirectory."""
    model_dir = Path(model_dir)
    if (model_dir / MODEL_DIR / "config.json").is_file():
        model_dir = model_dir / MODEL_DIR
    scalers = model_dir.parent / SCALERS_FILE
    if not (model_dir / "config.json").is_file() or not scalers.is_file():
        raise UserInputError(
            f"{model_dir} is not a multi-task fold (needs {MODEL_DIR}/config.json and "
            f"{SCALERS_FILE} beside it)"
        )
    return model_dir, scalers


def load_fold(model_dir: Path) -> tuple[BertForSequenceClassification, Scalers]:
    """A saved multi-task fold model (eval mode) and its scalers."""
    path, scalers_path = fold_paths(model_dir)
    model = BertForSequenceClassification.from_pretrained(path, local_files_only=True)
    if model.config.num_labels != len(OUTPUT_TASKS):
        raise UserInputError(
            f"{path}: expected {len(OUTPUT_TASKS)} outputs ({', '.join(OUTPUT_TASKS)}), "
            f"found {model.config.num_labels}"
        )
    read = tuple(getattr(model.config, "condition_inputs", CONDITION_INPUTS[:2]))
    if read != CONDITION_INPUTS:
        raise UserInputError(
            f"{path} was trained with the condition tokens {', '.join(read)}; this version "
            f"encodes {', '.join(CONDITION_INPUTS)}: refit the transformer (delete its fold "
            "directories and transformer_seed_*.parquet, then rerun the conditions step)"
        )
    return model.eval(), Scalers.from_json(json.loads(scalers_path.read_text()))


def predict_rows(
    model_dir: Path, encoder_dir: Path, frame: pl.DataFrame, rows: np.ndarray
) -> np.ndarray:
    """:func:`fit_fold`'s predictions for measurement rows ``rows``, from the saved fold
    (``model_dir``: the fold's ``out_dir`` or its ``model/``)."""
    model, scalers = load_fold(model_dir)
    return row_predictions(model, load_encoder(Path(encoder_dir)), scalers, frame, rows)


def predict_outputs(
    model_dir: Path,
    encoder_dir: Path,
    table: CompositionTable,
    features: pl.DataFrame | None,
    condition: Condition,
) -> np.ndarray:
    """(rows, ``len(OUTPUT_TASKS)``): every regression task in its unit, then the phase
    probabilities, for every composition of ``table`` at ``condition``'s temperature,
    processing and grain size (the test type selects a task, not an input; all tasks are returned).
    ``features`` of ``table`` are computed when ``None``."""
    model, scalers = load_fold(model_dir)
    encoder = load_encoder(Path(encoder_dir))
    features = featurize(table) if features is None else features
    inputs = {
        k: torch.from_numpy(v)
        for k, v in encoder.encode(table, features, condition).as_dict().items()
    }
    return task_values(raw_outputs(model, inputs).numpy(), scalers)
