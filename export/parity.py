"""Parity of each ONNX variant of the transformer member against the PyTorch model it came
from.

Measured per fold on that fold's out-of-fold rows (the measurements the fold held out, each
at its own condition), all in one padded batch, on the network's outputs (``(rows,
outputs)``: standardized regression values, then phase logits):

- fp32: max |onnx − torch| ≤ 1e-4 over every output;
- fp16: max |onnx − torch| ≤ 1e-2, on the CUDA provider when a GPU is usable, else on the
  CPU provider, where ONNX Runtime runs float16 nodes that lack CPU kernels through
  inserted casts to float32 (the manifest says which; float16 arithmetic on a GPU is then
  not measured);
- int8: Spearman correlation with torch ≥ 0.99 for every output (over all the fold's rows),
  and for every regression task R² against its measured, standardized values (on the rows
  that measured it) at most 0.01 below torch's; the worst output and task are recorded.

:func:`decide` turns the folds' parity into the manifest's verdict per variant: written only
if every fold meets its bound (an fp32 miss stops the export: the graph would be wrong).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from scipy.stats import spearmanr
from transformers import BertForSequenceClassification

from export.onnx_export import OUTPUT_NAME
from hea_screen.inference.bundle import VARIANTS
from hea_screen.inference.runtime import CPU, CUDA, cuda_usable
from hea_screen.inference.tokens import Encoded

log = logging.getLogger(__name__)

#: Providers each variant runs on (recorded in the manifest).
RUNS_ON: dict[str, list[str]] = {"fp32": [CPU, CUDA], "fp16": [CUDA], "int8": [CPU]}

#: Regression output columns with the rows that measured each and their standardized values.
Measured = Mapping[int, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ParityBounds:
    """Acceptance bounds of each variant (defaults from the export specification)."""

    fp32_max_abs: float = 1e-4
    fp16_max_abs: float = 1e-2
    int8_min_spearman: float = 0.99
    int8_max_r2_loss: float = 0.01

    def as_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class FoldParity:
    """Agreement of one variant of one fold network with PyTorch on the fold's test rows
    (``spearman``: the worst output; ``r2_torch``, ``r2_variant``: the task of largest loss)."""

    fold: int
    rows: int
    provider: str
    max_abs_error: float
    spearman: float
    r2_torch: float
    r2_variant: float
    passed: bool
    reason: str

    @property
    def r2_loss(self) -> float:
        return self.r2_torch - self.r2_variant

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "r2_loss": self.r2_loss}


def torch_outputs(model: BertForSequenceClassification, encoded: Encoded) -> np.ndarray:
    """Outputs of the PyTorch model, shape (rows, outputs)."""
    with torch.inference_mode():
        inputs = {k: torch.from_numpy(v) for k, v in encoded.as_dict().items()}
        return model(**inputs).logits.double().numpy()


def parity_provider(variant: str) -> str:
    """Provider a variant's parity is measured on: CUDA for fp16 when usable, else CPU."""
    return CUDA if variant == "fp16" and cuda_usable() else CPU


def onnx_outputs(path: str, encoded: Encoded, provider: str) -> np.ndarray:
    """Outputs of an ONNX file with ONNX Runtime on ``provider``, shape (rows, outputs)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = [provider, CPU] if provider == CUDA else [CPU]
    session = ort.InferenceSession(path, options, providers=providers)
    used = session.get_providers()[0]
    if used != provider:
        raise RuntimeError(f"parity of {path} was to run on {provider}, ONNX Runtime chose {used}")
    return session.run([OUTPUT_NAME], encoded.as_dict())[0].astype(np.float64)


def compare(
    variant: str,
    fold: int,
    reference: np.ndarray,
    candidate: np.ndarray,
    measured: Measured,
    provider: str,
    bounds: ParityBounds,
) -> FoldParity:
    """Score ``candidate`` against the PyTorch ``reference`` (both (rows, outputs)) and decide
    pass or fail; ``measured`` gives, per regression output column, the rows that measured
    it and their standardized values."""
    max_abs = float(np.max(np.abs(candidate - reference))) if reference.size else 0.0
    rhos = [
        float(spearmanr(candidate[:, c], reference[:, c]).statistic) if len(reference) > 1
        else float("nan")
        for c in range(reference.shape[1])
    ]
    rho = float(np.min(rhos)) if rhos else float("nan")  # NaN anywhere: not verified
    losses = []
    for c, (rows, y) in measured.items():
        r2_c, r2_v = r2(y, reference[rows, c]), r2(y, candidate[rows, c])
        if not np.isnan(r2_c - r2_v):
            losses.append((r2_c - r2_v, r2_c, r2_v))
    _, r2_ref, r2_var = max(losses, default=(float("nan"),) * 3)
    loss = r2_ref - r2_var
    if variant in ("fp32", "fp16"):
        bound = bounds.fp32_max_abs if variant == "fp32" else bounds.fp16_max_abs
        passed, reason = max_abs <= bound, f"max abs error {max_abs:.3g} (bound {bound:g})"
    elif variant == "int8":
        passed = rho >= bounds.int8_min_spearman and not loss > bounds.int8_max_r2_loss
        reason = (
            f"Spearman {rho:.4f} (bound >= {bounds.int8_min_spearman:g}), "
            f"R² loss {loss:.4f} (bound <= {bounds.int8_max_r2_loss:g})"
        )
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return FoldParity(
        fold, len(reference), provider, max_abs, rho, r2_ref, r2_var, bool(passed), reason
    )


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination of ``y_pred`` for ``y_true``."""
    total = float(np.sum((y_true - y_true.mean()) ** 2)) if len(y_true) else 0.0
    return 1.0 - float(np.sum((y_true - y_pred) ** 2)) / total if total > 0 else float("nan")


def decide(
    parity: Mapping[str, list[FoldParity]],
    requested: tuple[str, ...],
    bounds: ParityBounds,
    fusions: Mapping[str, Any],
) -> dict[str, Any]:
    """Per variant (of ``parity``: every variant produced): written or not, why, where it
    runs, its fused operators, the bounds and every fold's parity."""
    out: dict[str, Any] = {
        v: {"written": False, "reason": "not requested at export"}
        for v in VARIANTS
        if v not in parity
    }
    for variant, results in parity.items():
        failed = [f"fold {r.fold}: {r.reason}" for r in results if not r.passed]
        if variant == "fp32" and failed:
            raise RuntimeError("fp32 ONNX export disagrees with PyTorch: " + "; ".join(failed))
        if failed:
            reason = "missed its parity bound: " + "; ".join(failed)
        elif variant not in requested:
            reason = "passed parity but not requested for this bundle (--variants)"
        else:
            reason = "passed parity on every fold"
        if variant == "fp16" and any(r.provider != CUDA for r in results):
            reason += (
                "; measured on the CPU provider, where ONNX Runtime runs fp16 nodes through "
                "casts to fp32 (fp16 arithmetic on CUDA not measured: no CUDA)"
            )
        out[variant] = {
            "written": not failed and variant in requested,
            "reason": reason,
            "runs_on": RUNS_ON[variant],
            "fused_operators": dict(fusions.get(variant, {})),
            "bounds": bounds.as_json(),
            "parity": [r.as_json() for r in results],
        }
        if failed:
            log.warning("%s not written: %s", variant, reason)
    return out
