"""Inference throughput of the transformer member: this engine (ONNX Runtime,
length-bucketed) vs the paper-style path.

For N random 5-element compositions (seeded), at tension, 25 °C, as-cast, measured end to
end from a ``CompositionTable`` (features + tokens + model), compositions per second:

- paper-style: PyTorch ``transformers`` with every input padded to 512 tokens, batch 64
  (defect 5 of the paper's release), on the transformer's fold 0. The model is the very
  same trained network: its position embeddings are copied into a 512-position copy
  (rows beyond the original only ever see padding, which the attention mask hides), and the
  benchmark checks that its outputs equal the ONNX fp32 outputs;
- this engine, one network: ONNX Runtime on the same fold's ONNX file, rows grouped by
  length (here all 29 tokens: no padding at all), batch 1024, fp32 and int8; with the
  fraction of a measured fp32 ONNX Runtime matmul throughput that the network alone reaches
  (its FLOPs over the time of the network calls on pre-tokenized batches);
- this engine, the full predictor (``hea_screen.load_model``): every fold network, every
  task the transformer ships for, fold mean and std, intervals, applicability columns;
  fp32 and int8;
- on a GPU (CUDA provider usable): the fp16 predictor with large batches, and the fraction
  of the GPU's measured fp16 matmul throughput it reaches end to end; otherwise the GPU
  row says "not measured (no GPU)".

Run::

    python -m benchmarks.inference_bench --bundle BUNDLE --run RUN [--json out.json]

The bundle is a condition-aware bundle with the transformer member in fp32 and int8
(``hea-export --conditions RUN --member transformer``); ``RUN`` is the training run it was
exported from (the PyTorch fold network is read from ``RUN/conditions/transformer/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from transformers import BertForSequenceClassification

from hea_screen import featurize, load_model
from hea_screen.compositions.composition import SCALE
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import Condition
from hea_screen.inference.bundle import TRANSFORMER, TaskBundle, load_task_bundle
from hea_screen.inference.runtime import CPU, CUDA, cuda_usable
from pretrain.atomic import write_text_atomic

PALETTE = ("Al", "Co", "Cr", "Cu", "Fe", "Mn", "Mo", "Nb", "Ni", "Ti", "V", "Zr")
PAPER_LENGTH = 512
PAPER_BATCH = 64


def five_element_table(n: int, seed: int = 0) -> CompositionTable:
    """``n`` random 5-element compositions over :data:`PALETTE` (5 to 35 at.% each)."""
    rng = np.random.default_rng(seed)
    micro = np.zeros((n, len(PALETTE)), dtype=np.int32)
    for r in range(n):
        cols = rng.choice(len(PALETTE), 5, replace=False)
        weights = rng.uniform(1.0, 7.0, 5)
        amounts = np.floor(weights / weights.sum() * SCALE).astype(np.int32)
        amounts[0] += SCALE - amounts.sum()
        micro[r, cols] = amounts
    return CompositionTable(PALETTE, micro)


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls (after one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def paper_model(model_dir: Path) -> BertForSequenceClassification:
    """The fold model with its position table widened to 512 (rows past the original are 0)."""
    small = BertForSequenceClassification.from_pretrained(model_dir).eval()
    config = small.config.to_dict() | {"max_position_embeddings": PAPER_LENGTH}
    wide = BertForSequenceClassification(type(small.config).from_dict(config)).eval()
    state = small.state_dict()
    key = "bert.embeddings.position_embeddings.weight"
    grown = torch.zeros(PAPER_LENGTH, small.config.hidden_size)
    grown[: state[key].shape[0]] = state[key]
    state[key] = grown
    buffers = {"bert.embeddings.position_ids", "bert.embeddings.token_type_ids"}
    missing, unexpected = wide.load_state_dict(
        {k: v for k, v in state.items() if k not in buffers}, strict=False
    )
    assert set(missing) <= buffers and not unexpected, (missing, unexpected)
    return wide


def encode(bundle: TaskBundle, table: CompositionTable) -> Any:
    """Tokens of ``table`` at tension, 25 °C, as-cast (the condition tokens change no cost)."""
    assert bundle.encoder is not None
    return bundle.encoder.encode(table, featurize(table), Condition())


def paper_path(
    model: BertForSequenceClassification, bundle: TaskBundle, table: CompositionTable
) -> np.ndarray:
    """Features, tokens padded to 512, PyTorch forward in batches of 64: raw outputs."""
    encoded = encode(bundle, table)
    pad = PAPER_LENGTH - encoded.input_ids.shape[1]
    arrays = {k: np.pad(v, ((0, 0), (0, pad))) for k, v in encoded.as_dict().items()}
    out = []
    with torch.inference_mode():
        for start in range(0, len(table), PAPER_BATCH):
            batch = {k: torch.from_numpy(v[start : start + PAPER_BATCH]) for k, v in arrays.items()}
            out.append(model(**batch).logits.numpy())
    return np.concatenate(out)


def engine_one_model(
    session: ort.InferenceSession, bundle: TaskBundle, table: CompositionTable, batch: int
) -> np.ndarray:
    """Features, tokens grouped by length (no padding), ONNX Runtime in batches of ``batch``."""
    features = featurize(table)
    counts = (table.micro > 0).sum(axis=1)
    out = np.empty((len(table), session.get_outputs()[0].shape[1]), dtype=np.float32)
    assert bundle.encoder is not None
    for k in np.unique(counts):
        rows = np.flatnonzero(counts == k)
        encoded = bundle.encoder.encode(table.take(rows), features[rows], Condition())
        for start in range(0, len(rows), batch):
            feed = {name: v[start : start + batch] for name, v in encoded.as_dict().items()}
            out[rows[start : start + batch]] = session.run(["logits"], feed)[0]
    return out


def cpu_session(blob: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(blob, options, providers=[CPU])


def flops_per_composition(model: dict[str, int], tokens: int) -> float:
    """Multiply-add FLOPs of one forward pass of one model over ``tokens`` tokens."""
    h, inter, layers = model["hidden_size"], model["intermediate_size"], model["num_layers"]
    per_token_layer = 8 * h * h + 4 * h * inter + 4 * tokens * h
    return float(layers * tokens * per_token_layer + 2 * h * h + 2 * h)


def matmul_flops_per_second(provider: str, n: int, fp16: bool, repeats: int = 5) -> float:
    """Measured throughput of one n x n MatMul in ONNX Runtime on ``provider``."""
    dtype, np_dtype = (TensorProto.FLOAT16, np.float16) if fp16 else (TensorProto.FLOAT, np.float32)
    rng = np.random.default_rng(0)
    weight = helper.make_tensor(
        "b", dtype, (n, n), rng.standard_normal((n, n)).astype(np_dtype).tobytes(), raw=True
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("a", dtype, (n, n))],
        [helper.make_tensor_value_info("y", dtype, (n, n))],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), providers=[provider])
    a = rng.standard_normal((n, n)).astype(np_dtype)
    device = "cuda" if provider == CUDA else "cpu"
    binding = session.io_binding()
    binding.bind_ortvalue_input("a", ort.OrtValue.ortvalue_from_numpy(a, device, 0))
    binding.bind_output("y", device, 0)
    seconds = best_seconds(lambda: session.run_with_iobinding(binding), repeats)
    return 2.0 * n**3 / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--bundle",
        type=Path,
        required=True,
        help="bundle with the transformer in fp32 and int8 (hea-export --member transformer)",
    )
    p.add_argument("--run", type=Path, required=True, help="training run of the bundle")
    p.add_argument("--n", type=int, default=2048, help="compositions for the engine rows")
    p.add_argument("--torch-n", type=int, default=256, help="compositions for the paper-style row")
    p.add_argument("--gpu-n", type=int, default=200_000, help="compositions for the GPU row")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)

    bundle = load_task_bundle(args.bundle)
    missing = [v for v in ("fp32", "int8") if v not in bundle.variants]
    if missing:
        p.error(
            f"{args.bundle} lacks the transformer's {', '.join(missing)} "
            f"({'; '.join(bundle.variant_note(v) for v in missing)})"
        )
    manifest = bundle.manifest
    model = manifest[TRANSFORMER]["model"]
    seed = manifest["protocol"]["shipped_seed"]
    model_dir = args.run / "conditions" / TRANSFORMER / f"seed_{seed}" / "fold_0" / "model"
    tasks = [t.task.name for t in bundle.tasks if t.kind == TRANSFORMER]
    threads = torch.get_num_threads()
    table = five_element_table(args.n)
    tokens = 2 * 5 + 2 + 15 + 2  # 5 elements, [CLS] and 2 [SEP], 14 features, 2 conditions
    n_models = len(bundle.variants["fp32"])
    per_comp = flops_per_composition(model, tokens)
    cpu_matmul = matmul_flops_per_second(CPU, 1024, fp16=False)

    rows: list[dict[str, Any]] = []

    def add(
        name: str, provider: str, precision: str, models: int, n: int, seconds: float, **extra: Any
    ) -> None:
        rows.append(
            {
                "path": name,
                "provider": provider,
                "precision": precision,
                "models": models,
                "n": n,
                "seconds": seconds,
                "compositions_per_s": n / seconds,
                "model_evaluations_per_s": n * models / seconds,
                **extra,
            }
        )

    wide = paper_model(model_dir)
    small = table.take(np.arange(args.torch_n))
    paper_out = paper_path(wide, bundle, small)
    add(
        "paper-style: PyTorch, pad 512, batch 64",
        "torch CPU",
        "fp32",
        1,
        args.torch_n,
        best_seconds(lambda: paper_path(wide, bundle, small), max(1, args.repeats - 1)),
    )

    encoded = encode(bundle, table)
    feeds = [
        {k: v[i : i + 1024] for k, v in encoded.as_dict().items()} for i in range(0, args.n, 1024)
    ]
    for precision in ("fp32", "int8"):
        session = cpu_session(bundle.read(bundle.variants[precision][0]))
        out = engine_one_model(session, bundle, small, 1024)
        gap = float(np.max(np.abs(out - paper_out)))
        seconds = best_seconds(
            lambda s=session: engine_one_model(s, bundle, table, 1024), args.repeats
        )
        model_only = best_seconds(
            lambda s=session: [s.run(["logits"], feed) for feed in feeds], args.repeats
        )
        add(
            "this engine: ORT, length-bucketed, batch 1024",
            CPU,
            precision,
            1,
            args.n,
            seconds,
            max_abs_diff_vs_paper_path=gap,
            model_only_evaluations_per_s=args.n / model_only,
            fraction_of_matmul_peak=args.n / model_only * per_comp / cpu_matmul,
        )

    for precision in ("fp32", "int8"):
        predictor = load_model(args.bundle, device="cpu", precision=precision)
        seconds = best_seconds(
            lambda pr=predictor: pr.predict(table, Condition(), tasks), max(1, args.repeats - 1)
        )
        add(
            "this engine: full predictor (all folds, std, applicability)",
            CPU,
            precision,
            n_models,
            args.n,
            seconds,
        )

    gpu: dict[str, Any] = {"measured": False, "note": "not measured (no GPU)"}
    if cuda_usable() and "fp16" in bundle.variants:
        predictor = load_model(args.bundle, device="cuda", precision="fp16", batch_size=16384)
        if predictor.provider == CUDA:
            big = five_element_table(args.gpu_n, seed=1)
            seconds = best_seconds(
                lambda: predictor.predict(big, Condition(), tasks), args.repeats
            )
            peak = matmul_flops_per_second(CUDA, 8192, fp16=True)
            add(
                "this engine: full predictor, fp16 + I/O binding, batch 16384",
                CUDA,
                "fp16",
                n_models,
                args.gpu_n,
                seconds,
            )
            rows[-1]["fraction_of_matmul_peak"] = (
                rows[-1]["model_evaluations_per_s"] * per_comp / peak
            )
            gpu = {"measured": True, "matmul_fp16_flops_per_s": peak}

    paper_rate = rows[0]["model_evaluations_per_s"]
    for row in rows:
        row["speedup_vs_paper"] = row["model_evaluations_per_s"] / paper_rate

    print(
        f"{len(table):,} five-element compositions ({tokens} tokens each); model: hidden "
        f"{model['hidden_size']}, {model['num_layers']} layers; "
        f"{os.cpu_count()} CPUs, torch threads {threads}, onnxruntime {ort.__version__}"
    )
    header = (
        f"{'path':62s} {'precision':9s} {'models':>6s} {'comp/s':>10s} {'model-evals/s':>14s} "
        f"{'speedup':>8s} {'of matmul':>9s}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        frac = row.get("fraction_of_matmul_peak")
        print(
            f"{row['path']:62s} {row['precision']:9s} {row['models']:6d} "
            f"{row['compositions_per_s']:10.1f} "
            f"{row['model_evaluations_per_s']:14.1f} {row['speedup_vs_paper']:7.1f}x "
            f"{'' if frac is None else f'{frac:8.1%}':>9s}"
        )
    if not gpu["measured"]:
        print(f"{'GPU fp16 (CUDA provider, I/O binding, large batches)':62s} {gpu['note']}")
    gaps = [r["max_abs_diff_vs_paper_path"] for r in rows if "max_abs_diff_vs_paper_path" in r]
    print(
        f"same model: max |ORT - PyTorch pad-512| = {gaps[0]:.2e} (fp32), {gaps[1]:.2e} (int8), "
        "standardized units"
    )
    print(
        f"CPU fp32 matmul (1024^3, ORT): {cpu_matmul / 1e9:.1f} GFLOP/s; "
        f"model cost {per_comp / 1e6:.1f} MFLOP per composition per model"
    )

    if args.json:
        result = {
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "torch_threads": threads,
                "onnxruntime": ort.__version__,
                "onnx": onnx.__version__,
            },
            "bundle": str(args.bundle),
            "model": model,
            "tokens": tokens,
            "flops_per_composition_per_model": per_comp,
            "cpu_matmul_fp32_flops_per_s": cpu_matmul,
            "gpu": gpu,
            "rows": rows,
        }
        write_text_atomic(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
