"""The multi-task transformer member of a condition-aware bundle: fold networks, precision
variants and their parity against PyTorch.

For each fold of the run's first seed (``RUN/conditions/transformer/seed_<s>/fold_<k>``),
:func:`write_transformer` exports the PyTorch network with optimum
(:func:`~export.onnx_export.export_multitask_fold`), builds the precision variants of
:mod:`export.variants` (fused fp32; fp16 for CUDA; int8, dynamically quantized, for CPUs),
and measures each against PyTorch on the fold's out-of-fold rows (:mod:`export.parity`). A
variant is written only if every fold meets its bound; the manifest's ``transformer.variants``
records every variant's parity and why one was left out. :func:`transformer_task` then checks,
per task, that the fp32 networks reproduce the run's recorded out-of-fold predictions.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl

from export.onnx_export import check_graph, export_onnx, model_size
from export.parity import (
    FoldParity,
    Measured,
    ParityBounds,
    compare,
    decide,
    onnx_outputs,
    parity_provider,
    torch_outputs,
)
from export.variants import make_fp16, make_int8, optimize_fp32
from hea_screen.conditions import PHASE, PHASES
from hea_screen.errors import UserInputError
from hea_screen.inference.bundle import TRANSFORMER_OUTPUTS, VARIANTS, transformer_relpath
from hea_screen.inference.bundle_files import TOKENIZER_DIR

log = logging.getLogger(__name__)

#: Largest relative difference allowed between the fp32 network and the run's recorded
#: out-of-fold predictions.
REPRODUCE_RTOL = 1e-3


@dataclass(frozen=True)
class VariantOptions:
    """Which precision variants of the transformer to write, under which parity bounds."""

    variants: tuple[str, ...] = VARIANTS
    bounds: ParityBounds = field(default_factory=ParityBounds)

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or "fp32" not in self.variants:
            raise UserInputError(
                f"variants {list(self.variants)}: choose among {', '.join(VARIANTS)}, fp32 "
                "included (the reference every other variant is checked against)"
            )


def write_transformer(
    run: Path,
    src: Path,
    staging: Path,
    n_folds: int,
    data: Any,
    recorded: pl.DataFrame,
    options: VariantOptions,
) -> dict[str, Any]:
    """Export the fold networks of ``src`` (a seed's folds) and their variants into
    ``staging``, with the tokenizer they read; returns the encoder, the folds' scalers and
    the manifest's ``transformer`` entry."""
    from pretrain.multitask import OUTPUT_TASKS, SCALERS_FILE, load_encoder, load_fold

    if tuple(OUTPUT_TASKS) != TRANSFORMER_OUTPUTS:
        raise UserInputError("the multi-task model's outputs differ from the bundle layout")
    encoder = load_encoder(run / TOKENIZER_DIR)
    encoder.save(staging / TOKENIZER_DIR)
    produced = tuple(v for v in VARIANTS if v in options.variants)
    parity: dict[str, list[FoldParity]] = {v: [] for v in produced}
    fusions: dict[str, Any] = {}
    scalers, sizes = [], set()
    with tempfile.TemporaryDirectory(prefix="hea-export-") as work_dir:
        work = Path(work_dir)
        for fold in range(n_folds):
            fold_dir = src / f"fold_{fold}"
            if not (fold_dir / SCALERS_FILE).is_file():
                raise UserInputError(
                    f"{fold_dir} holds no transformer fold: rerun the conditions step"
                )
            model, _ = load_fold(fold_dir)
            size = model_size(model)
            sizes.add(size)
            scalers.append(json.loads((fold_dir / SCALERS_FILE).read_text(encoding="utf-8")))
            raw = export_onnx(model, work / f"fold_{fold}.raw.onnx", n_outputs=len(OUTPUT_TASKS))
            paths = {v: work / transformer_relpath(fold, v) for v in produced}
            fusions["fp32"] = optimize_fp32(raw, paths["fp32"], size)
            if "int8" in paths:
                fusions["int8"] = make_int8(paths["fp32"], paths["int8"])
            if "fp16" in paths:
                fusions["fp16"] = make_fp16(raw, paths["fp16"], size)
            rows = data.frame[recorded.filter(pl.col("fold") == fold)["row"].unique().sort()]
            encoded = encoder.encode_rows(rows)
            reference = torch_outputs(model, encoded)
            measured = _measured(rows, scalers[-1])
            for variant, path in paths.items():
                check_graph(path, len(OUTPUT_TASKS))
                provider = parity_provider(variant)
                candidate = onnx_outputs(str(path), encoded, provider)
                result = compare(
                    variant, fold, reference, candidate, measured, provider, options.bounds
                )
                log.info("transformer %s fold %d: %s", variant, fold, result.reason)
                parity[variant].append(result)
        if len(sizes) != 1:
            raise UserInputError(f"the transformer's fold networks differ in size: {sizes}")
        variants = decide(parity, options.variants, options.bounds, fusions)
        for variant, info in variants.items():
            if info["written"]:
                info["files"] = [transformer_relpath(k, variant) for k in range(n_folds)]
                for rel in info["files"]:
                    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(work / rel, staging / rel)
    (size,) = sizes
    info = {
        "vocab_size": encoder.vocab_size,
        "condition_tokens": list(encoder.condition_inputs),
        "outputs": list(TRANSFORMER_OUTPUTS),
        "folds": n_folds,
        "max_length": size.max_position_embeddings,
        "model": size.as_json(),
        "variants": variants,
    }
    return {"encoder": encoder, "scalers": scalers, "info": info}


def _measured(rows: pl.DataFrame, scaler: dict[str, Any]) -> Measured:
    """Per regression output column: the rows that measured that task and their values,
    standardized with the fold's scaler."""
    out = {}
    for name, s in scaler.items():
        hits = np.flatnonzero((rows["task"] == name).to_numpy())
        values = rows["value"].to_numpy()[hits]
        out[TRANSFORMER_OUTPUTS.index(name)] = (hits, (values - s["mean"]) / s["std"])
    return out


def transformer_task(
    staging: Path, shared: dict[str, Any], data: Any, recorded: pl.DataFrame, name: str
) -> list[dict[str, Any]]:
    """Fold entries of a task shipped with the transformer, each checked to reproduce the
    run's out-of-fold predictions with ONNX Runtime (fp32 networks)."""
    encoder = shared["encoder"]
    mine = recorded.filter(pl.col("task") == name)
    folds = []
    for fold, scaler in enumerate(shared["scalers"]):
        part = mine.filter(pl.col("fold") == fold)
        feed = encoder.encode_rows(data.frame[part["row"].to_numpy()]).as_dict()
        rel = transformer_relpath(fold)
        session = ort.InferenceSession(str(staging / rel), providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], feed)[0]
        expected = part["predicted"].to_numpy()
        entry: dict[str, Any] = {"fold": fold, "file": rel}
        if name == PHASE.name:
            j = TRANSFORMER_OUTPUTS.index(f"{PHASE.name}_{PHASES[0]}")
            got = np.argmax(logits[:, j : j + len(PHASES)], axis=1)
            agree = float(np.mean(got == expected)) if len(got) else 1.0
            ok = agree >= 0.99
        else:
            mean, std = scaler[name]["mean"], scaler[name]["std"]
            got = logits[:, TRANSFORMER_OUTPUTS.index(name)] * std + mean
            ok = bool(np.allclose(got, expected, rtol=REPRODUCE_RTOL, atol=1e-3 * std))
            entry["scaler"] = {"mean": mean, "std": std}
        if not ok:
            raise UserInputError(
                f"{name} fold {fold}: the exported transformer does not reproduce the run's "
                "out-of-fold predictions"
            )
        folds.append(entry)
    return folds
