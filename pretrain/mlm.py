"""Masked-language-model pre-training of BERT on the corpus (``BertForMaskedLM``).

Input: every corpus alloy as a sentence pair, composition tokens (segment A) and its 14
feature-bin tokens (segment B), encoded with the run's
:class:`~hea_screen.inference.tokens.TokenEncoder`
(the path screening uses). 15 % of the non-special tokens are masked (of those 80 % become
``[MASK]``, 10 % a random token, 10 % stay) by the Hugging Face
``DataCollatorForLanguageModeling`` (loaded with ``PreTrainedTokenizerFast`` from
``RUN/tokenizer``). The corpus is split 80/20 (``split_seed``); the validation rows are
masked once with a fixed seed, so every epoch's validation loss is measured on the same
masked tokens.

Optimisation: AdamW (weight decay on weight matrices, none on biases and LayerNorm), linear
schedule with warm-up, gradient norm clipped at 1. Each epoch draws its shuffling, masking
and dropout from seeds derived from ``(seed, epoch)``, so an interrupted run that resumes
from its last checkpoint (``RUN/pretrain_checkpoints/last``, see :mod:`pretrain.checkpoint`)
continues exactly as if uninterrupted.

Output ``RUN/pretrained``: the epoch with the lowest validation loss
(``save_pretrained``, safetensors), ``loss_curve.csv`` (epoch, train_loss, val_loss,
val_accuracy: the share of masked validation tokens predicted right), ``loss_curve.png`` and
``pretraining.json``. Checkpoints are removed when it is written.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm
from transformers import (
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerFast,
    get_linear_schedule_with_warmup,
)

from hea_screen.compositions.features import FEATURE_NAMES
from hea_screen.compositions.table import CompositionTable
from hea_screen.inference.tokens import SPECIAL_TOKENS, TokenEncoder
from hea_screen.output import atomic_write
from pretrain.architecture import bert_config
from pretrain.atomic import write_csv_atomic
from pretrain.checkpoint import load_checkpoint, save_checkpoint
from pretrain.config import ModelConfig, PretrainConfig
from pretrain.run_dir import RunDir, atomic_directory
from pretrain.seeds import derive_seed

log = logging.getLogger(__name__)

LOSS_CSV = "loss_curve.csv"
LOSS_PNG = "loss_curve.png"
INFO_JSON = "pretraining.json"
CURVE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy")


def encode_corpus(corpus: pl.DataFrame, encoder: TokenEncoder) -> dict[str, torch.Tensor]:
    """Token ids of every corpus row, composition + features, padded to one width."""
    table = CompositionTable.from_compositions(corpus["composition"].to_list())
    encoded = encoder.encode(table, corpus.select(FEATURE_NAMES)).as_dict()
    return {k: torch.from_numpy(v) for k, v in encoded.items()}


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train / validation row indices (sorted)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(val_fraction * n))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class Masker:
    """Applies the Hugging Face MLM masking to a batch of token ids."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, probability: float):
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)
        self.special = torch.tensor([tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS])

    def reseed(self, seed: int) -> None:
        self.collator.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"]
        special = torch.isin(ids, self.special)
        masked, labels = self.collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
        return {**batch, "input_ids": masked, "labels": labels}


def _batches(arrays: dict[str, torch.Tensor], order: torch.Tensor, size: int):
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        yield {k: v[rows] for k, v in arrays.items()}


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, object]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@torch.no_grad()
def evaluate(
    model: BertForMaskedLM, val: dict[str, torch.Tensor], device: torch.device
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the masked validation tokens."""
    model.eval()
    total_loss, total_right, total = 0.0, 0, 0
    for batch in _batches(val, torch.arange(len(val["input_ids"])), 512):
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        scored = batch["labels"] != -100
        n = int(scored.sum())
        total_loss += float(out.loss) * n
        total_right += int((out.logits.argmax(-1)[scored] == batch["labels"][scored]).sum())
        total += n
    return total_loss / total, total_right / total


def plot_loss_curve(curve: pl.DataFrame, path: Path) -> Path:
    """Train and validation MLM loss per epoch."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(curve["epoch"], curve["train_loss"], marker="o", label="train")
    ax.plot(curve["epoch"], curve["val_loss"], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked-token cross-entropy")
    ax.set_title("MLM pre-training")
    ax.legend()
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def pretrain_mlm(
    run: RunDir,
    model_config: ModelConfig,
    config: PretrainConfig,
    seed: int,
    device: str | None = None,
) -> Path:
    """Pre-train on ``run.corpus`` with ``run.tokenizer``; write ``run.pretrained``."""
    started = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = TokenEncoder.load(run.tokenizer, use_features=True)
    masker = Masker(PreTrainedTokenizerFast.from_pretrained(run.tokenizer), config.mlm_probability)
    corpus = pl.read_parquet(run.corpus)
    arrays = encode_corpus(corpus, encoder)
    train_rows, val_rows = split_rows(corpus.height, config.val_fraction, config.split_seed)
    train = {k: v[train_rows] for k, v in arrays.items()}
    masker.reseed(config.split_seed)
    val = masker({k: v[val_rows] for k, v in arrays.items()})
    log.info("MLM: %d training and %d validation alloys, %d tokens wide, on %s",
             len(train_rows), len(val_rows), arrays["input_ids"].shape[1], dev)  # fmt: skip

    torch.manual_seed(seed)
    model = BertForMaskedLM(bert_config(model_config, encoder)).to(dev)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay),
                                  lr=config.learning_rate)  # fmt: skip
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    state: dict = {"epoch": 0, "step": 0, "history": [], "best_val_loss": None, "best_epoch": 0}
    last, best_dir = run.pretrain_checkpoints / "last", run.pretrain_checkpoints / "best"
    if (last / "state.json").exists():
        state = load_checkpoint(last, model, optimizer)
        log.info("MLM: resuming after epoch %d", state["epoch"])
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(config.warmup_ratio * total_steps), total_steps,
        last_epoch=state["step"] - 1,
    )  # fmt: skip

    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        model.train()
        torch.manual_seed(derive_seed(seed, epoch, 0))  # shuffling and dropout
        masker.reseed(derive_seed(seed, epoch, 1))
        order = torch.randperm(len(train_rows))
        losses = []
        bar = tqdm(_batches(train, order, config.batch_size), total=steps_per_epoch,
                   desc=f"MLM epoch {epoch}/{config.epochs}", leave=False)  # fmt: skip
        for batch in bar:
            batch = {k: v.to(dev) for k, v in masker(batch).items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        val_loss, val_accuracy = evaluate(model, val, dev)
        state["history"].append([epoch, float(np.mean(losses)), val_loss, val_accuracy])
        state["epoch"], state["step"] = epoch, epoch * steps_per_epoch
        log.info("MLM epoch %d: train loss %.4f, val loss %.4f, masked accuracy %.3f",
                 epoch, np.mean(losses), val_loss, val_accuracy)  # fmt: skip
        if state["best_val_loss"] is None or val_loss < state["best_val_loss"]:
            state["best_val_loss"], state["best_epoch"] = val_loss, epoch
            with atomic_directory(best_dir) as tmp:
                model.save_pretrained(tmp, safe_serialization=True)
        save_checkpoint(last, model, optimizer, state)

    curve = pl.DataFrame(state["history"], schema=list(CURVE_COLUMNS), orient="row")
    info = {
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "epochs": config.epochs,
        "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val_loss"],
        "best_val_accuracy": curve.filter(pl.col("epoch") == state["best_epoch"])[
            "val_accuracy"
        ].item(),
        "device": str(dev),
        "seconds_last_session": round(time.perf_counter() - started, 1),
    }
    with atomic_directory(run.pretrained) as tmp:
        BertForMaskedLM.from_pretrained(best_dir).save_pretrained(tmp, safe_serialization=True)
        write_csv_atomic(curve, tmp / LOSS_CSV)
        plot_loss_curve(curve, tmp / LOSS_PNG)
        (tmp / INFO_JSON).write_text(json.dumps(info, indent=1))
    shutil.rmtree(run.pretrain_checkpoints, ignore_errors=True)
    log.info("MLM: best epoch %d, validation loss %.4f", state["best_epoch"],
             state["best_val_loss"])  # fmt: skip
    return run.pretrained
