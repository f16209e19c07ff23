"""Precision variants of an exported graph: fused fp32, fp16 for CUDA, int8 for CPUs.

- **fp32**: ONNX Runtime's transformer optimizer (``onnxruntime.transformers.optimizer``,
  model type ``bert`` with the model's head count and hidden size) fuses the embedding
  sum + LayerNorm (``EmbedLayerNormalization``), the self-attention block (``Attention``),
  residual + LayerNorm (``SkipLayerNormalization``) and bias + GELU (``BiasGelu``). The
  fused graph uses portable contrib ops that run on the CPU and CUDA providers; the
  predictor additionally enables every ONNX Runtime graph optimization when it opens a
  session.
- **fp16**: the same fusions for the GPU, then weights and activations converted to
  float16 with inputs and output kept as int64 / float32 (``keep_io_types``).
- **int8**: ``onnxruntime.quantization.quantize_dynamic`` on the fused fp32 graph:
  int8 weights, activations quantized per batch at run time (``MatMulInteger``,
  ``QAttention``, ``QEmbedLayerNormalization``), for the CPU provider.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model

from export.onnx_export import ModelSize

log = logging.getLogger(__name__)

#: Fused operators worth reporting in the manifest.
_FUSIONS = (
    "EmbedLayerNormalization",
    "Attention",
    "SkipLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)


def optimize_fp32(src: Path, dst: Path, size: ModelSize) -> dict[str, int]:
    """Fuse ``src`` for BERT and save it to ``dst``; returns the count of each fused operator."""
    return _optimize(src, dst, size, use_gpu=False, fp16=False)


def make_fp16(src: Path, dst: Path, size: ModelSize) -> dict[str, int]:
    """Fuse ``src`` for the CUDA provider and convert it to float16 (int64 in, float32 out)."""
    return _optimize(src, dst, size, use_gpu=True, fp16=True)


def make_int8(src: Path, dst: Path) -> dict[str, int]:
    """Dynamically quantize ``src`` (the fused fp32 graph) to int8 weights; returns op counts."""
    quantize_dynamic(
        src,
        dst,
        weight_type=QuantType.QInt8,
        # The fused contrib ops defeat ONNX shape inference; their outputs are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    quantized = {
        op: ops.count(op) for op in ("MatMulInteger", "QAttention", "QEmbedLayerNormalization")
    }
    log.info("int8 %s: %s", dst.name, quantized)
    return quantized


def _optimize(src: Path, dst: Path, size: ModelSize, use_gpu: bool, fp16: bool) -> dict[str, int]:
    model = optimize_model(
        str(src),
        model_type="bert",
        num_heads=size.num_heads,
        hidden_size=size.hidden_size,
        opt_level=0,
        use_gpu=use_gpu,
    )
    stats = model.get_fused_operator_statistics()
    fused = {op: int(stats.get(op, 0)) for op in _FUSIONS if stats.get(op)}
    if fused.get("Attention", 0) != size.num_layers:
        log.warning(
            "%s: %d of %d attention blocks fused",
            dst.name,
            fused.get("Attention", 0),
            size.num_layers,
        )
    if fp16:
        model.convert_float_to_float16(keep_io_types=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    model.save_model_to_file(str(dst))
    return fused
