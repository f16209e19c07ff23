"""benchmarks.route_choice: the per-task and per-route choices read validation losses only,
and the per-route predictions are those of each row's chosen family."""

from __future__ import annotations

import polars as pl

from benchmarks.route_choice import PLAIN, choices, chosen, compare
from pretrain.condition_eval import metrics_table

T = "uts_tension_mpa"


def test_choices_follow_validation_losses() -> None:
    fits = [("extra_trees", 1.0), ("extra_trees", 2.0), (PLAIN, 2.0), (PLAIN, 2.0)]
    predictions = pl.DataFrame(
        {
            "model": [m for m, _ in fits],
            "seed": 0,
            "fold": [0, 1, 0, 1],
            "task": T,
            "val_loss": [v for _, v in fits],
        }
    )
    route_losses = {
        (T, "extra_trees", "CAST"): [9.0, 3.0],  # mean 3
        (T, PLAIN, "CAST"): [3.0, 3.0],  # mean 1: plain for cast
        (T, "extra_trees", "WROUGHT"): [2.0, 2.0],
        (T, PLAIN, "WROUGHT"): [4.0, 2.0],
        (T, "extra_trees", "ANNEAL"): [0.0, 0.0],  # no validation row: the task's choice
        (T, PLAIN, "ANNEAL"): [0.0, 0.0],
    }
    per_task, per_route = choices(predictions, route_losses)
    assert per_task == {T: "extra_trees"}
    assert per_route == {
        (T, "CAST"): PLAIN,
        (T, "WROUGHT"): "extra_trees",
        (T, "ANNEAL"): "extra_trees",
    }


def test_per_route_predictions_and_the_comparison() -> None:
    rows = []
    for seed in (0, 1):
        for model, offset in (("extra_trees", 0.0), (PLAIN, 50.0)):
            for row, (route, y) in enumerate(
                [("CAST", 500.0), ("CAST", 700.0), ("WROUGHT", 600.0), ("WROUGHT", 900.0)]
            ):
                # extra_trees is exact on wrought rows, plain on cast rows
                error = offset if route == "WROUGHT" else 50.0 - offset
                rows.append(
                    (
                        model,
                        seed,
                        0,
                        row,
                        "uts_tension_mpa",
                        y + error * (-1) ** row,
                        y,
                        25.0,
                        route,
                    )
                )
    predictions = pl.DataFrame(
        rows,
        schema=[
            "model",
            "seed",
            "fold",
            "row",
            "task",
            "predicted",
            "measured",
            "temperature_c",
            "processing",
        ],
        orient="row",
    )
    pick = {("uts_tension_mpa", "CAST"): PLAIN, ("uts_tension_mpa", "WROUGHT"): "extra_trees"}
    routed = chosen(predictions, pick, "per_route")
    assert routed.height == 8 and (routed["predicted"] == routed["measured"]).all()
    every = {k: "extra_trees" for k in pick}
    frame = pl.concat([predictions, chosen(predictions, every, "per_task"), routed])
    table = compare(metrics_table(frame, "grouped"))
    whole = table.filter(pl.col("slice") == "25C").row(0, named=True)
    assert whole["per_route_mean"] == 1.0 > whole["per_task_mean"]
    assert (whole["route_ge_plain"], whole["route_ge_task"], whole["partitions"]) == (2, 2, 2)
