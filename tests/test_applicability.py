"""The nearest-training-data search against a brute-force reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hea_screen import parse
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import BundleError
from hea_screen.inference.applicability import TrainingSet

TRAINING = {
    "targets": {
        "a": {"compositions": ["Co0.5 Ni0.5", "Co0.25 Cr0.25 Fe0.25 Ni0.25"], "values": [1.0, 2.0]},
        "b": {"compositions": ["Al0.2 Co0.8", "Co0.5 Ni0.5", "Fe1"], "values": [3.0, 4.0, 5.0]},
    }
}


def _l1(x: str, t: str) -> float:
    """L1 distance in atomic fractions, from the exact millionths."""
    a, b = (dict(zip(c.elements, c.micro)) for c in (parse(x), parse(t)))
    return sum(abs(a.get(el, 0) - b.get(el, 0)) for el in set(a) | set(b)) / 1e6


def test_nearest_matches_brute_force_whatever_the_palette_and_row_blocks(monkeypatch):
    """Every row's nearest alloy per target (first of equals, in training order) and its
    distance, on rows of 1 to 6 of 9 elements, some sharing no element with any training
    alloy, searched in chunks smaller than the table."""
    monkeypatch.setattr("hea_screen.inference.applicability._CHUNK_CELLS", 7)
    training = TrainingSet.from_json(json.dumps(TRAINING))
    rng = np.random.default_rng(3)
    palette = ["Al", "Co", "Cr", "Cu", "Fe", "Mn", "Ni", "Ti", "V"]
    texts = ["Co0.5 Ni0.5", "Cu0.5 Ti0.5"]
    for _ in range(200):
        k = int(rng.integers(1, 7))
        els = rng.choice(palette, k, replace=False)
        texts.append("".join(f"{el}{v:.4f}" for el, v in zip(els, rng.dirichlet(np.ones(k)))))
    table = CompositionTable.from_compositions(texts)
    got = training.applicability(table)
    for name, target in training.targets.items():
        for row, text in enumerate(table.canonical_texts()):
            distances = [_l1(text, t) for t in target.compositions]
            best = int(np.argmin(distances))
            assert got[f"{name}_nearest_composition"][row] == target.compositions[best]
            assert abs(got[f"{name}_nearest_distance"][row] - distances[best]) < 1e-9
            assert got[f"{name}_nearest_measured"][row] == target.values[best]


def test_intervals_take_the_distance_to_the_alloys_the_models_learned():
    """A target whose last alloys were added by ``update`` without refitting: the nearest
    columns know them, the interval's distance is to the learned alloys only (NaN with none);
    a target whose alloys were all learned takes its nearest distance."""
    data = json.loads(json.dumps(TRAINING))
    data["targets"]["b"]["learned"] = 2  # "Fe1" is a lab alloy the models never saw
    data["targets"]["a"]["learned"] = 0
    training = TrainingSet.from_json(json.dumps(data))
    table = CompositionTable.from_compositions(["Fe1", "Co0.5 Ni0.5"])
    frame, interval = training.search(table)
    assert frame["b_nearest_composition"].to_list() == ["Fe1", "Co0.5 Ni0.5"]
    assert frame["b_nearest_distance"].to_list() == [0.0, 0.0]
    assert interval["b"].tolist() == [2.0, 0.0]  # Fe1 shares nothing with Al0.2 Co0.8, Co0.5 Ni0.5
    assert np.isnan(interval["a"]).all()
    assert frame.equals(training.applicability(table))
    every, distances = TrainingSet.from_json(json.dumps(TRAINING)).search(table)  # all learned
    for name in ("a", "b"):
        assert distances[name].tolist() == every[f"{name}_nearest_distance"].to_list()


@pytest.mark.parametrize("learned", [-1, 4, 1.5, True, "2"])
def test_a_bad_learned_count_is_refused(learned):
    data = json.loads(json.dumps(TRAINING))
    data["targets"]["b"]["learned"] = learned
    with pytest.raises(BundleError, match=r"training_set\.json"):
        TrainingSet.from_json(json.dumps(data))
