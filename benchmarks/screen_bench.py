"""End-to-end screening benchmark: one run, one table (also written as JSON).

Every row runs the real command (``python -m hea_screen ...``) in a fresh process and
reports what a user would see: candidates per second of the screen (from the command's
own summary line: enumeration, featurization, ONNX Runtime, ranking, Dask start-up and
model loads included), the process wall time (Python start-up included) and the peak
resident memory of the process tree (``ru_maxrss`` from ``wait4``, the largest single
process, workers included when they are its children).

Rows (the command's defaults: two-stage, in-process up to 10^6 candidates):

1. the 5-element space of ``hea-screen --elements Co,Cr,Fe,Ni,Mn`` (defaults: 3-5 elements,
   5 at.% grid, at most 50 at.% each: 7,051 candidates), the default command: wall time of
   the whole process is the start-up goal (<= 5 s);
2. the same with ``--exact``; 3. the same with the reference code (``--reference DIR``, a
   source tree of the code before this change, run with ``PYTHONPATH=DIR``);
4. a space of about 10^5 candidates (Al,Co,Cr,Cu,Fe,Mn,Ni, 3-5 elements: 92,561), whole;
5. a sample of 10^6 of a space of about 10^7 candidates (12 elements, 3-6 elements:
   12,944,899): the throughput goal (>= 10,000 candidates/s) and peak memory against row 4
   (goal: within 1.5x); 6. a sample of the same space as large as row 4;
7. the bare ExtraTrees screener (``benchmarks/bare_screener.py``: the same 10^6 sample,
   features, fold 0 of the two ranked tasks, a numpy top 100, nothing else) in a fresh
   process: the main command's process-wall rate on row 5 divided by its rate is printed;
8. the reference code on a 10^4 sample of the 10^7 space (its rate, for the speed-up);
9. the 5-element space on a GPU with the fp16 model, when one is usable.

    python -m benchmarks.screen_bench [--model BUNDLE] [--reference DIR] [--json results.json]
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
BARE = "bare ExtraTrees screener, sample 1,000,000"
_SUMMARY = re.compile(r"ranked (\d+) of ([\d,]+) candidates .* in .* \(([\d,]+)/s\)")


def timed(
    args: list[str],
    code: Path | None = None,
    show: bool = True,
    quiet: bool = True,
    module: str = "hea_screen",
    expect: int = 0,
) -> tuple[str, float, float]:
    """Run ``python -m hea_screen ARGS --quiet --show 0`` (without ``--show`` for
    ``show=False``, without ``--quiet`` for ``quiet=False``; another ``module``) in a fresh
    process (the package from ``code`` when given), which must exit with ``expect``: its
    stderr and stdout, wall time (s) and peak RSS (MiB)."""
    cmd = [sys.executable, "-m", module, *args, *["--quiet"] * quiet]
    cmd += ["--show", "0"] * show
    env = dict(os.environ, PYTHONPATH=str(code or ROOT))
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=code or ROOT, stdout=err, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    if proc.returncode != expect:
        raise SystemExit(
            f"benchmark command exited {proc.returncode}, not {expect} ({' '.join(cmd)}):\n{text}"
        )
    return text, wall, usage.ru_maxrss / 1024  # Linux: KiB


def run_cli(args: list[str], code: Path | None = None) -> dict[str, object]:
    """Run a screen (:func:`timed`); rate from its summary line, wall time, peak RSS."""
    text, wall, peak = timed(args, code)
    m = _SUMMARY.search(text)
    if m is None:
        raise SystemExit(f"no summary line in the output of hea_screen {' '.join(args)}:\n{text}")
    return {
        "candidates": int(m.group(2).replace(",", "")),
        "candidates_per_s": float(m.group(3).replace(",", "")),
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(peak, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model bundle (default: the shipped default model)")
    p.add_argument("--reference", type=Path, help="source tree of the reference code")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args()
    from hea_screen.inference.runtime import cuda_usable
    from hea_screen.screening.spec import build_space, parse_elements

    model = ["--model", args.model] if args.model else []
    n5 = build_space(parse_elements(SPACE_1E5[1]), max_elements=5).size
    n7 = build_space(parse_elements(SPACE_1E7[1]), max_elements=6).size
    rows: list[tuple[str, dict[str, object] | None, str]] = [
        ("5-element space, default", run_cli([*FIVE, *model]), "CPU"),
        ("5-element space, --exact", run_cli([*FIVE, *model, "--exact"]), "CPU"),
    ]
    if args.reference:
        ref = run_cli([*FIVE, *model, "--workers", "1"], args.reference)
        rows.append(("5-element space, reference code", ref, "CPU"))
    rows += [
        (f"{n5:,}-candidate space", run_cli([*SPACE_1E5, *model]), "CPU"),
        (
            f"{n7:,}-candidate space, sample 1,000,000",
            run_cli([*SPACE_1E7, *model, "--sample", "1000000"]),
            "CPU",
        ),
        (
            f"{n7:,}-candidate space, sample {n5:,}",
            run_cli([*SPACE_1E7, *model, "--sample", str(n5)]),
            "CPU",
        ),
    ]
    bare = ["--sample", "1000000"]
    _, wall, peak = timed(bare, show=False, quiet=False, module="benchmarks.bare_screener")
    bare_row = {"candidates": 1_000_000, "candidates_per_s": 1e6 / wall, "wall_s": wall}
    rows.append((BARE, {**bare_row, "peak_rss_mib": peak}, "CPU"))
    if args.reference:
        ref = run_cli([*SPACE_1E7, *model, "--sample", "10000", "--workers", "1"], args.reference)
        rows.append((f"{n7:,}-candidate space, sample 10,000, reference code", ref, "CPU"))
    if cuda_usable():
        gpu = [*FIVE, *model, "--workers", "1", "--device", "cuda", "--precision", "fp16"]
        rows.append(("5-element space, GPU fp16", run_cli(gpu), "CUDA fp16"))
    else:
        rows.append(("5-element space, GPU fp16", None, "not measured (no GPU)"))
    header = (
        f"{'run':56} {'device':22} {'candidates':>11} {'cand/s':>9} {'wall s':>8} {'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, r, device in rows:
        if r is None:
            print(f"{name:56} {device:22} {'-':>11} {'-':>9} {'-':>8} {'-':>9}")
            continue
        print(
            f"{name:56} {device:22} {r['candidates']:>11,} {r['candidates_per_s']:>9,.0f} "
            f"{r['wall_s']:>8.1f} {r['peak_rss_mib']:>9.1f}"
        )
    by_name = {n: r for n, r, _ in rows}
    small = by_name[f"{n5:,}-candidate space"]
    big = by_name[f"{n7:,}-candidate space, sample 1,000,000"]
    ratio = big["peak_rss_mib"] / small["peak_rss_mib"]  # type: ignore[index,operator]
    print(f"peak memory, 10^6 sample of the 10^7 space / 10^5 space: {ratio:.2f}x (goal <= 1.5x)")
    print(
        f"10^6 sample, process wall: main command {1e6 / big['wall_s']:,.0f} candidates/s, "  # type: ignore[operator]
        f"bare ExtraTrees screener {bare_row['candidates_per_s']:,.0f}/s: "
        f"{(1e6 / big['wall_s']) / bare_row['candidates_per_s']:.2f}x"  # type: ignore[operator]
    )
    reference = by_name.get(f"{n7:,}-candidate space, sample 10,000, reference code")
    if reference:
        speedup = big["candidates_per_s"] / reference["candidates_per_s"]  # type: ignore[operator]
        print(f"10^6-sample rate / reference code's rate: {speedup:.1f}x (goal >= 50x)")
    print(f"CPU cores: {os.cpu_count()}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [{"run": n, "device": d, **(r or {})} for n, r, d in rows],
                    "memory_ratio": round(ratio, 3),
                    "cpu_cores": os.cpu_count(),
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
