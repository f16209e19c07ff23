"""Partitioned screening on Dask: enumerate, featurize, predict, score, merge.

A screen cuts the candidate positions ``0..size`` into contiguous partitions. On a worker,
a partition is processed in batches of ``batch_size`` candidates: the batch is built
directly from the space (:mod:`hea_screen.screening.space`), featurized with polars, predicted with
ONNX Runtime (the worker's cached :class:`~hea_screen.inference.predictor.TaskPredictor`, at the
ranking's condition), scored, and
folded into the partition's running top-k and Pareto front
(:class:`~hea_screen.screening.ranking.Partial`).
Only that partial travels back; the driver folds partials together as they arrive, so
memory stays bounded by a partition plus the top-k, whatever the size of the space.

Identical results whatever the partitioning or the number of workers: partition edges are
multiples of ``batch_size``, so every candidate is predicted in the same batch (same
neighbours, same shapes) however the work is split; merging is order-free and ties break
on the canonical composition text.

Where the partitions run:

- ``scheduler`` (or ``DASK_SCHEDULER_ADDRESS``): an existing Dask cluster;
- one worker or a single partition: in this process, on Dask's synchronous scheduler
  (starting worker processes costs seconds and a model load each, and buys nothing then);
- otherwise a ``LocalCluster`` of ``workers`` processes with one thread each, ONNX Runtime
  getting ``cores // workers`` threads per process.

Each worker process loads a model once: predictors are cached per process by
:class:`ModelRef` (:func:`predictor_for`). A screen pins the bundle's SHA-256 (its identity,
``manifest.json``'s digest) in the :class:`ModelRef`, so a worker refuses a bundle altered after
the driver checked it, and the ranked table carries it in its ``model_sha256`` column.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import dask
import numpy as np
import polars as pl
from tqdm import tqdm

from hea_screen.compositions.elements import check_elements, mixing_matrix
from hea_screen.compositions.features import featurize
from hea_screen.compositions.phase_rules import PHASE_FLAG_COLUMNS, phase_flags
from hea_screen.compositions.table import CompositionTable
from hea_screen.compositions.weighing import lab_columns
from hea_screen.conditions import PHASE, PHASES
from hea_screen.errors import BundleError, ElementDataError, SpaceError, UserInputError
from hea_screen.inference.applicability import TrainingSet
from hea_screen.inference.bundle import Coverage, load_task_bundle
from hea_screen.inference.paper_predictor import bundle_format, bundle_root, load_model
from hea_screen.inference.predictor import TaskPredictor, phase_column
from hea_screen.screening.ranking import Partial, Ranking, Reference, final_ranking, score
from hea_screen.screening.space import Candidates, SampledSpace

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

#: Spaces larger than this need ``--sample`` or an explicit confirmation.
LARGE_SPACE = 1_000_000

#: ``hea-screen`` screens spaces up to this size in its own process by default: starting a
#: local cluster (worker processes, a model load each) costs more than it saves there
#: (docs/benchmarks.md).
IN_PROCESS_SPACE = 1_000_000

#: Default rows per model call; partition edges are multiples of it (4,096: the fastest of
#: 512, 4,096 and 16,384 for the shipped tree ensembles, docs/benchmarks.md).
DEFAULT_BATCH = 4096

#: Fold models per task in the cheap first stage of a screen (:func:`first_stage`).
CHEAP_FOLDS = 1

#: Default shortlist of a two-stage screen, in multiples of ``--top``: the full ensemble
#: re-scores this many of the first stage's best (chosen from the fidelity measured in
#: docs/benchmarks.md).
SHORTLIST_FACTOR = 100

#: Smallest default shortlist: with a small ``--top`` a shortlist of 100 x top missed the
#: exact best (``--top 3`` on the Cantor space: 300 of 7,051 kept, the exact top 1 not
#: among them); the fidelity measurements shortlisted 10,000 (top 100).
MIN_SHORTLIST = 10_000

#: Columns of the ranked table after ``rank, composition, score, pareto`` and the predicted
#: tasks (:func:`result_columns`).
LAB_COLUMNS: tuple[str, ...] = ("n_elements", "at_pct", "wt_pct", "weigh_out_g")
CONDITION_COLUMNS: tuple[str, ...] = ("test_type", "temperature_c", "processing")


def result_columns(ranking: Ranking) -> tuple[str, ...]:
    """Column order of the ranked table: rank and score, each ranked task's prediction
    (mean, std, calibrated interval, risk-adjusted value), phase probabilities, the empirical
    phase rules (:mod:`hea_screen.compositions.phase_rules`), lab columns,
    the condition, per-task nearest training data, flags and the model's identity."""
    tasks = ranking.tasks
    return (
        "rank",
        "composition",
        "score",
        "pareto",
        *(f"{t}_{s}" for t in tasks for s in ("mean", "std", "lo", "hi", "adj")),
        *(phase_column(p) for p in PHASES),
        *PHASE_FLAG_COLUMNS,
        *LAB_COLUMNS,
        *CONDITION_COLUMNS,
        *(f"{t}_{s}" for t in tasks for s in ("nearest_composition", "nearest_distance",
                                              "nearest_measured")),
        "unseen_elements",
        "extrapolated_tasks",
        "model_sha256",
    )


@dataclass(frozen=True)
class ModelRef:
    """How a worker opens the model: bundle path (``None``: shipped default), options, and the
    pinned SHA-256 of the bundle's ``manifest.json`` (``None``: any; a prefix of >= 12 digits
    is accepted)."""

    path: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = DEFAULT_BATCH
    threads: int | None = None
    sha256: str | None = None


_MODELS: dict[ModelRef, TaskPredictor] = {}
_LOADS: dict[ModelRef, int] = {}
_LOCK = threading.Lock()


def predictor_for(ref: ModelRef) -> TaskPredictor:
    """This process's predictor for ``ref``, loading it on first use only."""
    with _LOCK:
        if ref not in _MODELS:
            _MODELS[ref] = load_model(
                ref.path, ref.device, ref.precision, ref.batch_size, ref.threads, sha256=ref.sha256
            )
            _LOADS[ref] = _LOADS.get(ref, 0) + 1
        return _MODELS[ref]


def model_loads() -> dict[str, int]:
    """How many times each model was loaded in this process (``repr(ref)``: count)."""
    with _LOCK:
        return {repr(ref): n for ref, n in _LOADS.items()}


@dataclass(frozen=True)
class ModelInfo:
    """What the driver reads from a condition-aware bundle (no sessions): identity, the
    tasks it predicts with the conditions their data cover, and score scales."""

    path: Path
    sha256: str
    reference: Reference
    tasks: tuple[str, ...]
    coverage: dict[str, Coverage]


def predicted_tasks(ranking: Ranking, available: Sequence[str]) -> tuple[str, ...]:
    """Tasks a screen predicts: the ranking's, plus phase where the bundle has it."""
    return ranking.tasks + ((PHASE.name,) if PHASE.name in available else ())


def inspect_model(path: str | Path | None, sha256: str | None = None) -> ModelInfo:
    """Verify a bundle (pinned to ``sha256`` when given) and read what ranking and input
    checks need. Screening needs a condition-aware (format 2) bundle."""
    root = bundle_root(path)
    version = bundle_format(root)
    if version == 1:
        raise BundleError(
            f"model bundle {root} predicts the paper's pooled targets (uts_mpa, "
            "elongation_pct, tension and compression mixed); screening needs a "
            "condition-aware bundle: hea-export --conditions RUN (docs/inference.md)"
        )
    bundle = load_task_bundle(root, sha256)
    training = TrainingSet.from_json(bundle.training_set_text())
    mean, std = {}, {}
    for name, ts in training.targets.items():
        mean[name] = float(np.mean(ts.values))
        std[name] = float(np.std(ts.values)) or 1.0
    return ModelInfo(
        root,
        bundle.sha256,
        Reference(mean, std),
        tuple(t.task.name for t in bundle.tasks),
        {t.task.name: t.coverage for t in bundle.tasks},
    )


def check_ranking(ranking: Ranking, model: ModelInfo) -> None:
    """Refuse, before any work, a ranking on tasks the bundle lacks or at a condition their
    training data do not cover (a silent extrapolation)."""
    missing = [t for t in ranking.tasks if t not in model.tasks]
    if missing:
        raise BundleError(
            f"model bundle {model.path} has no model for {', '.join(missing)}; it predicts "
            f"{', '.join(model.tasks)}"
        )
    for name in ranking.tasks:
        model.coverage[name].check(name, ranking.condition)


def check_inputs(candidates: Candidates, model: ModelInfo) -> None:
    """Reject, before any work, elements without property data and element pairs without a
    mixing enthalpy (the features of such alloys cannot be computed)."""
    check_elements(candidates.elements)
    dh = mixing_matrix(candidates.elements)
    unknown = [
        f"{a}-{b}"
        for i, a in enumerate(candidates.elements)
        for j, b in enumerate(candidates.elements)
        if i < j and np.isnan(dh[i, j])
    ]
    if unknown:
        raise ElementDataError(
            f"no mixing enthalpy for {', '.join(unknown)} in Takeuchi & Inoue (2005), so h_mix "
            "cannot be computed: drop one element of each pair from the palette"
        )


def guard_size(candidates: Candidates, confirmed: bool) -> None:
    """Refuse a space above :data:`LARGE_SPACE` unless sampled or ``confirmed``."""
    if isinstance(candidates, SampledSpace) or confirmed or candidates.size <= LARGE_SPACE:
        return
    raise SpaceError(
        f"the space holds {candidates.size:,} candidates (more than {LARGE_SPACE:,}): "
        "screen a random sample with --sample N, narrow it (--max-elements, --step, bounds), "
        "or confirm the full run with --yes (see --dry-run for an estimated time)"
    )


def plan_partitions(
    size: int, batch_size: int, partition_size: int | None, workers: int
) -> list[tuple[int, int]]:
    """``(lo, hi)`` partitions whose edges are multiples of ``batch_size``.

    ``partition_size`` is rounded up to a multiple of the batch; by default about eight
    partitions per worker, between 1 and 64 batches each.
    """
    step = partition_step(size, batch_size, partition_size, workers)
    return [(lo, min(lo + step, size)) for lo in range(0, size, step)]


def partition_step(size: int, batch_size: int, partition_size: int | None, workers: int) -> int:
    """Candidates per partition of :func:`plan_partitions`, without listing the partitions."""
    if batch_size < 1:
        raise UserInputError(f"batch size {batch_size}: need at least 1")
    if partition_size is None:
        batches = -(-size // (batch_size * max(1, workers) * 8))
        partition_size = batch_size * min(64, max(1, batches))
    elif partition_size < 1:
        raise UserInputError(f"partition size {partition_size}: need at least 1")
    return -(-partition_size // batch_size) * batch_size


@dataclass(frozen=True)
class Stage:
    """The first stage of a two-stage screen: each ranked task's first ``folds`` fold models
    (``None``: all) score every candidate, without phase or applicability, and a partition
    keeps its best ``keep`` rows and its front; :func:`rescore` runs the full ensemble on what
    the merged partitions kept."""

    folds: int | None
    keep: int


def first_stage(
    ranking: Ranking, size: int, exact: bool = False, shortlist: int | None = None
) -> Stage:
    """The first stage of a screen of ``size`` candidates: fold 0 alone keeping ``shortlist``
    rows (default :data:`SHORTLIST_FACTOR` x top, at least :data:`MIN_SHORTLIST`); every fold
    keeping the top with ``exact`` or where the shortlist would hold the whole space."""
    default = max(SHORTLIST_FACTOR * ranking.top, MIN_SHORTLIST)
    keep = default if shortlist is None else shortlist
    if keep < ranking.top:
        raise UserInputError(f"shortlist {keep}: need at least --top ({ranking.top}) rows")
    if exact or keep >= size:
        return Stage(None, ranking.top)
    return Stage(CHEAP_FOLDS, keep)


def screen_partition(
    candidates: Candidates,
    lo: int,
    hi: int,
    model: ModelRef,
    ranking: Ranking,
    reference: Reference,
    stage: Stage | None = None,
) -> Partial:
    """Enumerate, featurize, predict and score candidates ``lo..hi``; keep top-k and front.

    Without ``stage``, every fold of every predicted task with applicability (the rows are
    final); with it, the first stage of :class:`Stage`.
    """
    predictor = predictor_for(model)
    tasks = predicted_tasks(ranking, predictor.tasks) if stage is None else ranking.tasks
    folds, keep = (None, ranking.top) if stage is None else (stage.folds, stage.keep)
    final = stage is None
    seconds = {"enumerate": 0.0, "featurize": 0.0, "predict": 0.0, "rank": 0.0}
    kept: Partial | None = None
    for start in range(lo, hi, model.batch_size):
        t0 = time.perf_counter()
        table = candidates.table(start, min(start + model.batch_size, hi))
        t1 = time.perf_counter()
        features = featurize(table)
        t2 = time.perf_counter()
        predicted = predictor.predict(
            table, ranking.condition, tasks, features, folds=folds, applicability=final
        )
        t3 = time.perf_counter()
        part = Partial.of(score(predicted, ranking, reference), keep, len(table))
        kept = part if kept is None else kept.merge(part, keep)
        t4 = time.perf_counter()
        for name, dt in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            seconds[name] += dt
    assert kept is not None, "empty partition"
    return Partial(kept.top, kept.front, kept.candidates, seconds)


#: Dask's nannies give each worker ``MALLOC_TRIM_THRESHOLD_=65536``. Setting it also turns
#: off glibc's adaptive mmap threshold, so every array of 128 KiB or more that a batch makes
#: (features, tokens, ONNX Runtime tensors) is a fresh mmap, page-faulted in and unmapped
#: again: two local workers spent 30 s of a 45 s screen in the kernel and ran at 113-138
#: candidates/s, against 4-6 s and 205-220/s without it (6,000 candidates, 2026-11-25).
#: Local clusters are started without it; see docs/screening.md for external clusters.
NANNY_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def quiet_distributed() -> None:
    """Importing distributed sets its logger to INFO: keep that chatter for when this
    package's own logger shows INFO (``hea-screen --verbose``)."""
    verbose = logging.getLogger("hea_screen").isEnabledFor(logging.INFO)
    logging.getLogger("distributed").setLevel(logging.INFO if verbose else logging.WARNING)


@contextmanager
def executor(
    n_partitions: int, workers: int, scheduler: str | None, processes: bool = True
) -> Iterator[tuple[Client | None, int | None]]:
    """Yield ``(client or None, ONNX Runtime threads per task)`` for the run (see module doc)."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        from distributed import Client

        quiet_distributed()
        try:
            client = Client(address, timeout="10s")
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise UserInputError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None
        with client:
            yield client, 1
        return
    if workers <= 1 or n_partitions <= 1:
        yield None, None
        return
    from distributed import Client, LocalCluster

    quiet_distributed()
    n = min(workers, n_partitions)
    threads = max(1, (os.cpu_count() or 1) // n)
    # No dashboard; the scheduler's HTTP server (health, metrics) takes a free local port,
    # since its default 8787 may be taken ("Port 8787 is already in use" on stderr).
    with (
        dask.config.set({NANNY_TRIM: None}),
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=processes,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, threads


def run_partitions(
    candidates: Candidates,
    parts: Sequence[tuple[int, int, int]],
    model: ModelRef,
    ranking: Ranking,
    reference: Reference,
    on_result: Callable[[int, Partial], None],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    processes: bool = True,
    progress: bool = False,
    stage: Stage | None = None,
) -> None:
    """Run ``(id, lo, hi)`` partitions on Dask, calling ``on_result(id, partial)`` as each ends
    (``stage``: see :func:`screen_partition`).

    At most two partitions per worker are queued at a time, so neither the scheduler nor
    the driver ever holds more than a few partials.
    """
    bar = tqdm(
        total=sum(hi - lo for _, lo, hi in parts),
        unit="cand",
        unit_scale=True,
        disable=not progress,
        file=sys.stderr,
        desc="screening",
    )
    with bar, executor(len(parts), workers, scheduler, processes) as (client, threads):
        ref = ModelRef(
            model.path,
            model.device,
            model.precision,
            model.batch_size,
            model.threads if model.threads is not None else threads,
            model.sha256,
        )
        if client is None:
            for pid, lo, hi in parts:
                task = dask.delayed(screen_partition, pure=False, traverse=False)
                partial = task(candidates, lo, hi, ref, ranking, reference, stage).compute(
                    scheduler="synchronous"
                )
                on_result(pid, partial)
                bar.update(hi - lo)
            return
        _run_on_client(
            client, candidates, parts, ref, ranking, reference, on_result, bar, stage
        )


def _run_on_client(
    client: Client,
    candidates: Candidates,
    parts: Sequence[tuple[int, int, int]],
    ref: ModelRef,
    ranking: Ranking,
    reference: Reference,
    on_result: Callable[[int, Partial], None],
    bar: tqdm,
    stage: Stage | None = None,
) -> None:
    """Keep two partitions per worker in flight; hand each partial to ``on_result``."""
    from distributed import wait

    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    [shared] = client.scatter([candidates], broadcast=True)
    queue = list(reversed(parts))
    running: dict[Future, tuple[int, int, int]] = {}

    def submit() -> None:
        pid, lo, hi = queue.pop()
        fut = client.submit(
            screen_partition, shared, lo, hi, ref, ranking, reference, stage, pure=False
        )
        running[fut] = (pid, lo, hi)

    try:
        while queue and len(running) < 2 * n_workers:
            submit()
        while running:
            done, _ = wait(list(running), return_when="FIRST_COMPLETED")
            for fut in done:
                pid, lo, hi = running.pop(fut)
                partial = fut.result()
                fut.release()
                on_result(pid, partial)
                bar.update(hi - lo)
                if queue:
                    submit()
    finally:
        if running:
            client.cancel(list(running))


@dataclass(frozen=True)
class Outcome:
    """A finished screen: the ranked table and what it took."""

    table: pl.DataFrame
    merged: Partial
    partitions: int
    wall_seconds: float


def screen(
    candidates: Candidates,
    ranking: Ranking,
    model: ModelRef,
    reference: Reference,
    *,
    ingot_mass_g: float,
    partition_size: int | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    processes: bool = True,
    progress: bool = False,
    exact: bool = False,
    shortlist: int | None = None,
) -> Outcome:
    """Screen every candidate and return the ranked table (see :func:`result_table`).

    Two stages (:func:`first_stage`): a cheap one scores every candidate, the full ensemble
    re-scores the shortlist it keeps (:func:`rescore`); ``exact`` runs every fold model on
    every candidate.
    """
    t0 = time.perf_counter()
    model = pinned(model)
    stage = first_stage(ranking, candidates.size, exact, shortlist)
    parts = plan_partitions(candidates.size, model.batch_size, partition_size, workers)
    merged: Partial | None = None

    def fold(_: int, partial: Partial) -> None:
        nonlocal merged
        merged = partial if merged is None else merged.merge(partial, stage.keep)

    run_partitions(
        candidates,
        [(i, lo, hi) for i, (lo, hi) in enumerate(parts)],
        model,
        ranking,
        reference,
        fold,
        workers=workers,
        scheduler=scheduler,
        processes=processes,
        progress=progress,
        stage=stage,
    )
    if merged is None:
        raise SpaceError("empty space: nothing to screen")
    final = rescore(merged, model, ranking, reference, candidates.elements)
    table = result_table(final, ranking, ingot_mass_g, model.sha256)
    return Outcome(table, final, len(parts), time.perf_counter() - t0)


def rescore(
    shortlist: Partial,
    model: ModelRef,
    ranking: Ranking,
    reference: Reference,
    palette: Sequence[str],
) -> Partial:
    """The second stage: every fold model of the ranked tasks and phase, with applicability,
    on the rows a first stage kept (its top and front), reduced to the top and front.

    The rows are featurized over the space's ``palette``, as in the first stage, so a
    candidate gets the same features (to the last bit) in both."""
    t0 = time.perf_counter()
    texts = pl.concat([shortlist.top["composition"], shortlist.front["composition"]]).unique(
        maintain_order=True
    )
    predictor = predictor_for(model)
    parsed = CompositionTable.from_compositions(texts.to_list())
    micro = np.zeros((len(parsed), len(palette)), dtype=np.int32)
    micro[:, [list(palette).index(el) for el in parsed.elements]] = parsed.micro
    table = CompositionTable(tuple(palette), micro)
    tasks = predicted_tasks(ranking, predictor.tasks)
    predicted = predictor.predict(table, ranking.condition, tasks)
    seconds = dict(shortlist.seconds)
    seconds["rescore"] = seconds.get("rescore", 0.0) + time.perf_counter() - t0
    scored = score(predicted, ranking, reference)
    return Partial.of(scored, ranking.top, shortlist.candidates, seconds)


def pinned(model: ModelRef) -> ModelRef:
    """``model`` pinned to the full SHA-256 of its bundle (verified against a given prefix)."""
    if model.sha256 is not None and len(model.sha256) == 64 and model.sha256.islower():
        return model
    return replace(model, sha256=inspect_model(model.path, model.sha256).sha256)


def result_table(
    merged: Partial, ranking: Ranking, ingot_mass_g: float, model_sha256: str | None = None
) -> pl.DataFrame:
    """Ranked rows with lab columns and the condition, in :func:`result_columns` order (then
    any others); ``model_sha256`` (the bundle's identity) fills the ``model_sha256`` column."""
    return decorate(final_ranking(merged, ranking), ranking, ingot_mass_g, model_sha256)


def decorate(
    ranked: pl.DataFrame, ranking: Ranking, ingot_mass_g: float, model_sha256: str | None
) -> pl.DataFrame:
    """Phase flags, lab columns, the condition and the model identity added to ranked rows,
    in :func:`result_columns` order (then any others): what every ranked output holds."""
    table = lab_columns(phase_flags(ranked), ingot_mass_g)
    condition = ranking.condition.describe()
    table = table.with_columns(
        *(pl.lit(condition[c]).alias(c) for c in CONDITION_COLUMNS),
    )
    if model_sha256 is not None:
        table = table.with_columns(pl.lit(model_sha256, dtype=pl.Utf8).alias("model_sha256"))
    first = [c for c in result_columns(ranking) if c in table.columns]
    return table.select(*first, pl.exclude(first))


@dataclass(frozen=True)
class Estimate:
    """Dry-run figures: candidates, partitions, measured rate and estimated time."""

    candidates: int
    partitions: int
    partition_size: int
    probe_candidates: int
    load_seconds: float
    candidates_per_second: float
    estimated_seconds: float


def estimate(
    candidates: Candidates,
    ranking: Ranking,
    model: ModelRef,
    reference: Reference,
    *,
    partition_size: int | None,
    workers: int,
    probe: int = 256,
) -> Estimate:
    """Time a short probe (a sample of up to ``probe`` candidates, in this process, twice).

    The estimate is model load plus ``candidates / rate``: the probe runs with every core,
    which is what local workers share between them.
    """
    step = partition_step(candidates.size, model.batch_size, partition_size, workers)
    space = candidates.space if isinstance(candidates, SampledSpace) else candidates
    sample = SampledSpace(space, min(probe, candidates.size), seed=0)
    t0 = time.perf_counter()
    predictor_for(model)
    load = time.perf_counter() - t0
    # The first pass warms up: ONNX Runtime plans each new input shape on first sight.
    screen_partition(sample, 0, sample.size, model, ranking, reference)
    t1 = time.perf_counter()
    screen_partition(sample, 0, sample.size, model, ranking, reference)
    rate = sample.size / max(time.perf_counter() - t1, 1e-9)
    size = candidates.size
    parts = -(-size // step)
    return Estimate(size, parts, min(step, size), sample.size, load, rate, load + size / rate)
