"""Resumable batch screening: one spec, one output directory, any number of runs.

Layout of ``OUT``::

    OUT/
      manifest.json                 identity of the job + one entry per finished partition
      partitions/part-000012.parquet  the partial result of partition 12 (top-k + front rows)
      ranked.csv, ranked.parquet    the final ranked table (when every partition is done)
      summary.json                  counts, model and space hashes, the timings of the last run
                                    that screened partitions and a history of every run

A partition's file is written atomically, then its entry (rows, SHA-256, timings) is added
to the manifest, which is itself rewritten atomically. A run that stops for any reason
(crash, kill, ``--max-partitions``) leaves only whole files; the next run with the same
spec and model skips every partition whose file matches its manifest entry and computes
the rest. Because each partition's partial result is stored, the final table is merged
from the files and is identical to that of an uninterrupted run.

The job identity (candidates and ranking fingerprint, model SHA-256, batch and partition
sizes) is recorded in the manifest; resuming with anything different is refused unless
``restart`` is asked for, which deletes the previous run's files (only those).
"""

from __future__ import annotations

import fcntl
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import polars as pl

from hea_screen import __version__
from hea_screen.datasets.sources import sha256_file
from hea_screen.errors import UserInputError
from hea_screen.output import read_json, write_json, write_table
from hea_screen.screening.cluster import run_partitions
from hea_screen.screening.engine import guard_size, rescore, result_table
from hea_screen.screening.model_ref import ModelRef, check_inputs, check_ranking, inspect_model
from hea_screen.screening.partition import Stage, first_stage, plan_partitions
from hea_screen.screening.ranking import Partial, merge_all
from hea_screen.screening.spec import ScreenSpec

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
LOCK = ".lock"
PARTS = "partitions"
RESULTS = ("ranked.csv", "ranked.parquet")

#: Candidates per partition when the spec gives none (independent of the worker count,
#: so that a job resumes with the same partitions on any machine): the single full stage's
#: (``--exact``; the size of earlier versions' jobs, which resume with it) and the first
#: stage's, whose partitions store up to a shortlist (10,000 rows by default) each, so
#: larger partitions write less.
DEFAULT_PARTITION = 8192
TWO_STAGE_PARTITION = 65_536


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def part_file(pid: int) -> str:
    """Relative path of partition ``pid``'s file."""
    return f"{PARTS}/part-{pid:06d}.parquet"


def _to_frame(partial: Partial) -> pl.DataFrame:
    """Top-k and front rows of a partial in one frame, flagged ``in_top`` / ``in_front``."""
    front = partial.front["composition"]
    top = partial.top["composition"]
    return pl.concat(
        [
            partial.top.with_columns(
                pl.lit(True).alias("in_top"),
                pl.col("composition").is_in(front.implode()).alias("in_front"),
            ),
            partial.front.filter(~pl.col("composition").is_in(top.implode())).with_columns(
                pl.lit(False).alias("in_top"), pl.lit(True).alias("in_front")
            ),
        ],
        how="vertical_relaxed",
    )


def _from_frame(frame: pl.DataFrame, candidates: int) -> Partial:
    rows = frame.drop("in_top", "in_front")
    return Partial(rows.filter(frame["in_top"]), rows.filter(frame["in_front"]), candidates, {})


#: Keys of a partition's manifest entry and the types each must have.
ENTRY_TYPES: dict[str, type] = {
    "lo": int,
    "hi": int,
    "file": str,
    "sha256": str,
    "candidates": int,
    "seconds": dict,
}


def _entry_problem(key: object, entry: object) -> str | None:
    """What is wrong with one ``partitions`` entry of a manifest (``None``: nothing)."""
    if not isinstance(key, str) or not key.isdecimal() or not key.isascii():
        return "the key is not a partition number"
    if not isinstance(entry, dict):
        return f"expected a mapping with {', '.join(ENTRY_TYPES)}, got {type(entry).__name__}"
    for name, kind in ENTRY_TYPES.items():
        value = entry.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{name!r} is missing or not a {kind.__name__}"
    if not all(isinstance(v, (int, float)) for v in entry["seconds"].values()):
        return "'seconds' holds a value that is not a number"
    return None


class Job:
    """A batch job in ``out_dir``: its identity, manifest and partition files."""

    def __init__(self, out_dir: str | Path, identity: dict[str, object]):
        self.out = Path(out_dir)
        self.identity = identity
        self.entries: dict[str, dict[str, object]] = {}

    @property
    def manifest_path(self) -> Path:
        return self.out / MANIFEST

    @contextmanager
    def locked(self, restart: bool) -> Iterator[Job]:
        """Hold the directory's lock (one run at a time) with the job opened (:meth:`open`)."""
        if self.out.exists() and not self.out.is_dir():
            raise UserInputError(f"--out {str(self.out)!r} exists and is not a directory")
        parts = self.out / PARTS
        if parts.is_symlink() or (parts.exists() and not parts.is_dir()):
            raise UserInputError(
                f"{str(parts)!r} is not a plain directory (a symbolic link or a file): a job "
                "writes and deletes partition files only inside its own directory; move it aside"
            )
        parts.mkdir(parents=True, exist_ok=True)
        with open(self.out / LOCK, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserInputError(
                    f"another batch run is working in {str(self.out)!r}; wait for it to end "
                    "or choose another --out"
                ) from None
            self.open(restart)
            yield self

    def open(self, restart: bool) -> None:
        """Load and check the manifest of an earlier run, or start a new one."""
        for stale in (self.out / PARTS).glob(".*.tmp"):  # writes cut short by a kill
            stale.unlink()
        if not self.manifest_path.exists():
            self._save()
            return
        try:
            manifest = read_json(self.manifest_path, "job manifest")
            if not isinstance(manifest, dict) or not {"identity", "partitions"} <= set(manifest):
                raise UserInputError(
                    f"job manifest {str(self.manifest_path)!r} lacks 'identity' or 'partitions'"
                )
        except UserInputError as exc:
            if not restart:
                raise UserInputError(
                    f"{exc}; move the directory aside, or pass --restart to discard the job"
                ) from None
            self._clear_unreadable()
            self._save()
            return
        old_identity, entries = manifest["identity"], manifest["partitions"]
        self._check_manifest(old_identity, entries)
        if old_identity != self.identity:
            if not restart:
                changed = sorted(
                    k for k in self.identity if old_identity.get(k) != self.identity.get(k)
                )
                raise UserInputError(
                    f"{str(self.out)!r} holds a job with a different {', '.join(changed)}: "
                    "resume it with the same spec and model, choose another --out, or pass "
                    "--restart to discard it"
                )
            self._clear(entries)
            entries = {}
        self.entries = dict(entries)
        self._save()

    def _check_manifest(self, identity: object, entries: object) -> None:
        """Refuse a manifest whose identity or partition entries are malformed, or whose
        files lie outside the job directory, before anything is read or deleted."""
        where = f"job manifest {str(self.manifest_path)!r}"
        for name, value in (("identity", identity), ("partitions", entries)):
            if not isinstance(value, dict):
                raise UserInputError(f"{where}: {name!r} is not a mapping; move the job aside")
        for key, entry in entries.items():
            problem = _entry_problem(key, entry) or self._outside(entry["file"])
            if problem:
                raise UserInputError(
                    f"{where}, partition entry {key!r}: {problem}; nothing was changed: "
                    "repair the manifest or move the directory aside"
                )

    def _outside(self, rel: str) -> str | None:
        """Why ``rel`` (a manifest's file) is unacceptable, or ``None`` if it names a file
        directly in the job's partitions folder (checked on the text, following no link)."""
        path = PurePosixPath(rel)
        if path.is_absolute() or len(path.parts) != 2 or path.parts[0] != PARTS:
            return f"file {rel!r} lies outside {str(self.out / PARTS)!r}"
        if path.name in (".", "..") or "\\" in rel:
            return f"file {rel!r} lies outside {str(self.out / PARTS)!r}"
        return None

    def _clear_unreadable(self) -> None:
        """``--restart`` over a manifest that cannot be read: remove what a job writes (the
        partition files by their names, results, summary), nothing else."""
        for path in (self.out / PARTS).glob("part-*.parquet"):
            if re.fullmatch(r"part-\d{6}\.parquet", path.name) and not path.is_dir():
                path.unlink()
        for name in (*RESULTS, SUMMARY):
            (self.out / name).unlink(missing_ok=True)
        log.info("restart: removed the files of an unreadable job manifest")

    def _clear(self, entries: dict[str, dict[str, object]]) -> None:
        for entry in entries.values():
            (self.out / str(entry["file"])).unlink(missing_ok=True)
        for name in (*RESULTS, SUMMARY):
            (self.out / name).unlink(missing_ok=True)
        log.info("restart: removed %d partition files of the previous job", len(entries))

    def _save(self) -> None:
        write_json(
            {"format": FORMAT, "identity": self.identity, "partitions": self.entries},
            self.manifest_path,
        )

    def finished(self) -> set[int]:
        """Partitions whose file exists and matches its manifest entry (others are redone)."""
        done = set()
        for key, entry in list(self.entries.items()):
            path = self.out / str(entry["file"])
            if path.is_file() and not path.is_symlink() and sha256_file(path) == entry["sha256"]:
                done.add(int(key))
            else:
                log.warning("partition %s: file missing or altered; it will be recomputed", key)
                del self.entries[key]
        return done

    def record(self, pid: int, lo: int, hi: int, partial: Partial) -> None:
        """Write a partition's file atomically, then its manifest entry."""
        rel = part_file(pid)
        path = write_table(_to_frame(partial), self.out / rel)
        self.entries[str(pid)] = {
            "lo": lo,
            "hi": hi,
            "file": rel,
            "sha256": sha256_file(path),
            "candidates": partial.candidates,
            "seconds": dict(partial.seconds),
            "finished_at": _now(),
        }
        self._save()

    def partials(self) -> Iterator[Partial]:
        """The stored partials, one file at a time, in partition order."""
        for key in sorted(self.entries, key=int):
            entry = self.entries[key]
            frame = pl.read_parquet(self.out / str(entry["file"]))
            yield _from_frame(frame, int(entry["candidates"]))  # type: ignore[arg-type]


def run_batch(
    spec: ScreenSpec,
    out_dir: str | Path,
    model: ModelRef,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    processes: bool = True,
    progress: bool = False,
    confirmed: bool = False,
    restart: bool = False,
    max_partitions: int | None = None,
    after_partition: Callable[[int, int, int], None] | None = None,
    spec_path: str | None = None,
    exact: bool = False,
    shortlist: int | None = None,
) -> dict[str, object]:
    """Run (or resume) the batch job of ``spec`` in ``out_dir``; return the run summary.

    Two stages, with the rule of the main command (:func:`first_stage`): each partition
    stores its first-stage shortlist (fold 0 of the ranked tasks), and once every partition
    is done the full ensemble re-scores the merged shortlist (:func:`rescore`), so the ranked
    table is the main command's. ``exact``, or a space no larger than the shortlist, runs
    the single full stage instead (every fold, phase and nearest training data on every
    candidate; partition files of earlier versions' jobs resume with it).

    ``max_partitions`` stops after that many partitions in this run (a time-boxed nightly
    slot); ``after_partition(pid, done, total)`` is called once a partition is durably
    recorded (the command line logs progress with it).
    """
    started, t0 = _now(), time.perf_counter()
    info = inspect_model(model.path, model.sha256, model.device, model.precision)
    model = replace(model, sha256=info.sha256)  # workers load this bundle or refuse
    candidates = spec.candidates()
    spec.space.check_nonempty()
    check_inputs(candidates, info)
    check_ranking(spec.ranking, info)
    if spec.sample is None:
        spec.space.check_indexable()
    guard_size(candidates, confirmed)
    if max_partitions is not None and max_partitions < 1:
        raise UserInputError(f"--max-partitions {max_partitions}: need at least 1")
    cheap = first_stage(spec.ranking, candidates.size, exact, shortlist)
    stage: Stage | None = cheap if cheap.folds is not None else None
    default_partition = DEFAULT_PARTITION if stage is None else TWO_STAGE_PARTITION
    parts = plan_partitions(
        candidates.size, model.batch_size, spec.partition_size or default_partition, 1
    )
    identity: dict[str, object] = {
        "spec": spec.fingerprint(),
        "space": candidates.fingerprint(),
        "model_sha256": info.sha256,
        "batch_size": model.batch_size,
        "partition_size": parts[0][1] - parts[0][0],
        "partitions": len(parts),
        "candidates": candidates.size,
    }
    if stage is not None:  # partitions hold first-stage shortlists, not final rows
        identity["first_stage"] = {"folds": stage.folds, "keep": stage.keep}
    with Job(out_dir, identity).locked(restart) as job:
        done_before = job.finished()
        pending = [(pid, lo, hi) for pid, (lo, hi) in enumerate(parts) if pid not in done_before]
        if max_partitions is not None:
            pending = pending[:max_partitions]
        log.info(
            "job %s: %d partitions, %d already done, %d to run now",
            spec.name,
            len(parts),
            len(done_before),
            len(pending),
        )

        ranges = {pid: (lo, hi) for pid, lo, hi in pending}

        def on_result(pid: int, partial: Partial) -> None:
            lo, hi = ranges[pid]
            job.record(pid, lo, hi, partial)
            if after_partition is not None:
                after_partition(pid, len(job.entries), len(parts))

        if pending:
            run_partitions(
                candidates,
                pending,
                model,
                spec.ranking,
                info.reference,
                on_result,
                workers=workers,
                scheduler=scheduler,
                processes=processes,
                progress=progress,
                stage=stage,
            )
        complete = len(job.entries) == len(parts)
        summary: dict[str, object] = {
            "status": "complete" if complete else "incomplete",
            "job": spec.name,
            "spec_file": spec_path,
            "spec_sha256": identity["spec"],
            "space_sha256": identity["space"],
            "space": candidates.describe(),
            "ranking": spec.ranking.describe(),
            "model": str(info.path),
            "model_sha256": info.sha256,
            "hea_screen_version": __version__,
            "candidates_total": candidates.size,
            "candidates_done": sum(int(e["candidates"]) for e in job.entries.values()),  # type: ignore[call-overload]
            "partitions_total": len(parts),
            "partitions_done": len(job.entries),
            "partitions_skipped": len(done_before),
            "partitions_this_run": len(pending),
            "workers": workers,
            "scheduler": scheduler,
            "first_stage": identity.get("first_stage"),
            "started_at": started,
        }
        rescored: dict[str, float] = {}  # seconds of the second stage, when it ran
        if complete:
            merged = merge_all(job.partials(), spec.ranking.top if stage is None else stage.keep)
            assert merged is not None
            if stage is not None:
                merged = rescore(merged, model, spec.ranking, info.reference, candidates.elements)
                rescored = dict(merged.seconds)
            table = result_table(merged, spec.ranking, spec.ingot_mass_g, info.sha256)
            for name in RESULTS:
                write_table(table, job.out / name)
            summary["results"] = list(RESULTS)
            summary["ranked_rows"] = table.height
            summary["pareto_front_size"] = merged.front.height
        stages: dict[str, float] = dict(rescored)
        for entry in job.entries.values():
            for step, s in entry["seconds"].items():  # type: ignore[union-attr]
                stages[step] = stages.get(step, 0.0) + s
        wall = time.perf_counter() - t0
        this_run = sum(hi - lo for _, lo, hi in pending)
        run = {
            "started_at": started,
            "finished_at": _now(),
            "partitions": len(pending),
            "candidates": this_run,
            "wall_seconds": round(wall, 3),
            "candidates_per_second": round(this_run / wall, 1) if this_run else None,
        }
        runs = [*_earlier_runs(job.out / SUMMARY), run]
        worked = next((r for r in reversed(runs) if r["candidates"]), run)
        summary["started_at"] = worked.get("started_at")
        summary["seconds"] = {
            "wall_this_run": worked.get("wall_seconds"),
            "work_by_stage_all_runs": {k: round(v, 3) for k, v in stages.items()},
        }
        summary["candidates_per_second_this_run"] = worked.get("candidates_per_second")
        summary["finished_at"] = worked.get("finished_at")
        summary["runs"] = runs
        write_json(summary, job.out / SUMMARY)
        return summary


def _earlier_runs(path: Path) -> list[dict[str, object]]:
    """The run history recorded in an earlier ``summary.json`` (empty if there is none)."""
    if not path.exists():
        return []
    try:
        old = read_json(path, "job summary")
    except UserInputError:
        return []
    runs = old.get("runs") if isinstance(old, dict) else None
    if not isinstance(runs, list):
        return []
    return [r for r in runs if isinstance(r, dict) and isinstance(r.get("candidates"), int)]
