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
  elongation was measured is no evidence for its UTS. At a stated condition the search is
  restricted to alloys measured at that condition's processing route and temperature band
  (:attr:`hea_screen.conditions.Condition.measured_key`), the value is their mean there,
  and ``<target>_nearest_condition`` names the route and band, or says that no alloy was
  measured there (distance, composition and value then empty).

The interval's distance (:meth:`TrainingSet.search`) is searched among the
alloys the task's models **learned**: ``hea-screen update`` adds the lab's alloys to the
training set (so the nearest-measured columns know them), and where it keeps a task's members
(``--no-refit``, or a family it does not refit) it records in the target's ``learned`` count
that only its first alloys were learned; a candidate next to a lab alloy the models never saw
keeps the interval of its distance to what they did see.

Because both compositions sum to 1, ``Σ|x − t| = 2 − 2 Σ min(x, t)``, and ``min`` is zero
outside the candidate's own elements, so the search only touches the candidate palette's
columns. It runs in chunks of candidates against all training compositions (a few hundred).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from hea_screen.compositions.composition import SCALE
from hea_screen.compositions.table import CompositionTable, for_each_block
from hea_screen.conditions import Condition
from hea_screen.errors import BundleError, CompositionError

#: Per-target column suffixes at a stated condition, in order.
NEAREST_COLUMNS: tuple[str, ...] = (
    "nearest_composition",
    "nearest_distance",
    "nearest_measured",
    "nearest_condition",
)

#: Cells (candidate rows x training alloys) per chunk of the nearest-neighbour search: bounds
#: the temporary arrays and keeps them near the cache.
_CHUNK_CELLS = 1 << 20


@dataclass(frozen=True)
class TargetTrainingSet:
    """Unique canonical training compositions of one target with their mean measured value
    and, per composition, the mean value at each ``ROUTE|band`` where it was measured;
    ``learned``: how many of the first compositions the task's models learned (``None``: all;
    the others are lab alloys added by ``update`` without refitting the task's members)."""

    compositions: tuple[str, ...]
    values: np.ndarray
    measured_at: tuple[Mapping[str, float], ...] = ()
    learned: int | None = None


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
                    tuple(
                        {str(k): float(v) for k, v in at.items()}
                        for at in entry.get("measured_at", [])
                    ),
                    _learned(entry.get("learned")),
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
            if ts.measured_at and len(ts.measured_at) != len(ts.compositions):
                raise BundleError(
                    f"training_set.json: target {name!r} needs measured_at per composition"
                )
            if ts.learned is not None and ts.learned > len(ts.compositions):
                raise BundleError(
                    f"training_set.json: target {name!r} has learned {ts.learned} of "
                    f"{len(ts.compositions)} compositions"
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

    def applicability(
        self, table: CompositionTable, condition: Condition | None = None
    ) -> pl.DataFrame:
        """``unseen_elements`` and, per target, ``<target>_nearest_distance``,
        ``<target>_nearest_composition`` and ``<target>_nearest_measured`` for every row of
        ``table``; at a ``condition``, among the alloys measured there, with
        ``<target>_nearest_condition`` (module docstring)."""
        return self.search(table, condition)[0]

    def search(
        self, table: CompositionTable, condition: Condition | None = None
    ) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
        """:meth:`applicability`'s frame and, from the same search, per target the distance
        its interval's scale takes: each row's L1 distance to the nearest alloy its models
        learned (module docstring; for most targets every alloy, so the frame's
        ``<target>_nearest_distance``), at ``condition`` as the frame, NaN where none was
        measured there."""
        eligible = {name: self._measured_at(name, condition) for name in self.targets}
        learned = {
            name: eligible[name][eligible[name] < ts.learned]
            for name, ts in self.targets.items()
            if ts.learned is not None and ts.learned < len(ts.compositions)
        }
        best_overlap, best_index = self._nearest(
            table,
            {
                **{name: self.members[name][rows] for name, rows in eligible.items()},
                **{(name, "learned"): self.members[name][rows] for name, rows in learned.items()},
            },
        )

        def l1(key: Hashable) -> np.ndarray:
            """Each row's L1 distance to the nearest alloy of set ``key`` (NaN: the set is
            empty, :meth:`_nearest` left it out)."""
            if key not in best_overlap:
                return np.full(len(table), np.nan)
            return (2 * SCALE - 2 * best_overlap[key]).astype(np.float64) / SCALE

        interval = {name: l1((name, "learned") if name in learned else name) for name in eligible}
        columns: dict[str, pl.Series | np.ndarray] = {"unseen_elements": self._unseen(table)}
        for name, ts in self.targets.items():
            rows = eligible[name]
            if not len(rows):
                none = pl.Series([None] * len(table), dtype=pl.Float64)
                columns[f"{name}_nearest_distance"] = none
                columns[f"{name}_nearest_composition"] = pl.Series(
                    [None] * len(table), dtype=pl.Utf8
                )
                columns[f"{name}_nearest_measured"] = none
            else:
                row = rows[best_index[name]]
                distance = l1(name) if name in learned else interval[name]
                columns[f"{name}_nearest_distance"] = distance
                columns[f"{name}_nearest_composition"] = pl.Series(
                    np.asarray(ts.compositions, dtype=object)[row], dtype=pl.Utf8
                )
                columns[f"{name}_nearest_measured"] = self._value(ts, row, condition)
            if condition is not None:
                where = condition.measured_key.replace("|", ", ").lower()
                columns[f"{name}_nearest_condition"] = pl.Series(
                    [where if len(rows) else f"none measured at {where}"] * len(table),
                    dtype=pl.Utf8,
                )
        return pl.DataFrame(columns), interval

    def _measured_at(self, name: str, condition: Condition | None) -> np.ndarray:
        """Rows of target ``name`` measured at ``condition`` (all rows without a condition or
        without per-condition data)."""
        ts = self.targets[name]
        if condition is None or not ts.measured_at:
            return np.arange(len(ts.compositions))
        key = condition.measured_key
        return np.array([i for i, at in enumerate(ts.measured_at) if key in at], dtype=np.int64)

    @staticmethod
    def _value(ts: TargetTrainingSet, rows: np.ndarray, condition: Condition | None) -> np.ndarray:
        if condition is None or not ts.measured_at:
            return ts.values[rows]
        return np.array([ts.measured_at[r][condition.measured_key] for r in rows])

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
        self, table: CompositionTable, members: Mapping[Hashable, np.ndarray]
    ) -> tuple[dict[Hashable, np.ndarray], dict[Hashable, np.ndarray]]:
        """Largest shared fraction ``Σ min(x, t)`` (millionths) and its training row, per
        set of ``members`` (index into ``members[key]``, indices into :attr:`texts`; a set with
        no member is left out).

        Works on the table's slots (each row's non-zero elements), so the cost is rows ×
        training alloys × elements per row, whatever the size of the palette."""
        n = len(table)
        # train_t[j, i]: fraction of the table's element j in training alloy i
        train_t = np.zeros((len(table.elements), len(self.texts)), dtype=np.int32)
        own = {el: j for j, el in enumerate(self.table.elements)}
        for j, el in enumerate(table.elements):
            if el in own:
                train_t[j] = self.table.micro[:, own[el]]
        members = {k: m for k, m in members.items() if len(m)}
        overlap = {k: np.zeros(n, dtype=np.int64) for k in members}
        index = {k: np.zeros(n, dtype=np.int64) for k in members}
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
                for name, member in members.items():
                    sub = shared[:, member]
                    best = sub.argmax(axis=1)
                    index[name][rows] = best
                    overlap[name][rows] = sub[np.arange(len(best)), best]

        for_each_block(n, search)
        return overlap, index


def _learned(value: object) -> int | None:
    """A target's ``learned`` count: absent (all learned) or a non-negative integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"learned {value!r} is not a count of compositions")
    return value


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a measured value")


def _texts(compositions: object) -> list[str]:
    if not isinstance(compositions, list) or not all(isinstance(c, str) for c in compositions):
        raise TypeError("compositions must be a list of texts")
    return compositions
