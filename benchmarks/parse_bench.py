"""Bulk parsing of composition texts against the per-row parser, in one run, one table.

Texts: every formula of the MPEA database plus the four common notations of random
5-element alloys (``Co1 Cr1 Fe1 Ni1 Mn1``-style spaced, ``CoCrFeNiMn`` run together,
``Al0.5CoCrFeNi`` decimal amounts, ``Co20Cr20Fe20Mn20Ni20`` at.%), repeated to ``--rows``.
The per-row reference (``hea_screen.parse`` on each text, the path of every text before
this change) is timed on ``--reference-rows`` of them. Best of three timings each.

    python -m benchmarks.parse_bench [--rows 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import polars as pl

from hea_screen.compositions.bulk_parse import parse_texts
from hea_screen.compositions.composition import parse
from hea_screen.compositions.table import CompositionTable
from hea_screen.datasets.sources import load_mpea

SYMBOLS = ["Al", "Co", "Cr", "Cu", "Fe", "Mn", "Mo", "Nb", "Ni", "Ti", "V", "Zr"]


def notations(n: int, seed: int = 0) -> list[str]:
    """``n`` random 5-element alloys, cycling through the four common notations."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        els = sorted(rng.sample(SYMBOLS, 5))
        kind = i % 4
        if kind == 0:
            out.append(" ".join(f"{el}1" for el in els))
        elif kind == 1:
            out.append("".join(els))
        elif kind == 2:
            out.append(f"{els[0]}{rng.choice(['0.5', '0.25', '1.5'])}" + "".join(els[1:]))
        else:
            out.append("".join(f"{el}{rng.randint(5, 35)}" for el in els))
    return out


def best_of(work, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--reference-rows", type=int, default=20_000)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    base = load_mpea()["formula"].cast(pl.Utf8).to_list() + notations(20_000)
    texts = (base * (args.rows // len(base) + 1))[: args.rows]
    sample = texts[: args.reference_rows]
    t_ref = best_of(lambda: [parse(t) for t in sample])
    t_bulk = best_of(lambda: parse_texts(texts))
    t_table = best_of(lambda: CompositionTable.from_compositions(texts))
    ref_rate = len(sample) / t_ref
    rows = [
        ("per-row hea_screen.parse (reference)", len(sample), t_ref),
        ("bulk_parse.parse_texts", len(texts), t_bulk),
        ("CompositionTable.from_compositions(list)", len(texts), t_table),
    ]
    print(f"{'implementation':42} {'texts':>10} {'s':>7} {'texts/s':>11} {'speed-up':>9}")
    for name, n, t in rows:
        print(f"{name:42} {n:>10,} {t:>7.2f} {n / t:>11,.0f} {n / t / ref_rate:>8.1f}x")
    if args.json:
        args.json.write_text(
            json.dumps([{"run": r, "texts": n, "seconds": t} for r, n, t in rows], indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
