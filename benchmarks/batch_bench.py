"""``hea-screen batch`` against the main command on the same sampled space, in one run.

Every row runs the real command in a fresh process (``benchmarks.screen_bench.timed``) on a
spec that samples ``--sample`` candidates (default 100,000) of the 12-element space of
``screen_bench`` (12,944,899 candidates), top 100:

1. the main command, ``hea-screen --spec SPEC --out ranked.csv`` (two stages, in process);
2. ``hea-screen batch SPEC --out DIR`` (two stages, the same rule): goal within 1.2x of row 1,
   and its ``ranked.csv`` byte-identical to row 1's table;
3. ``hea-screen batch SPEC --out DIR --exact``: the single full stage batch jobs ran before.

    python -m benchmarks.batch_bench [--sample 100000] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.screen_bench import SPACE_1E7, timed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=100_000)
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args()
    elements = ", ".join(SPACE_1E7[1].split(","))
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = work / "sampled.yaml"
        spec.write_text(
            f"name: sampled\nspace: {{elements: [{elements}], max_elements: 6, "
            f"sample: {args.sample}, seed: 0}}\nranking: {{top: 100}}\n"
        )
        runs = {
            "main command (--spec, two stages)": [
                "--spec",
                str(spec),
                "--out",
                str(work / "m.csv"),
            ],
            "batch (two stages)": ["batch", str(spec), "--out", str(work / "job")],
            "batch --exact (single full stage)": [
                "batch",
                str(spec),
                "--out",
                str(work / "x"),
                "--exact",
            ],
        }
        for name, argv in runs.items():
            _, wall, peak = timed(argv, show=argv[0] != "batch")
            rows[name] = {"wall_s": wall, "peak_rss_mib": peak, "cand_per_s": args.sample / wall}
        identical = (work / "job" / "ranked.csv").read_bytes() == (work / "m.csv").read_bytes()
    header = (
        f"{'run':40} {'candidates':>11} {'wall s':>8} {'cand/s':>9} {'peak MiB':>9} {'/ main':>7}"
    )
    print(header)
    print("-" * len(header))
    main_wall = rows["main command (--spec, two stages)"]["wall_s"]
    for name, r in rows.items():
        print(
            f"{name:40} {args.sample:>11,} {r['wall_s']:>8.1f} {r['cand_per_s']:>9,.0f} "
            f"{r['peak_rss_mib']:>9.1f} {r['wall_s'] / main_wall:>6.2f}x"
        )
    print(f"batch ranked.csv byte-identical to the main command's table: {identical}")
    print("(process wall times, start-up included; goal: batch within 1.2x of the main command)")
    print(f"CPU cores: {os.cpu_count()}; load average: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "identical": identical}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
