"""Batch jobs: interrupted and resumed runs give the uninterrupted result, no duplicates."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from hea_screen.errors import UserInputError
from hea_screen.screening.engine import screen
from hea_screen.screening.jobs import MANIFEST, SUMMARY, part_file, run_batch
from hea_screen.screening.model_ref import ModelRef, inspect_model
from hea_screen.screening.ranking import Ranking
from hea_screen.screening.spec import ScreenSpec, build_space, parse_elements

BATCH = 32


@pytest.fixture(scope="module")
def spec() -> ScreenSpec:
    space = build_space(parse_elements("Co,Cr,Fe,Ni"), step="0.1")  # 145 candidates
    ranking = Ranking("weighted", "safe", top=12)
    return ScreenSpec("test", space, ranking, partition_size=BATCH, ingot_mass_g=25.0)


@pytest.fixture(scope="module")
def model(condition_bundle: Path) -> ModelRef:
    return ModelRef(str(condition_bundle), device="cpu", batch_size=BATCH)


@pytest.fixture(scope="module")
def uninterrupted(spec, model, tmp_path_factory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("full")
    summary = run_batch(spec, out, model, workers=1)
    assert summary["status"] == "complete" and summary["partitions_total"] == 5
    return pl.read_parquet(out / "ranked.parquet")


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def test_uninterrupted_job_matches_interactive_screen(
    spec, model, condition_bundle, uninterrupted, tmp_path
):
    info = inspect_model(condition_bundle)
    direct = screen(
        spec.candidates(), spec.ranking, model, info.reference, ingot_mass_g=25.0, partition_size=64
    ).table
    assert uninterrupted.equals(direct)
    assert uninterrupted.height == 12 and uninterrupted["composition"].is_unique().all()


def test_stop_after_some_partitions_then_resume(spec, model, uninterrupted, tmp_path):
    first = run_batch(spec, tmp_path, model, workers=1, max_partitions=2)
    assert first["status"] == "incomplete" and first["partitions_done"] == 2
    assert not (tmp_path / "ranked.csv").exists()
    second = run_batch(spec, tmp_path, model, workers=1)
    assert second["status"] == "complete"
    assert second["partitions_skipped"] == 2 and second["partitions_this_run"] == 3
    assert second["candidates_done"] == second["candidates_total"] == 145
    assert pl.read_parquet(tmp_path / "ranked.parquet").equals(uninterrupted)
    csv = pl.read_csv(tmp_path / "ranked.csv")
    assert csv["composition"].to_list() == uninterrupted["composition"].to_list()
    files = sorted(p.name for p in (tmp_path / "partitions").iterdir())
    assert files == [Path(part_file(i)).name for i in range(5)]  # no duplicates, no temp files
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert (
        summary["model_sha256"]
        and summary["space_sha256"]
        and summary["seconds"]["wall_this_run"] > 0
    )
    third = run_batch(spec, tmp_path, model, workers=1)  # nothing left: merge only
    assert third["partitions_this_run"] == 0 and third["partitions_skipped"] == 5


class Crash(RuntimeError):
    pass


def crash_after(n: int, seen: list[int]):
    """An ``after_partition`` hook that records partitions and raises after the n-th."""

    def hook(pid: int, done: int, total: int) -> None:
        seen.append(pid)
        if len(seen) == n:
            raise Crash(f"simulated crash after {n} partitions")

    return hook


def test_crash_mid_run_on_dask_workers_then_resume(spec, model, uninterrupted, tmp_path):
    seen: list[int] = []
    crash_after_two = crash_after(2, seen)
    with pytest.raises(Crash):
        run_batch(
            spec, tmp_path, model, workers=2, processes=False, after_partition=crash_after_two
        )
    assert sorted(int(k) for k in manifest(tmp_path)["partitions"]) == sorted(seen)
    resumed = run_batch(spec, tmp_path, model, workers=2, processes=False)
    assert resumed["partitions_skipped"] == 2 and resumed["partitions_this_run"] == 3
    assert pl.read_parquet(tmp_path / "ranked.parquet").equals(uninterrupted)


def test_damaged_or_unrecorded_partitions_are_recomputed(spec, model, uninterrupted, tmp_path):
    run_batch(spec, tmp_path, model, workers=1, max_partitions=3)
    (tmp_path / part_file(0)).write_bytes(b"not parquet")  # altered after it was recorded
    data = manifest(tmp_path)
    del data["partitions"]["1"]  # crash between writing the file and recording it
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    stale = tmp_path / "partitions" / ".part-000004.parquet.x.tmp"
    stale.write_bytes(b"")  # a write cut short by a kill
    resumed = run_batch(spec, tmp_path, model, workers=1)
    assert not stale.exists()
    assert resumed["partitions_skipped"] == 1 and resumed["partitions_this_run"] == 4
    assert pl.read_parquet(tmp_path / "ranked.parquet").equals(uninterrupted)


def test_resuming_with_another_spec_is_refused_unless_restarted(spec, model, tmp_path):
    run_batch(spec, tmp_path, model, workers=1, max_partitions=1)
    other = replace(spec, ranking=Ranking("uts", top=12))
    with pytest.raises(UserInputError, match="different spec"):
        run_batch(other, tmp_path, model, workers=1)
    done = run_batch(other, tmp_path, model, workers=1, restart=True)
    assert done["status"] == "complete" and done["partitions_skipped"] == 0


def test_one_run_at_a_time_per_directory(spec, model, tmp_path):
    import fcntl

    run_batch(spec, tmp_path, model, workers=1, max_partitions=1)
    with open(tmp_path / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # e.g. last night's run still going
        with pytest.raises(UserInputError, match="another batch run is working"):
            run_batch(spec, tmp_path, model, workers=1)
    assert run_batch(spec, tmp_path, model, workers=1)["status"] == "complete"


# ------------------------------------------------------------------ two stages
SHORTLIST = 40  # of 145: the first stage keeps 40 per partition, the re-score reads the best


@pytest.fixture(scope="module")
def two_stage(spec, model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_stage")
    summary = run_batch(spec, out, model, workers=1, shortlist=SHORTLIST)
    assert summary["first_stage"] == {"folds": 1, "keep": SHORTLIST}
    assert summary["seconds"]["work_by_stage_all_runs"]["rescore"] > 0
    return out


def test_two_stage_job_is_the_main_commands_two_stage_screen(
    spec, model, condition_bundle, two_stage
):
    """Same fidelity rule as the main command: the same shortlist, the same re-scored rows."""
    info = inspect_model(condition_bundle)
    direct = screen(
        spec.candidates(),
        spec.ranking,
        model,
        info.reference,
        ingot_mass_g=25.0,
        shortlist=SHORTLIST,
    ).table
    assert pl.read_parquet(two_stage / "ranked.parquet").equals(direct)
    stored = pl.read_parquet(two_stage / part_file(0))
    assert "phase_fcc_prob" not in stored.columns  # partitions hold first-stage rows only


def test_two_stage_job_killed_and_resumed_is_byte_identical(spec, model, two_stage, tmp_path):
    with pytest.raises(Crash):
        run_batch(
            spec,
            tmp_path,
            model,
            workers=1,
            shortlist=SHORTLIST,
            after_partition=crash_after(2, []),
        )
    run_batch(spec, tmp_path, model, workers=1, shortlist=SHORTLIST, max_partitions=1)
    resumed = run_batch(spec, tmp_path, model, workers=1, shortlist=SHORTLIST)
    assert resumed["partitions_skipped"] == 3 and resumed["partitions_this_run"] == 2
    for name in ("ranked.csv", "ranked.parquet"):
        assert (tmp_path / name).read_bytes() == (two_stage / name).read_bytes()


def test_an_exact_job_does_not_resume_as_two_stage(spec, model, tmp_path):
    """Partition files of the single full stage and of a first stage differ: the identity
    holds the first stage, so switching is refused unless restarted."""
    run_batch(spec, tmp_path, model, workers=1, max_partitions=1, exact=True)
    with pytest.raises(UserInputError, match="different first_stage"):
        run_batch(spec, tmp_path, model, workers=1, shortlist=SHORTLIST)
    done = run_batch(spec, tmp_path, model, workers=1, exact=True)
    assert done["status"] == "complete" and done["first_stage"] is None


# ------------------------------------------------------------------ hardening
@pytest.fixture(scope="module")
def shipped() -> ModelRef:
    """The shipped default model: no training needed for the manifest and summary checks."""
    return ModelRef(None, device="cpu", batch_size=BATCH)


def test_restart_refuses_manifest_files_outside_the_job(spec, shipped, tmp_path):
    out = tmp_path / "job"
    run_batch(spec, out, shipped, workers=1, max_partitions=2)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    data = manifest(out)
    data["partitions"]["0"]["file"] = "../victim.txt"
    (out / MANIFEST).write_text(json.dumps(data))
    other = ModelRef(None, device="cpu", batch_size=2 * BATCH)  # a different job: restart clears
    with pytest.raises(UserInputError, match=r"partition entry '0': file '\.\./victim\.txt'"):
        run_batch(spec, out, other, workers=1, restart=True, max_partitions=1)
    assert victim.read_text() == "precious"
    assert (out / part_file(1)).exists()  # nothing of the old job was deleted either
    data["partitions"]["0"]["file"] = str(victim)  # absolute paths are refused alike
    (out / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(UserInputError, match="lies outside"):
        run_batch(spec, out, other, workers=1, restart=True, max_partitions=1)
    assert victim.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda parts: parts["0"].pop("sha256"), r"entry '0': 'sha256' is missing"),
        (lambda parts: parts.__setitem__("0", "part-000000.parquet"), "entry '0': expected a"),
        (lambda parts: parts.__setitem__("first", parts.pop("0")), "entry 'first': the key is"),
        (lambda parts: parts["0"].__setitem__("seconds", {"predict": "x"}), "not a number"),
    ],
)
def test_malformed_manifest_entries_are_refused_by_name(spec, shipped, tmp_path, damage, message):
    run_batch(spec, tmp_path, shipped, workers=1, max_partitions=1)
    data = manifest(tmp_path)
    damage(data["partitions"])
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=message) as info:
        run_batch(spec, tmp_path, shipped, workers=1)
    assert str(tmp_path / MANIFEST) in str(info.value)


def test_rerunning_a_finished_job_keeps_its_figures_and_adds_a_run(spec, shipped, tmp_path):
    done = run_batch(spec, tmp_path, shipped, workers=1)
    assert done["status"] == "complete" and len(done["runs"]) == 1
    first = json.loads((tmp_path / SUMMARY).read_text())
    again = run_batch(spec, tmp_path, shipped, workers=1)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert again["partitions_this_run"] == 0
    assert summary["seconds"]["wall_this_run"] == first["seconds"]["wall_this_run"]
    assert summary["candidates_per_second_this_run"] == first["candidates_per_second_this_run"]
    assert summary["candidates_per_second_this_run"] is not None
    assert [r["candidates"] for r in summary["runs"]] == [145, 0]
    assert summary["runs"][0] == first["runs"][0]
