"""How far a candidate lies from what the models were trained on.

Two flags travel with every prediction:

- ``unseen_elements``: the candidate's elements that are absent from the training set of
  at least one target (comma-joined, ``""`` if none). A model has never seen such an
  element in a measured alloy, so its prediction is an extrapolation.
- per target, ``<target>_nearest_distance``: the L1 distance in atomic fractions,
  ``Σ_i |x_i − t_i|`` over the union of elements (0 for an alloy of that target's training
  set, 2 for an alloy sharing no element with any), to the nearest composition of that
  target's own training set; ``<target>_nearest_composition`` names it and
  ``<target>_nearest_measured`` gives its measured value (the mean where an alloy was
  measured more than once). There is no distance pooled over targets: an alloy whose
  elongation was measured is no evidence for its UTS.

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

from hea_screen.compositions.composition import SCALE
from hea_screen.compositions.table import CompositionTable, for_each_block
from hea_screen.errors import BundleError, CompositionError

#: Cells (candidate rows x training alloys) per chunk of the nearest-neighbour search: bounds
#: the temporary arrays and keeps them near the cache.
_CHUNK_CELLS = 1 << 20


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
        """Parse ``training_set.json``: ``{"targets": {name: {"compositions", "values"}}}``;
        raise :class:`BundleError` saying what is wrong (NaN and Infinity are refused)."""
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
            targets = {
                name: TargetTrainingSet(
                    tuple(_texts(entry["compositions"])),
                    np.asarray(entry["values"], dtype=np.float64),
                )
                for name, entry in data["targets"].items()
            }
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(
                f"training_set.json is malformed ({exc!r}): it must hold "
                '{"targets": {name: {"compositions": [text, ...], "values": [number, ...]}}}'
            ) from None
        if not targets:
            raise BundleError("training_set.json lists no targets")
        for name, ts in targets.items():
            if ts.values.ndim != 1 or len(ts.compositions) != len(ts.values) or not ts.compositions:
                raise BundleError(
                    f"training_set.json: target {name!r} needs one value per composition"
                )
            if not np.isfinite(ts.values).all():
                raise BundleError(f"training_set.json: target {name!r} has non-finite values")
        texts = tuple(dict.fromkeys(c for ts in targets.values() for c in ts.compositions))
        index = {c: i for i, c in enumerate(texts)}
        members = {
            name: np.array([index[c] for c in ts.compositions]) for name, ts in targets.items()
        }
        try:
            table = CompositionTable.from_compositions(texts)
        except CompositionError as exc:
            raise BundleError(f"training_set.json holds a bad composition: {exc}") from None
        return cls(targets, table, texts, members)

    def seen_elements(self, target: str) -> frozenset[str]:
        """Elements occurring in at least one training composition of ``target``."""
        present = self.table.micro[self.members[target]] > 0
        return frozenset(el for j, el in enumerate(self.table.elements) if present[:, j].any())

    def applicability(self, table: CompositionTable) -> pl.DataFrame:
        """``unseen_elements`` and, per target, ``<target>_nearest_distance``,
        ``<target>_nearest_composition`` and ``<target>_nearest_measured`` for every row of
        ``table``."""
        best_overlap, best_index = self._nearest(table)
        columns: dict[str, pl.Series | np.ndarray] = {"unseen_elements": self._unseen(table)}
        for name, ts in self.targets.items():
            distance = (2 * SCALE - 2 * best_overlap[name]).astype(np.float64) / SCALE
            columns[f"{name}_nearest_distance"] = distance
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
        """Largest shared fraction ``Σ min(x, t)`` (millionths) and its training row, per
        target (index into that target's own rows).

        Works on the table's slots (each row's non-zero elements), so the cost is rows ×
        training alloys × elements per row, whatever the size of the palette."""
        n = len(table)
        # train_t[j, i]: fraction of the table's element j in training alloy i
        train_t = np.zeros((len(table.elements), len(self.texts)), dtype=np.int32)
        own = {el: j for j, el in enumerate(self.table.elements)}
        for j, el in enumerate(table.elements):
            if el in own:
                train_t[j] = self.table.micro[:, own[el]]
        overlap = {k: np.zeros(n, dtype=np.int64) for k in self.targets}
        index = {k: np.zeros(n, dtype=np.int64) for k in self.targets}
        slots = table.slots()
        step = max(1, _CHUNK_CELLS // max(1, train_t.shape[1]))

        def search(block: slice) -> None:
            for start in range(block.start, min(block.stop, n), step):
                rows = slice(start, min(start + step, block.stop, n))
                shared = np.zeros((rows.stop - rows.start, train_t.shape[1]), dtype=np.int32)
                gathered = np.empty_like(shared)
                for s in range(slots.width):
                    # padding slots hold fraction 0 and add nothing
                    np.take(train_t, slots.index[s, rows], axis=0, out=gathered)
                    np.minimum(slots.micro[s, rows, None], gathered, out=gathered)
                    shared += gathered
                for name, member in self.members.items():
                    sub = shared[:, member]
                    best = sub.argmax(axis=1)
                    index[name][rows] = best
                    overlap[name][rows] = sub[np.arange(len(best)), best]

        for_each_block(n, search)
        return overlap, index


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a measured value")


def _texts(compositions: object) -> list[str]:
    if not isinstance(compositions, list) or not all(isinstance(c, str) for c in compositions):
        raise TypeError("compositions must be a list of texts")
    return compositions
