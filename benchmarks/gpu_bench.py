"""GPU throughput of the transformer member of a bundle: fp16, I/O binding, batch-size sweep.

One run, one table. For each batch size, 5-element candidates of a sampled space are
featurized and predicted by the bundle's predictor (``hea_screen.load_model``: tokens grouped
by length, one encoding per batch feeds every fold network, inputs and outputs bound to the
GPU) on ONNX Runtime's CUDA provider with the bundle's fp16 variant, for every task the
transformer ships for (no applicability columns). It prints candidates/s end to end
(featurize + predict) and the share of that time spent in ``predict``, and, in the same run,
the fp32 CUDA figure at the largest batch as the reference.

    python -m benchmarks.gpu_bench --bundle BUNDLE [--batches 1024,4096,16384,65536]
    python -m benchmarks.gpu_bench --bundle BUNDLE --device cpu    # the same sweep on CPUs

The bundle must ship the transformer (``hea-export --conditions RUN --member transformer``,
or a run whose selection picked it; the shipped default bundle ships tree ensembles only).
Where no CUDA provider is usable, ``--device cuda`` (the default) says so and exits with
status 2; ``--device cpu`` runs the same sweep on the CPU provider with the int8 variant (fp32
where the bundle has no int8), against fp32, so the script can be checked on any machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import onnxruntime as ort


def fail(message: str) -> None:
    """Print ``message`` and exit with status 2."""
    print(f"gpu_bench: {message}", file=sys.stderr)
    raise SystemExit(2)


def sweep(
    bundle: str, device: str, precision: str, space: Any, batches: list[int], repeats: int
) -> list[dict[str, Any]]:
    """candidates/s and predict share per batch size (best of ``repeats``)."""
    from hea_screen.compositions.features import featurize
    from hea_screen.conditions import Condition
    from hea_screen.inference.bundle import TRANSFORMER
    from hea_screen.inference.predictor import load_model

    rows = []
    for batch in batches:
        predictor = load_model(bundle, device, precision, batch_size=batch)
        tasks = [t.task.name for t in predictor.bundle.tasks if t.kind == TRANSFORMER]
        best = None
        for r in range(repeats + 1):  # the first pass warms up (kernels, allocator)
            lo = (r * batch) % max(1, space.size - batch)
            table = space.table(lo, lo + batch)
            t0 = time.perf_counter()
            feats = featurize(table)
            t1 = time.perf_counter()
            predictor.predict(table, Condition(), tasks, feats, applicability=False)
            t2 = time.perf_counter()
            if r and (best is None or t2 - t0 < best[0]):
                best = (t2 - t0, t2 - t1)
        assert best is not None
        total, model = best
        rows.append(
            {
                "provider": predictor.provider,
                "precision": predictor.precision,
                "batch": batch,
                "candidates_per_s": batch / total,
                "predict_share": model / total,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="condition-aware bundle with a transformer")
    p.add_argument("--batches", default="1024,4096,16384,65536")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from hea_screen.errors import UserInputError
    from hea_screen.inference.bundle import load_task_bundle
    from hea_screen.inference.runtime import cuda_usable
    from hea_screen.screening.space import SampledSpace
    from hea_screen.screening.spec import build_space, parse_elements

    if args.device == "cuda" and not cuda_usable():
        fail(
            "no usable CUDA provider (ONNX Runtime providers: "
            f"{', '.join(ort.get_available_providers())}; an NVIDIA GPU must be visible): "
            "run this on a GPU machine (or --device cpu); the GPU figures stay unmeasured "
            "(docs/benchmarks.md)"
        )
    try:
        bundle = load_task_bundle(args.bundle)
    except UserInputError as exc:
        fail(str(exc))
    if not bundle.variants:
        fail(f"{args.bundle} ships no transformer member: its tasks all use tabular models")
    fast = "fp16" if args.device == "cuda" else "int8"
    if fast not in bundle.variants:
        print(f"gpu_bench: {args.bundle} has no {fast} variant ({bundle.variant_note(fast)}); "
              "sweeping fp32", file=sys.stderr)
        fast = "fp32"
    batches = [int(b) for b in args.batches.split(",")]
    space = SampledSpace(
        build_space(
            parse_elements("Al,Co,Cr,Cu,Fe,Mn,Mo,Nb,Ni,Ti,V,Zr"), min_elements=5, max_elements=5
        ),
        max(batches) * (args.repeats + 2),
        seed=0,
    )
    rows = sweep(args.bundle, args.device, fast, space, batches, args.repeats)
    rows += sweep(args.bundle, args.device, "fp32", space, batches[-1:], args.repeats)
    folds = len(bundle.variants["fp32"])
    print(f"transformer: {folds} fold networks; 5-element candidates")
    print(f"{'provider':22} {'precision':9} {'batch':>7} {'cand/s':>11} {'predict share':>14} "
          f"{'vs fp32':>8}")
    reference = rows[-1]["candidates_per_s"]
    for r in rows:
        print(
            f"{r['provider']:22} {r['precision']:9} {r['batch']:>7,} "
            f"{r['candidates_per_s']:>11,.0f} {r['predict_share']:>13.0%} "
            f"{r['candidates_per_s'] / reference:>7.1f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
