"""Benchmark: featurize random 5-element compositions, vectorized vs a per-row reference.

Run ``python -m benchmarks.featurize_bench [--rows 1000000] [--reference-rows 20000]``.
Each measurement runs in a fresh child process, so its peak resident memory (ru_maxrss) is
its own; "extra peak" is that peak minus the child's resident memory just before the call.
Two workloads: a fixed palette (Co, Cr, Fe, Mn, Ni with random fractions; the screening
case) and 5 elements drawn at random from every supported element pair-compatible with
each other (a 34-element palette). The reference is ``benchmarks/reference_features.py``
(plain Python, one composition at a time), timed in the same run on a subset. The
vectorized run is timed after a 1,000-row warm-up call (which builds the cached lookup of
fraction texts, about 1 s once per process); each is timed 3 times and the best is kept,
since these shared 2-core machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

import numpy as np

from hea_screen.compositions.composition import SCALE
from hea_screen.compositions.table import CompositionTable

CANTOR = ("Co", "Cr", "Fe", "Mn", "Ni")
REPEATS = 3  # each implementation is timed this many times; the best time is reported


def make_table(workload: str, rows: int, seed: int = 0) -> CompositionTable:
    """Random 5-element compositions (Dirichlet fractions, exact millionths)."""
    from hea_screen.compositions.elements import supported_elements

    rng = np.random.default_rng(seed)
    frac = rng.dirichlet(np.ones(5), size=rows)
    micro5 = np.floor(frac * SCALE).astype(np.int32)
    micro5[:, 0] += SCALE - micro5.sum(axis=1)
    if workload == "cantor":
        return CompositionTable(CANTOR, micro5)
    palette = tuple(el for el in supported_elements() if el != "Te")  # Te has no ΔH_ij
    cols = np.argsort(rng.random((rows, len(palette))), axis=1)[:, :5]
    micro = np.zeros((rows, len(palette)), dtype=np.int32)
    np.put_along_axis(micro, cols, micro5, axis=1)
    return CompositionTable(palette, micro)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(impl: str, workload: str, rows: int, queue: mp.Queue) -> None:
    table = make_table(workload, rows)
    if impl == "vectorized":
        from hea_screen.compositions.features import featurize

        featurize(table.take(np.arange(1000)))  # warm-up: builds the fraction-text lookup once
        before = _rss_mb()
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            featurize(table)
            times.append(time.perf_counter() - start)
    else:
        from benchmarks.reference_features import features_row, load_tables

        props, pairs = load_tables()
        comps = [table.composition(r).fractions for r in range(len(table))]
        before = _rss_mb()
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            for fractions in comps:
                features_row(fractions, props, pairs)
            times.append(time.perf_counter() - start)
    queue.put({"seconds": min(times), "extra_peak_mb": _rss_mb() - before, "peak_mb": _rss_mb()})


def measure(impl: str, workload: str, rows: int) -> dict[str, float]:
    """Run one measurement in a fresh process and return its timings and memory."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(impl, workload, rows, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return {"impl": impl, "workload": workload, "rows": rows, **result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the vectorized run")
    parser.add_argument(
        "--reference-rows", type=int, default=20_000, help="rows for the per-row run"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    results = []
    for workload in ("cantor", "random-5-of-34"):
        ref = measure("per-row reference", workload, args.reference_rows)
        vec = measure("vectorized", workload, args.rows)
        for r in (ref, vec):
            r["per_s"] = r["rows"] / r["seconds"]
        vec["speedup"] = vec["per_s"] / ref["per_s"]
        ref["speedup"] = 1.0
        results += [ref, vec]

    header = f"| {'workload':<15} | {'implementation':<18} | {'rows':>9} | {'s':>7} | "
    header += f"{'compositions/s':>14} | {'speed-up':>8} | {'peak MB':>8} | {'extra peak MB':>13} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in results:
        print(
            f"| {r['workload']:<15} | {r['impl']:<18} | {r['rows']:>9,} | {r['seconds']:>7.2f} | "
            f"{r['per_s']:>14,.0f} | {r['speedup']:>7.1f}x | {r['peak_mb']:>8.0f} | "
            f"{r['extra_peak_mb']:>13.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
