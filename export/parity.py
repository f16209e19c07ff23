"""Parity of each ONNX variant against the PyTorch model it came from.

Measured per fold on that fold's cross-validation test compositions (rows ``test`` of
``split.json`` in ``finetune/<target>/dataset.csv``), all in one padded batch, on
standardized outputs (the model's own scale):

- fp32: max |onnx − torch| ≤ 1e-4;
- fp16: max |onnx − torch| ≤ 1e-2, on the CUDA provider when a GPU is usable, else on the
  CPU provider, where ONNX Runtime runs float16 nodes that lack CPU kernels through
  inserted casts to float32 (the manifest says which; float16 arithmetic on a GPU is then
  not measured);
- int8: Spearman correlation with torch ≥ 0.99 and R² (against the measured,
  standardized targets) at most 0.01 below torch's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort
import torch
from scipy.stats import spearmanr
from transformers import BertForSequenceClassification

from export.onnx_export import OUTPUT_NAME
from hea_screen.inference.runtime import CPU, CUDA, cuda_usable
from hea_screen.inference.tokens import Encoded


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
    """Agreement of one variant of one fold model with PyTorch on the fold's test rows."""

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
    """Standardized predictions of the PyTorch model, shape (rows,)."""
    with torch.inference_mode():
        inputs = {k: torch.from_numpy(v) for k, v in encoded.as_dict().items()}
        return model(**inputs).logits[:, 0].double().numpy()


def parity_provider(variant: str) -> str:
    """Provider a variant's parity is measured on: CUDA for fp16 when usable, else CPU."""
    return CUDA if variant == "fp16" and cuda_usable() else CPU


def onnx_outputs(path: str, encoded: Encoded, provider: str) -> np.ndarray:
    """Standardized predictions of an ONNX file with ONNX Runtime, shape (rows,)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = [provider, CPU] if provider == CUDA else [CPU]
    session = ort.InferenceSession(path, options, providers=providers)
    used = session.get_providers()[0]
    if used != provider:
        raise RuntimeError(f"parity of {path} was to run on {provider}, ONNX Runtime chose {used}")
    return session.run([OUTPUT_NAME], encoded.as_dict())[0][:, 0].astype(np.float64)


def compare(
    variant: str,
    fold: int,
    reference: np.ndarray,
    candidate: np.ndarray,
    y_standardized: np.ndarray,
    provider: str,
    bounds: ParityBounds,
) -> FoldParity:
    """Score ``candidate`` against the PyTorch ``reference`` and decide pass or fail."""
    max_abs = float(np.max(np.abs(candidate - reference)))
    rho = float(spearmanr(candidate, reference).statistic) if len(reference) > 1 else float("nan")
    r2_ref, r2_var = r2(y_standardized, reference), r2(y_standardized, candidate)
    if variant == "fp32":
        passed, reason = (
            max_abs <= bounds.fp32_max_abs,
            f"max abs error {max_abs:.3g} (bound {bounds.fp32_max_abs:g})",
        )
    elif variant == "fp16":
        passed, reason = (
            max_abs <= bounds.fp16_max_abs,
            f"max abs error {max_abs:.3g} (bound {bounds.fp16_max_abs:g})",
        )
    elif variant == "int8":
        loss = r2_ref - r2_var
        passed = rho >= bounds.int8_min_spearman and loss <= bounds.int8_max_r2_loss
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
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    return 1.0 - float(np.sum((y_true - y_pred) ** 2)) / total if total > 0 else float("nan")
