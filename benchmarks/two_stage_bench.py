"""Two-stage screening: fidelity and speed of the cheap first stage against ``--exact``.

One run, one table. On a sample of a 7-element space (Al,Co,Cr,Cu,Fe,Mn,Ni, 3-7 elements),
in this process with the shipped model (or ``--model``), it screens the sample

- exactly (every fold model of every ranked task on every candidate: the reference),
- with the cheap first stage (fold 0 of each ranked task) and shortlists of 1, 10, 50, 100
  (the default) and 200
  times ``--top`` re-scored by the full ensemble,

and prints, per row, the wall time, candidates/s, the speed-up against the exact run of the
same process and how many of the exact top ``--top`` are in that row's top ``--top`` (goal:
at least 95 of 100 for the default shortlist). Every objective given with ``--objectives``
is measured (default weighted and uts).

    python -m benchmarks.two_stage_bench [--sample 100000] [--top 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from hea_screen.screening.engine import screen
from hea_screen.screening.model_ref import ModelRef, inspect_model, predictor_for
from hea_screen.screening.partition import SHORTLIST_FACTOR
from hea_screen.screening.ranking import Ranking
from hea_screen.screening.space import SampledSpace
from hea_screen.screening.spec import build_space, parse_elements

SEVEN = "Al,Co,Cr,Cu,Fe,Mn,Ni"


def run(space, ranking, model, info, **kwargs) -> tuple[list[str], float]:
    """Top compositions and wall seconds of one in-process screen."""
    t0 = time.perf_counter()
    out = screen(space, ranking, model, info.reference, ingot_mass_g=50.0, workers=1, **kwargs)
    return out.table["composition"].to_list(), time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model bundle (default: the shipped default model)")
    p.add_argument("--sample", type=int, default=100_000, help="candidates sampled (100,000)")
    p.add_argument("--top", type=int, default=100)
    p.add_argument("--objectives", default="weighted,uts")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args()
    space = SampledSpace(build_space(parse_elements(SEVEN), max_elements=7), args.sample, seed=0)
    info = inspect_model(args.model)
    model = ModelRef(args.model, device="cpu", sha256=info.sha256)
    predictor_for(model)  # model load outside the timings (sessions open on first use)
    rows = []
    for objective in args.objectives.split(","):
        ranking = Ranking(objective, top=args.top)
        run(space, ranking, model, info, exact=True)  # warm-up: every session opened
        exact, t_exact = run(space, ranking, model, info, exact=True)
        rows.append((objective, "exact (every fold)", t_exact, args.top))
        for factor in (1, 10, 50, 100, 200):
            top, t = run(space, ranking, model, info, shortlist=factor * args.top)
            name = f"fold 0 + shortlist {factor} x top" + (
                " (default)" if factor == SHORTLIST_FACTOR else ""
            )
            rows.append((objective, name, t, len(set(top) & set(exact))))
    header = (
        f"{'objective':10} {'run':40} {'s':>7} {'cand/s':>9} {'speed-up':>9} "
        f"{'in exact top':>13}"
    )
    print(f"sample of {space.size:,} candidates of the {SEVEN} space (3-7 elements); "
          f"top {args.top}; CPU cores {os.cpu_count()}")
    print(header)
    print("-" * len(header))
    reference = {}
    for objective, name, t, hits in rows:
        reference.setdefault(objective, t)
        print(
            f"{objective:10} {name:40} {t:>7.2f} {space.size / t:>9,.0f} "
            f"{reference[objective] / t:>8.1f}x {hits:>6}/{args.top}"
        )
    if args.json:
        args.json.write_text(json.dumps(
            [{"objective": o, "run": n, "seconds": t, "in_exact_top": h} for o, n, t, h in rows],
            indent=1,
        ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
