"""Probes of ideas for the condition-aware model that were measured and not kept.

Each probe compares ExtraTrees on the :mod:`hea_screen.inference.design` inputs (the shipped family)
with the same ExtraTrees on those inputs plus something more, on the run's grouped folds
(:func:`pretrain.protocol.grouped_splits`, the seeds given), scored on the held-out alloys at
25 °C:

- ``stacking``: out-of-fold predictions of models of the data-rich tasks (hardness,
  compressive YS, compressive strength) as extra inputs of the tensile tasks; inner grouped
  folds inside each training fold, so no held-out alloy leaks in;
- ``cls``: the pooled [CLS] embedding of the run's fine-tuned multi-task transformer fold
  networks (``RUN/conditions/transformer/seed_<s>/fold_<k>``, which never saw the fold's
  test alloys) as extra inputs.

Usage (needs the train extra and a finished ``hea-train conditions`` run)::

    python -m benchmarks.condition_probes --run runs/small [--probe stacking cls] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor

from hea_screen.datasets.sources import data_dir
from pretrain.condition_data import Data, load_data
from pretrain.config import ConditionsConfig
from pretrain.folds import Split
from pretrain.protocol import grouped_splits, regression_metrics

TENSION = ("uts_tension_mpa", "ys_tension_mpa", "elongation_tension_pct")
AUX = ("hardness_hv", "ys_compression_mpa", "uts_compression_mpa")
CLS_TASKS = (*TENSION, "ys_compression_mpa", "hardness_hv")

#: Extra inputs of one split: (data, split, seed) -> (rows, extra columns).
Extra = Callable[[Data, Split, int], np.ndarray]


def trees(seed: int) -> ExtraTreesRegressor:
    return ExtraTreesRegressor(100, max_features=0.66, min_samples_leaf=2, random_state=seed)


def stacking(data: Data, split: Split, seed: int) -> np.ndarray:
    """Out-of-fold predictions of the :data:`AUX` tasks for every row (inner folds)."""
    y = data.frame["value"].to_numpy()
    task = np.asarray(data.frame["task"].to_list())
    canon = np.asarray(data.frame["canonical"].to_list())
    train = np.concatenate([split.train, split.val])
    out = np.zeros((len(y), len(AUX)))
    inner = grouped_splits(canon[train].tolist(), 5, 100 + seed)
    for j, aux in enumerate(AUX):
        rows = train[task[train] == aux]
        out[split.test, j] = trees(seed).fit(data.x[rows], y[rows]).predict(data.x[split.test])
        for s in inner:
            fit_rows = train[np.concatenate([s.train, s.val])]
            fit_rows = fit_rows[task[fit_rows] == aux]
            held = train[s.test]
            out[held, j] = trees(seed).fit(data.x[fit_rows], y[fit_rows]).predict(data.x[held])
    return out


def cls_embedding(run: Path) -> Extra:
    """The pooled [CLS] embedding of the split's transformer fold network, every row."""
    import torch

    from pretrain.multitask import KEY, encode_keys, load_encoder, load_fold

    def extra(data: Data, split: Split, seed: int) -> np.ndarray:
        keys = data.frame.select(KEY)
        inputs = encode_keys(load_encoder(run / "tokenizer"), keys)
        fold_dir = run / "conditions" / "transformer" / f"seed_{seed}" / f"fold_{split.fold}"
        model, _ = load_fold(fold_dir)
        with torch.no_grad():
            parts = [
                model.bert(**{k: v[i : i + 512] for k, v in inputs.items()}).pooler_output.numpy()
                for i in range(0, len(keys), 512)
            ]
        return np.concatenate(parts)

    return extra


def probe(data: Data, extra: Extra, tasks: tuple[str, ...], seeds: list[int]) -> list[dict]:
    """R² and Spearman at 25 °C, mean over seeds, without and with the extra inputs."""
    y = data.frame["value"].to_numpy()
    task = np.asarray(data.frame["task"].to_list())
    room = data.frame["temperature_c"].to_numpy() == 25.0
    scores: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for seed in seeds:
        pred = {(t, m): np.full(len(y), np.nan) for t in tasks for m in ("base", "probe")}
        for split in grouped_splits(data.frame["canonical"].to_list(), 5, seed):
            x_probe = np.hstack([data.x, extra(data, split, seed)])
            train = np.concatenate([split.train, split.val])
            for t in tasks:
                tr, te = train[task[train] == t], split.test[task[split.test] == t]
                for m, x in (("base", data.x), ("probe", x_probe)):
                    pred[t, m][te] = trees(seed).fit(x[tr], y[tr]).predict(x[te])
        for (t, m), p in pred.items():
            ev = (task == t) & room
            r = regression_metrics(y[ev], p[ev])
            scores.setdefault((t, m), []).append((r["r2"], r["spearman"]))
    return [
        {"task": t, "model": m, "r2": float(np.mean(v, axis=0)[0]),
         "spearman": float(np.mean(v, axis=0)[1])}
        for (t, m), v in scores.items()
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a run with a conditions step")
    p.add_argument("--probe", nargs="+", default=["stacking", "cls"], choices=["stacking", "cls"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args(argv)
    data = load_data(data_dir(), ConditionsConfig(), seed=42)
    print("| probe | task | R² without | R² with | Spearman without | Spearman with |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.probe:
        if name == "stacking":
            extra, tasks = stacking, TENSION
        else:
            extra, tasks = cls_embedding(args.run), CLS_TASKS
        rows = {(r["task"], r["model"]): r for r in probe(data, extra, tasks, args.seeds)}
        for t in tasks:
            b, q = rows[t, "base"], rows[t, "probe"]
            print(f"| {name} | `{t}` | {b['r2']:.3f} | {q['r2']:.3f} | {b['spearman']:.3f} | "
                  f"{q['spearman']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
