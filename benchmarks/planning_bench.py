"""Retrospective benchmark of ``hea-screen plan`` on the MPEA tension data at 25 °C.

For each target (tensile UTS, tensile YS; one value per alloy: the mean of its 25 °C
measurements) and each seed: a random 20 % of the alloys start as "measured"; then 8 rounds
pick batches of 5 unmeasured alloys, "measure" them (their true values) and refit. Strategies:

- ``random``: 5 alloys at random;
- ``greedy``: the 5 best predicted means;
- ``planner``: :func:`hea_screen.planning.acquisition.select` (expected improvement over the best
  measured value, greedy local penalization for diversity; no phase screen, no minimum
  distance, since the pool holds real alloys).

The model, refitted every round on the measured alloys, is ExtraTrees (100 trees) on the
:mod:`hea_screen.inference.design` inputs (14 features, 25 °C, the alloy's most common processing
route); its mean is the trees' mean and its uncertainty the trees' standard deviation
(passed to the planner as a 90 % interval ``mean ± 1.645 std``). Printed per target and
strategy, averaged over seeds: the best measured value after each round and the share of
the true top-10 % alloys found (start set included). Also times ``hea-screen plan`` on a
10⁵-candidate screen output (a subprocess: imports, reading, model bundle, planning, lab
sheet). Needs the train extra (scikit-learn; matplotlib for ``--png``)::

    python -m benchmarks.planning_bench --seeds 20 --png docs/figures/planning_bench.png
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.ensemble import ExtraTreesRegressor

from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import ROOM_TEMPERATURE_C
from hea_screen.datasets.measurements import measurements
from hea_screen.inference.design import design_matrix
from hea_screen.planning.acquisition import Measured, Objective, PlanOptions, select
from hea_screen.screening.ranking import Ranking

TARGETS = {"uts_tension_mpa": "uts", "ys_tension_mpa": "ys"}
STRATEGIES = ("random", "greedy", "planner")

#: The planner's settings (``--acquisition``, ``--beta``, ``--diversity`` change them).
PLANNER = PlanOptions(min_distance=0.0, phase="any")
Z90 = 1.6448536269514722


def pool(task: str) -> pl.DataFrame:
    """One row per alloy: canonical composition, mean 25 °C value, most common route."""
    rows = measurements().filter(
        pl.col("task") == task, pl.col("temperature_c") == ROOM_TEMPERATURE_C
    )
    return (
        rows.group_by("canonical")
        .agg(pl.col("value").mean(), pl.col("processing").mode().first())
        .sort("canonical")
        .rename({"canonical": "composition"})
    )


def fit_predict(x: np.ndarray, y: np.ndarray, rows: np.ndarray, seed: int) -> tuple:
    """ExtraTrees(100) mean and tree spread on ``rows`` of ``x``."""
    model = ExtraTreesRegressor(n_estimators=100, random_state=seed, n_jobs=1).fit(x, y)
    trees = np.stack([t.predict(rows) for t in model.estimators_])
    return trees.mean(axis=0), trees.std(axis=0)


def pick(
    strategy: str,
    data: pl.DataFrame,
    x: np.ndarray,
    measured: np.ndarray,
    rng: np.random.Generator,
    seed: int,
    objective: Objective,
    planner: PlanOptions,
) -> np.ndarray:
    """Indices of the next batch (not yet measured)."""
    free = np.flatnonzero(~measured)
    batch = planner.k
    if strategy == "random":
        return rng.choice(free, size=min(batch, len(free)), replace=False)
    y = data["value"].to_numpy()
    mean, std = fit_predict(x[measured], y[measured], x[free], seed)
    if strategy == "greedy":
        return free[np.argsort(-mean, kind="stable")[:batch]]
    task = objective.tasks[0]
    cand = pl.DataFrame(
        {
            "composition": data["composition"].to_numpy()[free],
            f"{task}_mean": mean,
            f"{task}_lo": mean - Z90 * std,
            f"{task}_hi": mean + Z90 * std,
            "index": free,
        }
    )
    done = data.filter(pl.Series(measured))
    known = Measured(tuple(done["composition"]), {task: dict(done.select("composition", "value")
                                                             .iter_rows())})
    return select(cand, objective, known, planner)["index"].to_numpy()


def campaign(
    data: pl.DataFrame, x: np.ndarray, task: str, strategy: str, seed: int, rounds: int,
    planner: PlanOptions,
) -> tuple[list[float], list[float]]:
    """Best measured value and share of the top 10 % found, after the start and each round."""
    y = data["value"].to_numpy()
    n = len(y)
    top = set(np.argsort(-y)[: math.ceil(0.1 * n)])
    rng = np.random.default_rng(seed)
    measured = np.zeros(n, dtype=bool)
    measured[rng.choice(n, size=math.ceil(0.2 * n), replace=False)] = True
    objective = Objective.of(Ranking(objective=TARGETS[task]), None)
    best, found = [], []
    for r in range(rounds + 1):
        if r:
            measured[pick(strategy, data, x, measured, rng, seed, objective, planner)] = True
        best.append(float(y[measured].max()))
        found.append(len(top & set(np.flatnonzero(measured))) / len(top))
    return best, found


def run(
    seeds: int, rounds: int, strategies: tuple[str, ...], planner: PlanOptions
) -> pl.DataFrame:
    """Every campaign: one row per target, strategy, seed and round."""
    out = []
    for task in TARGETS:
        data = pool(task)
        x = design_matrix(
            featurize(data["composition"]), ROOM_TEMPERATURE_C, data["processing"].to_list()
        )
        for strategy in strategies:
            for seed in range(seeds):
                best, found = campaign(data, x, task, strategy, seed, rounds, planner)
                out += [
                    {"task": task, "alloys": data.height, "strategy": strategy, "seed": seed,
                     "round": r, "best": b, "top10_found": f}
                    for r, (b, f) in enumerate(zip(best, found))
                ]
    return pl.DataFrame(out)


def summary(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        frame.group_by("task", "strategy", "round")
        .agg(
            pl.col("best").mean().round(0).alias("best_mean"),
            pl.col("top10_found").mean().round(3).alias("top10_share"),
            pl.col("top10_found").std().round(3).alias("top10_sd"),
        )
        .sort("task", "strategy", "round")
    )


def plan_timing(n: int, tmp: Path) -> float:
    """Seconds of ``hea-screen plan`` (a subprocess) on an ``n``-row screen output."""
    rng = np.random.default_rng(0)
    elements = ("Al", "Co", "Cr", "Cu", "Fe", "Mn", "Ni", "Ti")
    x = rng.dirichlet(np.ones(len(elements)), size=n)
    micro = np.floor(x * 1_000_000).astype(np.int32)
    micro[np.arange(n), micro.argmax(axis=1)] += 1_000_000 - micro.sum(axis=1)
    texts = CompositionTable(elements, micro).canonical_texts()
    from hea_screen.compositions.phase_rules import phase_flags

    mean_u, mean_e = rng.normal(800, 150, n), rng.normal(30, 10, n)
    frame = phase_flags(
        pl.DataFrame(
            {
                "composition": texts,
                "uts_tension_mpa_mean": mean_u,
                "uts_tension_mpa_lo": mean_u - rng.uniform(50, 500, n),
                "uts_tension_mpa_hi": mean_u + rng.uniform(50, 500, n),
                "elongation_tension_pct_mean": mean_e,
                "elongation_tension_pct_lo": mean_e - rng.uniform(2, 30, n),
                "elongation_tension_pct_hi": mean_e + rng.uniform(2, 30, n),
            }
        )
    )
    path = tmp / "screen.parquet"
    frame.write_parquet(path)
    cmd = [sys.executable, "-m", "hea_screen", "plan", str(path), "--out", str(tmp / "p.csv"),
           "--html", str(tmp / "p.html")]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def plot(table: pl.DataFrame, path: Path, strategies: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for i, task in enumerate(TARGETS):
        for strategy in strategies:
            part = table.filter(pl.col("task") == task, pl.col("strategy") == strategy)
            axes[0, i].plot(part["round"], part["best_mean"], marker="o", label=strategy)
            axes[1, i].plot(part["round"], part["top10_share"], marker="o", label=strategy)
        axes[0, i].set_title(task)
        axes[0, i].set_ylabel("best measured (MPa), mean over seeds")
        axes[1, i].set_ylabel("share of true top-10 % found")
        axes[1, i].set_xlabel("round (batches of 5)")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--plan-rows", type=int, default=100_000)
    p.add_argument("--png", type=Path, help="write the curves here")
    p.add_argument("--acquisition", default=PLANNER.acquisition, choices=("ei", "ucb"))
    p.add_argument("--beta", type=float, default=PLANNER.beta)
    p.add_argument("--diversity", type=float, default=PLANNER.diversity)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    args = p.parse_args()
    planner = replace(PLANNER, k=args.batch, acquisition=args.acquisition, beta=args.beta,
                      diversity=args.diversity)
    strategies = tuple(args.strategies.split(","))
    print(f"planner: {planner}")
    t0 = time.perf_counter()
    table = summary(run(args.seeds, args.rounds, strategies, planner))
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=160):
        print(table.pivot("strategy", index=["task", "round"], values="top10_share"))
        print(table.pivot("strategy", index=["task", "round"], values="best_mean"))
        print(table.pivot("strategy", index=["task", "round"], values="top10_sd"))
    print(f"campaigns: {time.perf_counter() - t0:.0f} s")
    if args.png:
        plot(table, args.png, strategies)
    if not args.plan_rows:
        return
    with tempfile.TemporaryDirectory() as tmp:
        seconds = plan_timing(args.plan_rows, Path(tmp))
    print(f"hea-screen plan on {args.plan_rows:,} candidates: {seconds:.1f} s (whole command)")


if __name__ == "__main__":
    main()
