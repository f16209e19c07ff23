"""``hea-screen update`` on results files of growing size, in one run: one table.

Each row runs ``hea-screen update --measured FILE --store STORE --out NEW --no-refit`` in a
fresh process on a results CSV of N random specimens (3 to 6 of 11 elements, tension at
25 °C, as-cast, a tensile UTS and an elongation each: 2 N records), a new store each time,
and reports the process wall time, rows per second and peak resident memory. Goals: linear
in rows (the s per row of the largest against the smallest size) and 10^6 rows in under
2 minutes and 1 GB. ``--reference DIR`` runs the code before the change (a source tree) on
the smallest size in the same run (on the sizes of ``--reference-rows`` when given).
``--bad-row`` puts one bad row (an unknown element) in the middle of each file: the command
must refuse the file naming that row (exit 2), and the table gives what finding it cost.

    python -m benchmarks.update_bench [--rows 10000,100000,1000000] [--reference DIR]
        [--reference-rows 10000,1000000] [--bad-row]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.predict_file_bench import random_alloys
from benchmarks.screen_bench import timed

#: The bad row ``--bad-row`` puts in the middle of a file.
BAD_ROW = "Xx1,tension,25,cast,700.0,20.0"


def write_results(path: Path, rows: int, seed: int = 0, bad: bool = False) -> Path:
    """A results CSV of ``rows`` random specimens (module docstring); with ``bad``, row
    ``rows // 2`` is :data:`BAD_ROW`."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("composition,test_type,temperature_c,processing,uts_mpa,elongation_pct\n")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            uts, el = rng.uniform(300, 1500, n), rng.uniform(1, 60, n)
            lines = [
                f"{text},tension,25,cast,{u:.1f},{e:.1f}"
                for text, u, e in zip(random_alloys(rng, n), uts, el)
            ]
            if bad and start <= rows // 2 < start + n:
                lines[rows // 2 - start] = BAD_ROW
            f.write("\n".join(lines) + "\n")
    return path


def run_update(
    results: Path, work: Path, code: Path | None = None, bad_row: int | None = None
) -> dict[str, float]:
    """Wall time and peak RSS of one ``update --no-refit`` in a fresh process; with
    ``bad_row``, it must refuse the file naming that row."""
    store, out = work / f"store-{time.monotonic_ns()}", work / f"new-{time.monotonic_ns()}"
    argv = ["update", "--measured", str(results), "--store", str(store), "--out", str(out)]
    text, wall, peak = timed(
        [*argv, "--no-refit"], code, show=False, quiet=False, expect=0 if bad_row is None else 2
    )
    if bad_row is not None and f"row {bad_row} (line {bad_row + 2})" not in text:
        raise SystemExit(f"the error does not name row {bad_row}:\n{text}")
    return {"wall_s": wall, "peak_rss_mib": peak}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="10000,100000,1000000")
    p.add_argument("--reference", type=Path, help="source tree of the reference code")
    p.add_argument(
        "--reference-rows", default="", help="sizes the reference runs on (default: the first)"
    )
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--bad-row", action="store_true", help="one bad row in each file")
    args = p.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]
    ref_sizes = [int(n) for n in args.reference_rows.split(",") if n] or sizes[:1]
    table: list[tuple[str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in sizes:
            results = write_results(work / f"results-{n}.csv", n, bad=args.bad_row)
            bad = n // 2 if args.bad_row else None
            table.append(("this code", n, run_update(results, work, bad_row=bad)))
            if args.reference and n in ref_sizes:
                ref = run_update(results, work, args.reference, bad)
                table.append(("reference code", n, ref))
    header = f"{'code':16} {'rows':>10} {'wall s':>8} {'rows/s':>9} {'us/row':>8} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    for name, n, r in table:
        print(
            f"{name:16} {n:>10,} {r['wall_s']:>8.1f} {n / r['wall_s']:>9,.0f} "
            f"{1e6 * r['wall_s'] / n:>8.1f} {r['peak_rss_mib']:>9.1f}"
        )
    ours = [(n, r) for name, n, r in table if name == "this code"]
    (n0, r0), (n1, r1) = ours[0], ours[-1]
    print(
        f"s per row, {n1:,} rows / {n0:,} rows: {(r1['wall_s'] / n1) / (r0['wall_s'] / n0):.2f}x "
        "(1 = linear; start-up weighs on the smallest)"
    )
    print(f"CPU cores: {os.cpu_count()}; load average: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps([{"code": c, "rows": n, **r} for c, n, r in table]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
