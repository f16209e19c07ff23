"""The evaluation protocol: grouped folds, cluster folds, per-task metrics."""

from __future__ import annotations

import numpy as np
import pytest

from pretrain.protocol import (
    classification_metrics,
    cluster_splits,
    grouped_splits,
    regression_metrics,
    top_decile_recall,
)

GROUPS = [f"alloy{i % 23}" for i in range(100)]


@pytest.mark.parametrize("seed", [0, 1])
def test_grouped_folds_hold_out_whole_alloys(seed: int) -> None:
    groups = np.asarray(GROUPS)
    splits = grouped_splits(GROUPS, 5, seed)
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested.tolist()) == list(range(len(GROUPS)))  # every row once
    for s in splits:
        parts = [set(groups[s.train]), set(groups[s.val]), set(groups[s.test])]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(s.train) + len(s.val) + len(s.test) == len(GROUPS)
        assert len(s.val) > 0


def test_seeds_give_other_folds_and_the_same_seed_the_same() -> None:
    a, b, c = (grouped_splits(GROUPS, 5, s) for s in (0, 0, 1))
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b))
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c))


def test_cluster_folds_hold_out_one_cluster_each() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(3)
    labels = np.arange(60) % 3
    fractions = centres[labels] + rng.normal(0, 0.01, (60, 3))
    groups = [f"a{i}" for i in range(60)]
    splits = cluster_splits(groups, fractions, 3, seed=0)
    for s in splits:
        assert len(set(labels[s.test])) == 1  # one true cluster per held-out fold
        assert labels[s.test][0] not in set(labels[s.train])


def test_top_decile_recall_counts_the_true_top_found() -> None:
    y = np.arange(20.0)
    assert top_decile_recall(y, y) == 1.0
    assert top_decile_recall(y, -y) == 0.0
    swapped = y.copy()
    swapped[[19, 0]] = swapped[[0, 19]]  # the best alloy predicted worst
    assert top_decile_recall(y, swapped) == 0.5


def test_metrics() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(y, y + 1)
    assert m["mae"] == 1.0 and m["spearman"] == 1.0 and m["n"] == 4
    assert regression_metrics(y, y)["r2"] == 1.0
    c = classification_metrics(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]))
    assert c["accuracy"] == 0.75 and c["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_noise_ceiling_from_replicates() -> None:
    from pretrain.protocol import noise_ceiling

    # two alloys measured twice (replicates differ by 2), one once: sigma_rep^2 = 2
    y = np.array([10.0, 12.0, 20.0, 22.0, 30.0])
    got = noise_ceiling(["a", "a", "b", "b", "c"], ["CAST"] * 5, y)
    assert got == pytest.approx(1 - 2.0 / np.var(y, ddof=1))
    assert np.isnan(noise_ceiling(["a", "b"], ["CAST", "CAST"], np.array([1.0, 2.0])))


def test_composition_groups_link_near_duplicates() -> None:
    from pretrain.protocol import composition_groups

    fractions = np.array([[0.5, 0.5, 0.0], [0.51, 0.49, 0.0], [0.0, 0.5, 0.5], [0.5, 0.5, 0.0]])
    groups = composition_groups(["A", "A'", "B", "A"], fractions)
    assert groups[0] == groups[1] == groups[3] != groups[2]
