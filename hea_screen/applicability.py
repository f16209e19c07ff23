"""How far a candidate lies from what the models were trained on.

Two flags travel with every prediction:

- ``unseen_elements``: the candidate's elements that are absent from the training set of
  at least one target (comma-joined, ``""`` if none). A model has never seen such an
  element in a measured alloy, so its prediction is an extrapolation.
- ``nearest_train_distance``: the L1 distance in atomic fractions,
  ``Σ_i |x_i − t_i|`` over the union of elements (0 for a training alloy, 2 for an alloy
  sharing no element with any), to the nearest composition in the training sets of all
  targets, with ``nearest_train_composition`` naming it. Per target,
  ``<target>_nearest_composition`` names the nearest alloy of that target's own training
  set and ``<target>_nearest_measured`` gives its measured value (the mean where an alloy
  was measured more than once); it may differ from the overall nearest alloy, which can
  belong to another target's set.

Because both compositions sum to 1, ``Σ|x − t| = 2 − 2 Σ min(x, t)``, and ``min`` is zero
outside the candidate's own elements, so the search only touches the candidate palette's
columns. It runs in chunks of candidates against all training compositions (a few hundred).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from hea_screen.composition import SCALE
from hea_screen.errors import BundleError
from hea_screen.table import CompositionTable

#: Candidate rows per chunk of the nearest-neighbour search (bounds the temporary array).
_CHUNK_CELLS = 1 << 23


@dataclass(frozen=True)
class TargetTrainingSet:
    """Unique canonical training compositions of one target with their mean measured value."""

    compositions: tuple[str, ...]
    values: np.ndarray


@dataclass(frozen=True)
class TrainingSet:
    """Training compositions of every target of a bundle, stacked for the distance search."""

    targets: Mapping[str, TargetTrainingSet]
    table: CompositionTable
    texts: tuple[str, ...]
    members: Mapping[str, np.ndarray]

    @classmethod
    def from_json(cls, text: str) -> TrainingSet:
        """Parse ``training_set.json``: ``{"targets": {name: {"compositions", "values"}}}``."""
        try:
            data = json.loads(text)
            targets = {
                name: TargetTrainingSet(
                    tuple(map(str, entry["compositions"])),
                    np.asarray(entry["values"], dtype=np.float64),
                )
                for name, entry in data["targets"].items()
            }
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"training_set.json is malformed ({exc!r})") from None
        for name, ts in targets.items():
            if len(ts.compositions) != len(ts.values) or not ts.compositions:
                raise BundleError(
                    f"training_set.json: target {name!r} needs one value per composition"
                )
        texts = tuple(dict.fromkeys(c for ts in targets.values() for c in ts.compositions))
        index = {c: i for i, c in enumerate(texts)}
        members = {
            name: np.array([index[c] for c in ts.compositions]) for name, ts in targets.items()
        }
        return cls(targets, CompositionTable.from_compositions(texts), texts, members)

    def seen_elements(self, target: str) -> frozenset[str]:
        """Elements occurring in at least one training composition of ``target``."""
        present = self.table.micro[self.members[target]] > 0
        return frozenset(el for j, el in enumerate(self.table.elements) if present[:, j].any())

    def applicability(self, table: CompositionTable) -> pl.DataFrame:
        """``unseen_elements``, ``nearest_train_distance``, ``nearest_train_composition``,
        ``<target>_nearest_composition`` and ``<target>_nearest_measured`` for every row of
        ``table``."""
        best_overlap, best_index = self._nearest(table)
        columns: dict[str, pl.Series | np.ndarray] = {
            "unseen_elements": self._unseen(table),
            "nearest_train_distance": (2 * SCALE - 2 * best_overlap["*"]).astype(np.float64)
            / SCALE,
            "nearest_train_composition": pl.Series(
                np.asarray(self.texts, dtype=object)[best_index["*"]], dtype=pl.Utf8
            ),
        }
        for name, ts in self.targets.items():
            columns[f"{name}_nearest_composition"] = pl.Series(
                np.asarray(ts.compositions, dtype=object)[best_index[name]], dtype=pl.Utf8
            )
            columns[f"{name}_nearest_measured"] = ts.values[best_index[name]]
        return pl.DataFrame(columns)

    def _unseen(self, table: CompositionTable) -> pl.Series:
        seen = [self.seen_elements(name) for name in self.targets]
        flagged = [el for el in table.elements if any(el not in s for s in seen)]
        if not flagged or not len(table):
            return pl.Series("unseen_elements", [""] * len(table), dtype=pl.Utf8)
        frame = pl.DataFrame({el: table.micro[:, table.elements.index(el)] for el in flagged})
        parts = [pl.when(pl.col(el) > 0).then(pl.lit(el)).otherwise(None) for el in flagged]
        return frame.select(
            pl.concat_str(parts, separator=",", ignore_nulls=True)
            .fill_null("")
            .alias("unseen_elements")
        ).to_series()

    def _nearest(
        self, table: CompositionTable
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Largest shared fraction ``Σ min(x, t)`` (millionths) and its training row, overall
        (key ``"*"``, index into :attr:`texts`) and per target (index into its own rows)."""
        n = len(table)
        train = np.zeros((len(self.texts), len(table.elements)), dtype=np.int32)
        own = {el: j for j, el in enumerate(self.table.elements)}
        for j, el in enumerate(table.elements):
            if el in own:
                train[:, j] = self.table.micro[:, own[el]]
        keys = ["*", *self.targets]
        overlap = {k: np.zeros(n, dtype=np.int64) for k in keys}
        index = {k: np.zeros(n, dtype=np.int64) for k in keys}
        step = max(1, _CHUNK_CELLS // max(1, train.size))
        for start in range(0, n, step):
            rows = slice(start, start + step)
            shared = np.minimum(table.micro[rows, None, :], train[None, :, :]).sum(
                axis=2, dtype=np.int64
            )
            best = shared.argmax(axis=1)
            index["*"][rows] = best
            overlap["*"][rows] = shared[np.arange(len(best)), best]
            for name, member in self.members.items():
                sub = shared[:, member]
                best = sub.argmax(axis=1)
                index[name][rows] = best
                overlap[name][rows] = sub[np.arange(len(best)), best]
        return overlap, index
