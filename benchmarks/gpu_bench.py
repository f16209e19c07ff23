"""GPU throughput of the multi-task transformer member: fp16, I/O binding, batch-size sweep.

One run, one table. For each batch size, random 5-element candidates of a sampled space
are featurized, encoded (one encoding per batch feeds every fold network) and run through
every fold network of the bundle's transformer on ONNX Runtime's CUDA provider, in fp16
(converted from the bundle's fp32 networks with inputs and outputs kept as they are), with
inputs and outputs bound to the GPU (I/O binding). It prints candidates/s end to end
(featurize + encode + every fold) and the share of that time spent in the networks, and,
in the same run, the fp32 CUDA figure at the largest batch as the reference.

    python -m benchmarks.gpu_bench --bundle BUNDLE [--batches 1024,4096,16384,65536]

The bundle must ship the transformer for at least one task (``hea-export --conditions`` of a
run whose selection picked it; the shipped default bundle ships tree ensembles only). Where
no CUDA provider is usable the script says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import onnxruntime as ort

CUDA = "CUDAExecutionProvider"


def fail(message: str) -> None:
    """Print ``message`` and exit with status 2."""
    print(f"gpu_bench: {message}", file=sys.stderr)
    raise SystemExit(2)


def fp16_bytes(fp32: bytes) -> bytes:
    """The fp32 network converted to fp16 inside, its inputs and outputs kept."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(fp32), keep_io_types=True)
    return model.SerializeToString()


def bound_run(session: ort.InferenceSession, feed: dict[str, ort.OrtValue]) -> None:
    """One run with inputs and output on the GPU (the output stays there)."""
    binding = session.io_binding()
    for name, value in feed.items():
        binding.bind_ortvalue_input(name, value)
    binding.bind_output("logits", "cuda", 0)
    session.run_with_iobinding(binding)
    binding.synchronize_outputs()


def sweep(bundle, sessions, space, batches: list[int], repeats: int) -> list[dict]:
    """candidates/s and model share per batch size (best of ``repeats``)."""
    from hea_screen.compositions.features import featurize
    from hea_screen.conditions import Condition

    rows = []
    for batch in batches:
        best = None
        for r in range(repeats + 1):  # the first pass warms up (CUDA kernels, allocator)
            lo = (r * batch) % max(1, space.size - batch)
            table = space.table(lo, lo + batch)
            t0 = time.perf_counter()
            feats = featurize(table)
            encoded = bundle.encoder.encode(table, feats, Condition()).as_dict()
            feed = {k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for k, v in encoded.items()}
            t1 = time.perf_counter()
            for session in sessions:
                bound_run(session, feed)
            t2 = time.perf_counter()
            if r and (best is None or t2 - t0 < best[0]):
                best = (t2 - t0, t2 - t1)
        total, model = best
        rows.append(
            {"batch": batch, "candidates_per_s": batch / total, "model_share": model / total}
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="condition-aware bundle with a transformer")
    p.add_argument("--batches", default="1024,4096,16384,65536")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from hea_screen.inference.runtime import cuda_usable

    if CUDA not in ort.get_available_providers() or not cuda_usable():
        fail(
            "no usable CUDA provider (ONNX Runtime providers: "
            f"{', '.join(ort.get_available_providers())}; an NVIDIA GPU must be visible): "
            "run this on a GPU machine; the GPU figures stay unmeasured (docs/benchmarks.md)"
        )
    from hea_screen.inference.bundle import TRANSFORMER, load_task_bundle
    from hea_screen.screening.space import SampledSpace
    from hea_screen.screening.spec import build_space, parse_elements

    bundle = load_task_bundle(args.bundle)
    files = next((t.files for t in bundle.tasks if t.kind == TRANSFORMER), None)
    if files is None or bundle.encoder is None:
        fail(f"{args.bundle} ships no transformer member: its tasks all use tabular models")
    options = ort.SessionOptions()
    options.log_severity_level = 3

    def sessions(convert) -> list[ort.InferenceSession]:
        return [
            ort.InferenceSession(convert(bundle.read(rel)), options, providers=[CUDA])
            for rel in files
        ]

    batches = [int(b) for b in args.batches.split(",")]
    space = SampledSpace(
        build_space(
            parse_elements("Al,Co,Cr,Cu,Fe,Mn,Mo,Nb,Ni,Ti,V,Zr"), min_elements=5, max_elements=5
        ),
        max(batches) * (args.repeats + 2),
        seed=0,
    )
    rows = [
        {"precision": "fp16", **r}
        for r in sweep(bundle, sessions(fp16_bytes), space, batches, args.repeats)
    ]
    rows += [
        {"precision": "fp32", **r}
        for r in sweep(bundle, sessions(bytes), space, batches[-1:], args.repeats)
    ]
    print(f"transformer: {len(files)} fold networks; {ort.get_device()}; 5-element candidates")
    print(f"{'precision':9} {'batch':>7} {'cand/s':>11} {'model share':>12} {'vs fp32':>8}")
    reference = rows[-1]["candidates_per_s"]
    for r in rows:
        print(
            f"{r['precision']:9} {r['batch']:>7,} {r['candidates_per_s']:>11,.0f} "
            f"{r['model_share']:>11.0%} {r['candidates_per_s'] / reference:>7.1f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
