"""Candidate spaces: every alloy of a palette on a fraction grid, indexed without enumerating.

A :class:`CandidateSpace` holds, for each number of elements ``k`` in a range, two families:

- **equimolar**: every ``k``-element subset of the palette in equal atomic fractions
  (``1/k`` each, rounded to millionths with the largest-remainder rule);
- **grid** (non-equimolar): every composition whose fractions are multiples of the grid
  ``step`` (e.g. 0.05 = 5 at.%), each of the ``k`` elements present, *except* the
  equimolar point, which already belongs to the equimolar family.

Fractions must lie within the global ``[min_fraction, max_fraction]`` (applied to the
elements present) and within per-element ``bounds`` (applied to the fraction of that
element, 0 when absent: a lower bound above 0 therefore makes the element required).
``require`` names elements present in every candidate.

Each composition occurs exactly once and has a fixed global index. The order is by number
of elements, then family (equimolar first), then the vector of grid units over the sorted
palette in lexicographic order. Every count comes from a small dynamic programme over
(palette position, elements still to place, units still to place), so the size of a space
is known without enumerating it, and any index range (a partition) or any set of indices
(a random sample) is turned into a :class:`~hea_screen.compositions.table.CompositionTable`
directly,
vectorized with numpy, in memory proportional to the rows asked for. Spaces with more than
:data:`MAX_INDEXABLE` candidates cannot be screened whole, but can be sampled: their counts
are kept as exact Python integers. A grid finer than the storage resolution (millionths) or
whose count tables would exceed :data:`MAX_TABLE_CELLS` is refused at once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Protocol

import numpy as np

from hea_screen.compositions.composition import PERIODIC_TABLE, SCALE
from hea_screen.compositions.elements import check_elements
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import SpaceError

#: Largest index a space may reach to be enumerated whole (int64 arithmetic); larger spaces
#: can only be sampled.
MAX_INDEXABLE = 2**62

#: Most cells the completion-count tables of a space may have (time and memory to build them).
MAX_TABLE_CELLS = 20_000_000

#: Rows unranked at once; bounds the temporary (rows x grid values) matrices.
_CHUNK_ROWS = 16_384

#: Sample positions drawn per random-number block (independent of partitioning).
_SAMPLE_BLOCK = 4_096


@dataclass(frozen=True)
class Segment:
    """One (number of elements, family) part of a space, with its completion-count tables.

    At palette position ``i`` an element may be absent (if ``zero_ok[i]``) or take any
    whole number of grid units in ``low[i]..high[i]`` (a fraction is ``c / units``; the
    allowed values form an interval because bounds are intervals). ``equal_value`` is the
    all-equal unit count excluded from the grid family (``None``: nothing excluded).
    ``counts[i, r, u, f]`` is the number of ways to fill positions ``i..`` with ``r``
    elements and ``u`` units, where ``f`` = 1 while every element placed so far equals
    ``equal_value``; ``cumulative[i, r, w, f]`` sums ``counts[i, r, :w, f]``. Both are int64,
    or exact Python integers (object arrays) when the counts reach :data:`MAX_INDEXABLE`.
    """

    k: int
    family: str
    units: int
    zero_ok: tuple[bool, ...]
    low: tuple[int, ...]
    high: tuple[int, ...]
    equal_value: int | None
    size: int
    counts: np.ndarray = field(repr=False, compare=False)
    cumulative: np.ndarray = field(repr=False, compare=False)

    @property
    def start_flag(self) -> int:
        return 1 if self.equal_value is not None else 0


class Candidates(Protocol):
    """What the engine needs from a candidate set: a size and row ranges as tables."""

    elements: tuple[str, ...]

    @property
    def size(self) -> int: ...

    def table(self, lo: int, hi: int) -> CompositionTable: ...

    def fingerprint(self) -> str: ...

    def describe(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class CandidateSpace:
    """A palette, a range of element counts, a grid step and bounds (see the module doc).

    Fractions are exact (:class:`~fractions.Fraction`); ``step`` must divide 1 evenly.
    """

    elements: tuple[str, ...]
    min_elements: int
    max_elements: int
    step: Fraction
    bounds: Mapping[str, tuple[Fraction, Fraction]] = field(default_factory=dict)
    min_fraction: Fraction = Fraction(0)
    max_fraction: Fraction = Fraction(1)
    require: tuple[str, ...] = ()
    equimolar: bool = True
    non_equimolar: bool = True

    def __post_init__(self) -> None:
        self._validate()

    # ----------------------------------------------------------------- validation
    def _validate(self) -> None:
        if not self.elements:
            raise SpaceError("no elements given: name at least one, e.g. --elements Co,Cr,Fe,Ni")
        unknown = [el for el in self.elements if el not in PERIODIC_TABLE]
        if unknown:
            raise SpaceError(
                f"unknown element {', '.join(map(repr, unknown))}: element symbols are "
                "case-sensitive, e.g. Co, Cr, Fe, Mn, Ni"
            )
        if list(self.elements) != sorted(set(self.elements)):
            raise SpaceError(f"palette {self.elements} must be sorted and without repeats")
        check_elements(self.elements)
        m = len(self.elements)
        if not 1 <= self.min_elements <= self.max_elements:
            raise SpaceError(
                f"element counts {self.min_elements}-{self.max_elements}: need "
                "1 <= min-elements <= max-elements"
            )
        if self.min_elements > m:
            raise SpaceError(
                f"empty space: at least {self.min_elements} elements per alloy asked for, "
                f"but the palette has only {m} ({', '.join(self.elements)})"
            )
        if not (0 < self.step <= 1) or (1 / self.step).denominator != 1:
            raise SpaceError(
                f"grid step {float(self.step):g} must divide 1 evenly "
                "(1/step a whole number), e.g. 0.05, 0.1, 0.125, 1/3"
            )
        if self.step < Fraction(1, SCALE):
            raise SpaceError(
                f"grid step {float(self.step):g} is finer than the storage resolution "
                f"{1 / SCALE:g} (compositions are kept in millionths): use a step of at least "
                f"{1 / SCALE:g}, e.g. 0.01"
            )
        cells = self.table_cells()
        if cells > MAX_TABLE_CELLS:
            raise SpaceError(
                f"grid step {float(self.step):g} is too fine for {m} elements: the space cannot "
                f"be indexed ({cells:,} count-table cells, at most {MAX_TABLE_CELLS:,}); use a "
                "coarser --step or fewer elements"
            )
        if not (0 <= self.min_fraction <= self.max_fraction <= 1):
            raise SpaceError(
                f"fraction range {float(self.min_fraction):g}-{float(self.max_fraction):g}: "
                "need 0 <= min-fraction <= max-fraction <= 1"
            )
        for el, (lo, hi) in self.bounds.items():
            if el not in self.elements:
                raise SpaceError(
                    f"bounds given for {el}, which is not in the palette "
                    f"({', '.join(self.elements)})"
                )
            if not 0 <= lo <= hi <= 1:
                raise SpaceError(
                    f"bounds {el}:{float(lo):g}-{float(hi):g}: need 0 <= low <= high <= 1"
                )
        missing = [el for el in self.require if el not in self.elements]
        if missing:
            raise SpaceError(
                f"required element {', '.join(missing)} is not in the palette "
                f"({', '.join(self.elements)})"
            )
        if not (self.equimolar or self.non_equimolar):
            raise SpaceError(
                "empty space: both equimolar and non-equimolar alloys are excluded; "
                "drop --equimolar-only or --non-equimolar-only"
            )

    # ----------------------------------------------------------------- structure
    @property
    def grid_units(self) -> int:
        """Number of grid units in a whole alloy (1 / step)."""
        return int(1 / self.step)

    def table_cells(self) -> int:
        """Cells of the completion-count tables that :attr:`segments` builds (a cost bound)."""
        m, top = len(self.elements), min(self.max_elements, len(self.elements))
        ks = range(self.min_elements, top + 1)
        grid = (self.grid_units + 2) * 2 * sum(k + 1 for k in ks) if self.non_equimolar else 0
        equimolar = sum((k + 1) * (k + 2) for k in ks) if self.equimolar else 0
        return (m + 1) * 2 * (grid + equimolar)

    def required(self) -> tuple[str, ...]:
        """Elements present in every candidate: ``require`` plus those with a lower bound > 0."""
        forced = {el for el, (lo, _) in self.bounds.items() if lo > 0}
        return tuple(sorted(set(self.require) | forced))

    def _ranges(self, units: int, low: int, high: int) -> list[tuple[bool, int, int]]:
        """Per palette position: (absent allowed, lowest and highest units allowed).

        Candidate unit counts are ``low..high``; bounds cut them to an interval (empty when
        lowest > highest).
        """
        required = set(self.required())
        out = []
        for el in self.elements:
            lo, hi = self.bounds.get(el, (Fraction(0), Fraction(1)))
            lo, hi = max(lo, self.min_fraction), min(hi, self.max_fraction)
            a = max(low, math.ceil(lo * units))
            b = min(high, math.floor(hi * units))
            out.append((el not in required, a, b))
        return out

    @cached_property
    def segments(self) -> tuple[Segment, ...]:
        """The (k, family) segments in index order, with their sizes."""
        segs = []
        top = min(self.max_elements, len(self.elements))
        n = self.grid_units
        for k in range(self.min_elements, top + 1):
            if self.equimolar:
                segs.append(_segment(k, "equimolar", k, self._ranges(k, 1, 1), None))
            if self.non_equimolar:
                equal = n // k if n % k == 0 else None
                segs.append(_segment(k, "grid", n, self._ranges(n, 1, n), equal))
        return tuple(segs)

    @property
    def size(self) -> int:
        """Number of candidates (exact, computed without enumerating)."""
        return sum(s.size for s in self.segments)

    @cached_property
    def offsets(self) -> np.ndarray:
        """Global index of the first candidate of each segment, plus the total at the end."""
        self.check_indexable()
        return self.starts.astype(np.int64)

    @cached_property
    def starts(self) -> np.ndarray:
        """:attr:`offsets` as exact Python integers (an object array), for any space size."""
        return np.array([0, *itertools.accumulate(s.size for s in self.segments)], dtype=object)

    def check_indexable(self) -> None:
        """Raise :class:`SpaceError` if the space is too large to be screened whole."""
        if self.size >= MAX_INDEXABLE:
            raise SpaceError(
                f"the space holds {self.size:.3e} candidates, too many to screen whole: screen "
                "a random sample with --sample N or narrow it (fewer elements, a coarser "
                "--step, tighter bounds)"
            )

    def check_nonempty(self) -> None:
        """Raise :class:`SpaceError` if no composition satisfies the definition."""
        if self.size:
            return
        unbounded = CandidateSpace(
            self.elements,
            self.min_elements,
            self.max_elements,
            self.step,
            equimolar=self.equimolar,
            non_equimolar=self.non_equimolar,
        )
        what = (
            f"{self.min_elements}-{self.max_elements} of {', '.join(self.elements)}"
            f" on a {float(self.step):g} grid"
        )
        if unbounded.size:
            raise SpaceError(
                f"the bounds admit no composition of {what}: {self.describe_bounds()}; loosen them"
            )
        raise SpaceError(f"empty space: no composition of {what}; widen the element range")

    def describe_bounds(self) -> str:
        """Human-readable bounds, e.g. ``fractions 0.05-0.35, Al 0-0.2, requires Co``."""
        parts = [f"fractions {float(self.min_fraction):g}-{float(self.max_fraction):g}"]
        parts += [f"{el} {float(lo):g}-{float(hi):g}" for el, (lo, hi) in self.bounds.items()]
        if self.require:
            parts.append("requires " + ", ".join(self.require))
        return ", ".join(parts)

    def describe(self) -> dict[str, object]:
        """A JSON-ready definition of the space (also what its fingerprint hashes)."""
        return {
            "elements": list(self.elements),
            "min_elements": self.min_elements,
            "max_elements": self.max_elements,
            "step": str(self.step),
            "min_fraction": str(self.min_fraction),
            "max_fraction": str(self.max_fraction),
            "bounds": {el: [str(lo), str(hi)] for el, (lo, hi) in sorted(self.bounds.items())},
            "require": sorted(self.require),
            "equimolar": self.equimolar,
            "non_equimolar": self.non_equimolar,
        }

    def fingerprint(self) -> str:
        """SHA-256 of the definition: equal spaces (same candidates, same order) hash alike."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    # ----------------------------------------------------------------- enumeration
    def table(self, lo: int, hi: int) -> CompositionTable:
        """Candidates with global indices ``lo <= i < hi`` as a table over the palette."""
        return self.rows(np.arange(lo, hi, dtype=np.int64))

    def rows(self, indices: np.ndarray) -> CompositionTable:
        """Candidates at the given global indices (any order) as a table over the palette."""
        indices = np.asarray(indices)
        if indices.dtype != object:
            indices = indices.astype(np.int64)
        offsets = self.starts if indices.dtype == object else self.offsets
        if len(indices) and (indices.min() < 0 or indices.max() >= offsets[-1]):
            raise IndexError(f"candidate index outside 0..{int(offsets[-1]) - 1}")
        micro = np.zeros((len(indices), len(self.elements)), dtype=np.int32)
        seg_of = np.searchsorted(offsets, indices, side="right") - 1
        for s in np.unique(seg_of):
            where = np.flatnonzero(seg_of == s)
            seg = self.segments[int(s)]
            for a in range(0, len(where), _CHUNK_ROWS):
                part = where[a : a + _CHUNK_ROWS]
                units = _unrank(seg, indices[part] - offsets[s])
                micro[part] = _to_micro(units, seg.units)
        return CompositionTable(self.elements, micro)


def _segment(
    k: int,
    family: str,
    units: int,
    ranges: list[tuple[bool, int, int]],
    equal_value: int | None,
) -> Segment:
    """Build the completion-count tables of a segment (exact integers, then int64).

    ``ranges[i]`` is ``(absent allowed, lowest units, highest units)`` for position ``i``.
    """
    m = len(ranges)
    flags = 2 if equal_value is not None else 1
    counts = np.zeros((m + 1, k + 1, units + 1, flags), dtype=object)
    cumul = np.zeros((m + 1, k + 1, units + 2, flags), dtype=object)
    counts[m, 0, 0, 0] = 1  # flag 1 at the end = the all-equal point: excluded (stays 0)
    cumul[m, :, 1:, :] = np.cumsum(counts[m], axis=1)
    u = np.arange(units + 1)
    for i in range(m - 1, -1, -1):
        zero_ok, a, b = ranges[i]
        cur = counts[i + 1].copy() if zero_ok else np.zeros_like(counts[i + 1])
        if a <= b:
            # Σ_{c=a..b} counts[i+1, r-1, u-c, 0] via the cumulative sums along u.
            hi = np.clip(u - a + 1, 0, units + 1)
            lo = np.clip(u - b, 0, units + 1)
            window = cumul[i + 1][:k, hi, 0] - cumul[i + 1][:k, lo, 0]
            cur[1:, :, 0] += window
            if flags == 2:
                cur[1:, :, 1] += window
                if a <= equal_value <= b:  # the equal value keeps the flag set
                    keep = u >= equal_value
                    w = u[keep] - equal_value
                    cur[1:, keep, 1] += counts[i + 1][:k, w, 1] - counts[i + 1][:k, w, 0]
        counts[i] = cur
        cumul[i, :, 1:, :] = np.cumsum(cur, axis=1)
    size = int(counts[0, k, units, flags - 1])
    exact = cumul.max() >= MAX_INDEXABLE
    return Segment(
        k,
        family,
        units,
        tuple(r[0] for r in ranges),
        tuple(r[1] for r in ranges),
        tuple(r[2] for r in ranges),
        equal_value,
        size,
        counts if exact else counts.astype(np.int64),
        cumul if exact else cumul.astype(np.int64),
    )


def _unrank(seg: Segment, local: np.ndarray) -> np.ndarray:
    """Unit vectors (rows, palette) of the candidates at ``local`` indices of a segment.

    Walks the palette; at each position the index either falls among the completions with
    the element absent, or a vectorized binary search over the allowed unit counts finds
    the value whose block of completions holds it.
    """
    rows = len(local)
    idx = local.astype(seg.counts.dtype)
    r = np.full(rows, seg.k, dtype=np.int64)
    u = np.full(rows, seg.units, dtype=np.int64)
    f = np.full(rows, seg.start_flag, dtype=np.int64)
    out = np.zeros((rows, len(seg.low)), dtype=np.int64)
    v = -1 if seg.equal_value is None else seg.equal_value
    for i in range(len(seg.low)):
        a, b = seg.low[i], seg.high[i]
        absent = seg.counts[i + 1][r, u, f] if seg.zero_ok[i] else np.zeros(rows, dtype=np.int64)
        present = idx >= absent
        idx = idx - np.where(present, absent, 0)
        lo_x = np.full(rows, a, dtype=np.int64)
        hi_x = np.full(rows, max(a, b), dtype=np.int64)
        while True:
            active = lo_x < hi_x
            if not active.any():
                break
            mid = (lo_x + hi_x) // 2
            go_left = _below(seg, i, u, r, f, mid) > idx
            hi_x = np.where(active & go_left, mid, hi_x)
            lo_x = np.where(active & ~go_left, mid + 1, lo_x)
        value = np.where(present, lo_x, 0)
        idx = idx - np.where(present, _below(seg, i, u, r, f, lo_x - 1), 0)
        out[:, i] = value
        f = np.where(present & (value != v), 0, f)
        r = r - present
        u = u - value
    return out


def _below(
    seg: Segment, i: int, u: np.ndarray, r: np.ndarray, f: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """Completions with the element at position ``i`` present with ``low[i]..x`` units.

    ``u``, ``r`` and ``f`` are each row's units, elements and flag still to place.
    """
    counts, cumul = seg.counts[i + 1], seg.cumulative[i + 1]
    a = seg.low[i]
    rm1 = np.maximum(r - 1, 0)
    hi = np.clip(u - a + 1, 0, seg.units + 1)
    lo = np.clip(u - x, 0, seg.units + 1)
    total = np.where(hi > lo, cumul[rm1, hi, 0] - cumul[rm1, lo, 0], 0)
    if seg.equal_value is not None:
        v = seg.equal_value
        w = u - v
        fix = (f == 1) & (x >= v) & (v >= a) & (w >= 0)
        wc = np.maximum(w, 0)
        total = total + np.where(fix, counts[rm1, wc, 1] - counts[rm1, wc, 0], 0)
    return np.where(r > 0, total, 0)


def _to_micro(units: np.ndarray, total: int) -> np.ndarray:
    """Grid units (rows summing to ``total``) to millionths, rounded by largest remainder.

    Same rule as :func:`hea_screen.compositions.composition.largest_remainder`: floor every share,
    give
    the missing millionths to the largest remainders, ties to the alphabetically first
    element (the lower palette position).
    """
    scaled = units * SCALE
    floors = scaled // total
    rem = scaled % total
    missing = SCALE - floors.sum(axis=1)
    if not missing.any():
        return floors.astype(np.int32)
    order = np.argsort(-rem, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(units.shape[1])[None, :], axis=1)
    return (floors + (rank < missing[:, None])).astype(np.int32)


@dataclass(frozen=True)
class SampledSpace:
    """A stratified random sample of ``n`` candidates of a space, reproducible from ``seed``.

    The index range of the space is cut into ``n`` equal strata and one candidate is drawn
    uniformly from each, so the sample is distinct by construction and covers every region
    of the space evenly. Position ``j`` of the sample depends only on the space, ``n``,
    ``seed`` and ``j`` (random numbers come in fixed blocks of positions), never on how the
    sample is partitioned. If ``n`` is at least the size of the space, the whole space is
    used. A space of :data:`MAX_INDEXABLE` candidates or more is sampled the same way with
    exact Python integers (indices are then an object array).
    """

    space: CandidateSpace
    n: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise SpaceError(f"sample size {self.n}: need at least 1 candidate")

    @property
    def elements(self) -> tuple[str, ...]:
        return self.space.elements

    @property
    def size(self) -> int:
        return min(self.n, self.space.size)

    def indices(self, lo: int, hi: int) -> np.ndarray:
        """Global space indices of sample positions ``lo <= j < hi`` (increasing)."""
        total = self.space.size
        if self.n >= total:
            return np.arange(lo, hi, dtype=np.int64)
        exact = total >= MAX_INDEXABLE
        q, rmd = divmod(total, self.n)
        out = []
        for block in range(lo // _SAMPLE_BLOCK, math.ceil(hi / _SAMPLE_BLOCK)):
            j = np.arange(block * _SAMPLE_BLOCK, min((block + 1) * _SAMPLE_BLOCK, self.n))
            jj = j.astype(object) if exact else j
            start = jj * q + (jj * rmd) // self.n
            stop = (jj + 1) * q + ((jj + 1) * rmd) // self.n
            rng = np.random.default_rng([self.seed, block])
            offset = _draw_exact(rng, stop - start) if exact else rng.integers(0, stop - start)
            keep = (j >= lo) & (j < hi)
            out.append((start + offset)[keep])
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def table(self, lo: int, hi: int) -> CompositionTable:
        """Sample positions ``lo <= j < hi`` as a table over the palette."""
        return self.space.rows(self.indices(lo, hi))

    def describe(self) -> dict[str, object]:
        return {**self.space.describe(), "sample": self.n, "seed": self.seed}

    def fingerprint(self) -> str:
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _draw_exact(rng: np.random.Generator, widths: np.ndarray) -> np.ndarray:
    """Uniform integers in ``0 <= x < width`` for Python-int ``widths`` of any size.

    Each draw takes 64 random bits more than the widest width needs, so the bias of the
    final modulo is below 2**-64.
    """
    words = max(int(w).bit_length() for w in widths) // 64 + 2
    raw = rng.integers(0, 2**64, size=(len(widths), words), dtype=np.uint64)
    drawn = [int.from_bytes(row.tobytes(), "little") % int(w) for row, w in zip(raw, widths)]
    return np.array(drawn, dtype=object)
