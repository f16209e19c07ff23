"""ONNX Runtime for every predictor: execution providers (CPU, CUDA), the precisions each runs,
whether a GPU is usable, and the session options all sessions share."""

from __future__ import annotations

import glob

import onnxruntime as ort

#: Execution providers, the ``device`` options and the ``precision`` options.
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "int8")

#: Precisions each provider runs, in the order ``precision="auto"`` prefers them.
PROVIDER_PRECISIONS: dict[str, tuple[str, ...]] = {CUDA: ("fp16", "fp32"), CPU: ("int8", "fp32")}


def cuda_usable() -> bool:
    """Whether ONNX Runtime has its CUDA provider and an NVIDIA GPU is visible."""
    if CUDA not in ort.get_available_providers():
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/proc/driver/nvidia/gpus/*"))


def session_options(threads: int | None) -> ort.SessionOptions:
    """ONNX Runtime options of every predictor session: all graph optimizations, quiet, no
    per-session memory arena, no per-shape memory pattern and no spinning of idle threads,
    ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # one arena per session would keep each fold model's peak buffers for good: with
    # 10 sessions at batch 512 that measured 1.15 GB resident against 0.24 GB without,
    # at the same speed (docs/inference.md)
    options.enable_cpu_mem_arena = False
    # a memory pattern (an allocation plan) is cached per distinct input shape, and
    # length-bucketed batches of a sampled space have hundreds of shapes: on, RSS crept
    # from 0.23 to 0.45 GB over 25 batches of 1,024; off, it stayed at 0.19-0.23 GB
    options.enable_mem_pattern = False
    # idle intra-op threads spin by default, waiting for the next call: on this shared
    # 2-core machine under load (load average 5-10), 5 uts folds x 13 batches of 4,096 took
    # 3.6-4.8 s spinning against 1.0-2.1 s without (docs/benchmarks.md, issue 21)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options
