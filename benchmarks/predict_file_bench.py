"""``hea-screen predict FILE`` against the main command, in one run: one table.

Every row runs the real command in a fresh process (``benchmarks.screen_bench.timed``):
rows per second over the process wall time (Python start-up, model load, reading, parsing,
every fold model of the ranked tasks and phase, nearest training data, ranking, writing
the CSV), and the peak resident memory.

Rows:

1. ``predict`` of a CSV of ``--rows`` random alloys (default 50,000: 3 to 6 of 11 elements,
   Dirichlet fractions to 0.001, seeded), full ensemble, written to CSV: the goal
   (>= 10,000 rows/s);
2. the same with the reference code (``--reference DIR``, a source tree of the code before
   the change) on the first ``--reference-rows`` (default 5,000) rows of the same file;
3. the main command (``hea-screen``, two stages, in process) on a sample of as many
   candidates of the 12-element space of ``screen_bench``: the screening speed a user
   compares with;
4. with ``--big N``, ``predict`` of N rows (the same generator) to CSV: the streaming path
   (peak memory against row 1).

    python -m benchmarks.predict_file_bench [--rows 50000] [--reference DIR] [--big N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.screen_bench import SPACE_1E7, run_cli, timed

ELEMENTS = ("Al", "Co", "Cr", "Cu", "Fe", "Mn", "Mo", "Nb", "Ni", "Ti", "V")


def random_alloys(rng: np.random.Generator, rows: int) -> list[str]:
    """``rows`` alloy texts of 3 to 6 of :data:`ELEMENTS`, fractions of at least 0.02."""
    texts = []
    for _ in range(rows):
        k = int(rng.integers(3, 7))
        els = rng.choice(ELEMENTS, k, replace=False)
        x = 0.02 + rng.dirichlet(np.ones(k)) * (1 - 0.02 * k)
        texts.append("".join(f"{el}{v:.3f}" for el, v in zip(els, x)))
    return texts


def write_alloys(path: Path, rows: int, seed: int = 0) -> Path:
    """A CSV of ``rows`` random alloys (column ``composition``), the same for a seed."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("composition\n")
        for start in range(0, rows, 100_000):
            f.write("\n".join(random_alloys(rng, min(100_000, rows - start))) + "\n")
    return path


def predict_row(source: Path, out: Path, rows: int, code: Path | None = None) -> dict[str, float]:
    _, wall, peak = timed(["predict", str(source), "--out", str(out)], code)
    return {"rows": rows, "rows_per_s": rows / wall, "wall_s": wall, "peak_rss_mib": peak}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--reference", type=Path, help="source tree of the reference code")
    p.add_argument("--reference-rows", type=int, default=5_000)
    p.add_argument("--big", type=int, default=0, help="also predict a file of N rows")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args()
    table: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = write_alloys(work / "alloys.csv", args.rows)
        row = predict_row(source, work / "out.csv", args.rows)
        table.append((f"predict FILE, {args.rows:,} rows", row))
        if args.reference:
            small = write_alloys(work / "small.csv", args.reference_rows)
            ref = predict_row(small, work / "ref.csv", args.reference_rows, args.reference)
            table.append((f"predict FILE, {args.reference_rows:,} rows, reference code", ref))
        screen = run_cli([*SPACE_1E7, "--sample", str(args.rows)])
        table.append(
            (
                f"main command, sample of {args.rows:,} (12 elements)",
                {
                    "rows": float(screen["candidates"]),  # type: ignore[arg-type]
                    "rows_per_s": screen["candidates"] / screen["wall_s"],  # type: ignore[operator]
                    "wall_s": screen["wall_s"],  # type: ignore[dict-item]
                    "peak_rss_mib": screen["peak_rss_mib"],  # type: ignore[dict-item]
                },
            )
        )
        if args.big:
            big = write_alloys(work / "big.csv", args.big, seed=1)
            table.append(
                (f"predict FILE, {args.big:,} rows", predict_row(big, work / "b.csv", args.big))
            )
    header = f"{'run':52} {'rows':>10} {'rows/s':>9} {'wall s':>8} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    for name, r in table:
        print(
            f"{name:52} {r['rows']:>10,.0f} {r['rows_per_s']:>9,.0f} {r['wall_s']:>8.1f} "
            f"{r['peak_rss_mib']:>9.1f}"
        )
    first = table[0][1]["rows_per_s"]
    by_name = dict(table)
    for name, r in table[1:]:
        print(f"predict FILE rate / {name}: {first / r['rows_per_s']:.2f}x")
    print("(rates over the process wall time, start-up included)")
    print(f"CPU cores: {os.cpu_count()}; load average: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(by_name, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
