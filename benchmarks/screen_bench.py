"""End-to-end screening benchmark: one run, one table (also written as JSON).

Every row runs the real command (``python -m hea_screen ...``) in a fresh process and
reports what a user would see: candidates per second of the screen (from the command's
own summary line: enumeration, featurization, ONNX Runtime, ranking, Dask start-up and
model loads included), the process wall time (Python start-up included) and the peak
resident memory of the process tree (``ru_maxrss`` from ``wait4``, the largest single
process, workers included when they are its children).

Rows:

1. the 5-element space of ``hea-screen --elements Co,Cr,Fe,Ni,Mn`` (defaults: 3-5 elements,
   5 at.% grid, at most 50 at.% each: 7,051 candidates), one local Dask worker;
2. the same with two local Dask workers (processes);
3. a space of about 10^5 candidates (Al,Co,Cr,Cu,Fe,Mn,Ni, 3-5 elements: 92,561), screened
   whole on one worker: peak memory;
4. a space of about 10^7 candidates (12 elements, 3-6 elements: 12,944,899), of which
   ``--sample`` candidates (as many as row 3 screens) are screened: peak memory, to compare
   with row 3 (goal: within 1.5x). The space is never materialized: its size is counted and
   the sample unranked by index, partition by partition;
5. the 5-element space on a GPU with the fp16 model, when one is usable.

    python -m benchmarks.screen_bench [--model BUNDLE] [--json results.json] [--quick]

``--quick`` shrinks rows 3-4 (a 10^4 sample) for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIVE = ["--elements", "Co,Cr,Fe,Ni,Mn"]
SPACE_1E5 = ["--elements", "Al,Co,Cr,Cu,Fe,Mn,Ni", "--max-elements", "5"]
SPACE_1E7 = ["--elements", "Al,Co,Cr,Cu,Fe,Mn,Mo,Nb,Ni,Ti,V,Zr", "--max-elements", "6"]
_SUMMARY = re.compile(r"ranked (\d+) of ([\d,]+) candidates .* in .* \(([\d,]+)/s\)")


def run_cli(args: list[str]) -> dict[str, object]:
    """Run ``python -m hea_screen ARGS`` in a fresh process; rate, wall time, peak RSS."""
    cmd = [sys.executable, "-m", "hea_screen", *args, "--quiet", "--show", "0"]
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({' '.join(cmd)}):\n{text}")
    m = _SUMMARY.search(text)
    if m is None:
        raise SystemExit(f"no summary line in the output of {' '.join(cmd)}:\n{text}")
    return {
        "candidates": int(m.group(2).replace(",", "")),
        "candidates_per_s": float(m.group(3).replace(",", "")),
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model bundle (default: the shipped default model)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--quick", action="store_true", help="small sample for rows 3-4")
    args = p.parse_args()
    from hea_screen.predictor import cuda_usable
    from hea_screen.spec import build_space, parse_elements

    model = ["--model", args.model] if args.model else []
    n5 = build_space(parse_elements(SPACE_1E5[1]), max_elements=5).size
    n7 = build_space(parse_elements(SPACE_1E7[1]), max_elements=6).size
    sample = 10_000 if args.quick else n5
    big_1e5 = [*SPACE_1E5, "--sample", str(sample)] if args.quick else SPACE_1E5
    rows: list[tuple[str, dict[str, object] | None, str]] = [
        ("5-element space, 1 worker", run_cli([*FIVE, *model, "--workers", "1"]), "CPU"),
        ("5-element space, 2 workers", run_cli([*FIVE, *model, "--workers", "2"]), "CPU"),
        (
            f"{n5:,}-candidate space" + (f" (sample {sample:,})" if args.quick else ""),
            run_cli([*big_1e5, *model, "--workers", "1"]),
            "CPU",
        ),
        (
            f"{n7:,}-candidate space, sample {sample:,}",
            run_cli([*SPACE_1E7, *model, "--workers", "1", "--sample", str(sample)]),
            "CPU",
        ),
    ]
    if cuda_usable():
        gpu = [*FIVE, *model, "--workers", "1", "--device", "cuda", "--precision", "fp16"]
        rows.append(("5-element space, GPU fp16", run_cli(gpu), "CUDA fp16"))
    else:
        rows.append(("5-element space, GPU fp16", None, "not measured (no GPU)"))
    header = (
        f"{'run':44} {'device':22} {'candidates':>11} {'cand/s':>9} {'wall s':>8} {'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, r, device in rows:
        if r is None:
            print(f"{name:44} {device:22} {'-':>11} {'-':>9} {'-':>8} {'-':>9}")
            continue
        print(
            f"{name:44} {device:22} {r['candidates']:>11,} {r['candidates_per_s']:>9,.0f} "
            f"{r['wall_s']:>8.1f} {r['peak_rss_mib']:>9.1f}"
        )
    ratio = rows[3][1]["peak_rss_mib"] / rows[2][1]["peak_rss_mib"]  # type: ignore[index,operator]
    print(f"peak memory, 10^7 space / 10^5 space: {ratio:.2f}x (goal <= 1.5x)")
    print(f"CPU cores: {os.cpu_count()}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [{"run": n, "device": d, **(r or {})} for n, r, d in rows],
                    "memory_ratio_1e7_over_1e5": round(ratio, 3),
                    "cpu_cores": os.cpu_count(),
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
