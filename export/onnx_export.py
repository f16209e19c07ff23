"""A fine-tuned fold model (``BertForSequenceClassification``) -> an ONNX graph, with optimum.

The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, shape
``(batch_size, sequence_length)``, both axes dynamic) and returns ``logits`` (float32,
``(batch_size, 1)``): the standardized target. :func:`check_graph` enforces that contract
on every exported file, since the predictor relies on it.

A multi-task fold of :mod:`pretrain.multitask` exports the same way
(:func:`export_multitask_fold`): same inputs (two more tokens per row, the condition
tokens), ``logits`` of shape ``(batch_size, len(OUTPUT_TASKS))``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from optimum.exporters.onnx import onnx_export_from_model
from transformers import BertForSequenceClassification

from hea_screen.errors import UserInputError
from pretrain.multitask import OUTPUT_TASKS, load_fold

log = logging.getLogger(__name__)

INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ModelSize:
    """Architecture facts the bundle manifest records and the graph optimizer needs."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    vocab_size: int
    parameters: int

    def as_json(self) -> dict[str, int | str]:
        return {
            "architecture": "BertForSequenceClassification",
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "parameters": self.parameters,
        }


def load_fold_model(model_dir: Path) -> BertForSequenceClassification:
    """Load a saved fold model (safetensors, offline) in eval mode; one regression output."""
    if not (model_dir / "config.json").is_file():
        raise UserInputError(f"{model_dir} holds no fine-tuned model (config.json missing)")
    model = BertForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
    if model.config.num_labels != 1:
        raise UserInputError(
            f"{model_dir}: expected a 1-output regression head, "
            f"found {model.config.num_labels} labels"
        )
    return model.eval()


def model_size(model: BertForSequenceClassification) -> ModelSize:
    """Size facts of a loaded fold model."""
    cfg = model.config
    return ModelSize(
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_hidden_layers,
        num_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        vocab_size=cfg.vocab_size,
        parameters=sum(p.numel() for p in model.parameters()),
    )


def export_onnx(
    model: BertForSequenceClassification,
    out_path: Path,
    opset: int | None = None,
    n_outputs: int = 1,
) -> Path:
    """Export ``model`` with optimum (task ``text-classification``) to ``out_path``; the graph
    must return ``n_outputs`` logits per row."""
    with tempfile.TemporaryDirectory(prefix="hea-onnx-") as tmp, warnings.catch_warnings():
        # Tracing notes about constants in transformers' mask helpers; the graph is checked below.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        onnx_export_from_model(
            model, tmp, task="text-classification", opset=opset, do_validation=False
        )
        exported = Path(tmp) / "model.onnx"
        check_graph(exported, n_outputs)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(exported, out_path)
    log.info("exported %s", out_path)
    return out_path


def export_multitask_fold(model_dir: Path, out_path: Path, opset: int | None = None) -> Path:
    """Export a multi-task fold (its ``out_dir`` or ``model/``) to ``out_path``: logits of
    shape ``(batch_size, len(OUTPUT_TASKS))``, standardized values then phase logits."""
    model, _ = load_fold(Path(model_dir))
    return export_onnx(model, Path(out_path), opset, n_outputs=len(OUTPUT_TASKS))


def graph_opset(path: Path) -> int:
    """The default-domain opset an ONNX file was exported with."""
    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_graph(path: Path, n_outputs: int = 1) -> None:
    """Raise if the graph's inputs and outputs differ from the predictor's contract
    (``n_outputs`` logits per row: 1 for a single-target fold)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    if tuple(sorted(inputs)) != tuple(sorted(INPUT_NAMES)):
        raise RuntimeError(f"{path}: inputs {sorted(inputs)}, expected {sorted(INPUT_NAMES)}")
    for name, tensor in inputs.items():
        dims = [d.dim_param for d in tensor.shape.dim]
        if tensor.elem_type != onnx.TensorProto.INT64 or len(dims) != 2 or not all(dims):
            raise RuntimeError(
                f"{path}: input {name} must be int64 with dynamic (batch, sequence) axes"
            )
    outputs = {o.name: o.type.tensor_type for o in graph.output}
    logits = outputs.get(OUTPUT_NAME)
    if logits is None or len(outputs) != 1:
        raise RuntimeError(f"{path}: outputs {sorted(outputs)}, expected only {OUTPUT_NAME}")
    dims = logits.shape.dim
    if (
        logits.elem_type != onnx.TensorProto.FLOAT
        or len(dims) != 2
        or not dims[0].dim_param
        or dims[1].dim_value != n_outputs
    ):
        raise RuntimeError(
            f"{path}: {OUTPUT_NAME} must be float32 of shape (batch_size, {n_outputs})"
        )
