"""The Dask engine with the real tiny bundle: same answer however the work is split."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from hea_screen.cli import main
from hea_screen.compositions.features import featurize
from hea_screen.conditions import Condition
from hea_screen.errors import BundleError, SpaceError, UserInputError
from hea_screen.screening.cluster import executor
from hea_screen.screening.engine import estimate, guard_size, result_columns, result_table, screen
from hea_screen.screening.model_ref import (
    ModelRef,
    check_ranking,
    inspect_model,
    model_loads,
    predicted_tasks,
    predictor_for,
)
from hea_screen.screening.partition import plan_partitions
from hea_screen.screening.ranking import Partial, Ranking, score
from hea_screen.screening.space import SampledSpace
from hea_screen.screening.spec import build_space, parse_elements

BATCH = 32


@pytest.fixture(scope="module")
def space():
    """Co-Cr-Fe-Ni on a 10 % grid, 3-4 elements, at most 50 % each: 145 candidates."""
    return build_space(parse_elements("Co,Cr,Fe,Ni"), step="0.1")


@pytest.fixture(scope="module")
def info(condition_bundle: Path):
    return inspect_model(condition_bundle)


@pytest.fixture(scope="module")
def model(condition_bundle: Path) -> ModelRef:
    return ModelRef(str(condition_bundle), device="cpu", batch_size=BATCH)


def run(space, model, info, ranking, **kwargs) -> pl.DataFrame:
    return screen(space, ranking, model, info.reference, ingot_mass_g=50.0, **kwargs).table


def test_partition_edges_are_batch_multiples():
    parts = plan_partitions(1000, 64, 100, workers=2)
    assert parts[0] == (0, 128) and parts[-1] == (896, 1000)
    assert all(lo % 64 == 0 for lo, _ in parts)
    assert plan_partitions(10**6, 512, None, workers=2)[0] == (0, 512 * 64)


def test_top_k_equals_sorting_every_prediction(space, model, info):
    """Oracle: predict the whole space batch by batch, score, sort everything."""
    ranking = Ranking("weighted", "safe", kappa=1.0, top=15)
    predictor = predictor_for(model)
    frames = []
    for lo in range(0, space.size, BATCH):
        table = space.table(lo, min(lo + BATCH, space.size))
        tasks = predicted_tasks(ranking, predictor.tasks)
        frames.append(predictor.predict(table, ranking.condition, tasks, featurize(table)))
    everything = score(pl.concat(frames), ranking, info.reference)
    assert everything.height == space.size == 145
    best = everything.sort(["score", "composition"], descending=[True, False]).head(15)
    ranked = run(space, model, info, ranking, partition_size=64, workers=1)
    assert ranked["composition"].to_list() == best["composition"].to_list()
    assert ranked["score"].to_list() == best["score"].to_list()
    assert ranked["rank"].to_list() == list(range(1, 16))
    assert ranked["uts_tension_mpa_std"].min() >= 0
    oracle = result_table(Partial.of(everything, 15, space.size), ranking, 50.0, info.sha256)
    assert ranked.equals(oracle)


def test_same_result_for_any_partitioning_and_worker_count(space, model, info):
    """Top-k and Pareto front (the ``pareto`` flags) both survive any split."""
    ranking = Ranking("weighted", "explore", kappa=0.5, top=10)
    one = run(space, model, info, ranking, partition_size=space.size, workers=1)
    small = run(space, model, info, ranking, partition_size=BATCH, workers=1)
    threads = run(space, model, info, ranking, partition_size=96, workers=2, processes=False)
    assert one.equals(small) and one.equals(threads)
    assert one["pareto"].any()


def test_existing_cluster_runs_partitions_and_loads_model_once_per_worker(space, model, info):
    from distributed import Client, LocalCluster

    ranking = Ranking("weighted", top=10)
    local = run(space, model, info, ranking, partition_size=BATCH, workers=1)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        remote = run(
            space, model, info, ranking, partition_size=BATCH, scheduler=cluster.scheduler_address
        )
        loads = client.run(model_loads)
    assert remote.equals(local)  # other processes, other ONNX Runtime thread counts
    assert len(loads) == 2
    counts = [n for per_worker in loads.values() for n in per_worker.values()]
    assert counts and all(n == 1 for n in counts)  # 8 partitions, one load per worker
    assert sum(len(per_worker) for per_worker in loads.values()) <= 2


def _worker_environment() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}


def test_local_workers_keep_glibc_adaptive_mmap_threshold(monkeypatch):
    """Dask's default MALLOC_TRIM_THRESHOLD_ made local workers spend most time in the kernel."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with executor(n_partitions=4, workers=2, scheduler=None) as (client, threads):
        assert client is not None and threads == max(1, (os.cpu_count() or 1) // 2)
        envs = client.run(_worker_environment)
    assert len(envs) == 2
    expected = {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}  # the rest stays
    assert all(env == expected for env in envs.values())


def test_sampled_space_screens_the_sample(space, model, info):
    sample = SampledSpace(space, 50, seed=1)
    ranking = Ranking("uts", top=50)
    ranked = run(sample, model, info, ranking, partition_size=BATCH, workers=1)
    texts = set(sample.table(0, 50).canonical_texts())
    assert ranked.height == 50 and set(ranked["composition"]) == texts


def test_rankings_the_model_cannot_answer_are_refused(info):
    """A task the bundle lacks, or a condition outside its training data, is refused before
    any work instead of a silent extrapolation."""
    check_ranking(Ranking(), info)
    with pytest.raises(UserInputError, match="1500 °C outside"):
        check_ranking(Ranking(condition=Condition.of("tension", 1500, "cast")), info)
    without = replace(info, tasks=tuple(t for t in info.tasks if t != "uts_tension_mpa"))
    with pytest.raises(BundleError, match="no model for uts_tension_mpa"):
        check_ranking(Ranking(), without)


def test_huge_space_needs_sample_or_confirmation():
    huge = build_space(parse_elements("Al,Co,Cr,Cu,Fe,Mn,Ni,Ti"), step="0.01", max_fraction="1")
    assert huge.size > 10**6
    with pytest.raises(SpaceError, match="--sample N"):
        guard_size(huge, confirmed=False)
    guard_size(huge, confirmed=True)
    guard_size(SampledSpace(huge, 1000), confirmed=False)


def test_dry_run_estimate_probes_without_screening(space, model, info):
    est = estimate(space, Ranking(), model, info.reference, partition_size=64, workers=2, probe=64)
    assert est.candidates == 145 and est.partitions == 3 and est.partition_size == 64
    assert est.probe_candidates == 64 and 0 < est.rates[0] <= est.rates[1]
    low, high = est.seconds
    assert 145 / est.rates[1] <= low <= high and high >= 145 / est.rates[0]
    assert est.assumes.startswith("every fold model on all 145 candidates; 2 worker(s)")
    # a space above the shortlist: the estimate times the run's two stages, as the run does
    two = estimate(space, Ranking(top=5), model, info.reference, partition_size=64, workers=1,
                   probe=64, shortlist=50)
    assert two.assumes.startswith("fold 0 only on all 145 candidates, the full ensemble on the "
                                  "50-row shortlist")


def manifest_sha256(bundle: Path) -> str:
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()


def test_outputs_carry_the_bundle_identity_and_per_target_distances(
    space, model, info, condition_bundle
):
    digest = manifest_sha256(condition_bundle)
    assert info.sha256 == digest
    ranked = run(space, model, info, Ranking(top=5), workers=1)
    assert ranked["model_sha256"].to_list() == [digest] * 5
    for target in ("uts_tension_mpa", "elongation_tension_pct"):
        assert f"{target}_nearest_distance" in result_columns(Ranking())
        assert ranked[f"{target}_nearest_distance"].is_between(0, 2).all()
    assert not [c for c in result_columns(Ranking()) if c.startswith("nearest_train")]


def test_workers_load_only_the_pinned_bundle(space, model, info, condition_bundle):
    digest = manifest_sha256(condition_bundle)
    other = "0" * 64
    with pytest.raises(BundleError, match=f"SHA-256 {digest}, not the pinned {other}"):
        predictor_for(replace(model, sha256=other))
    with pytest.raises(BundleError, match=f"not the pinned {other}"):
        run(space, replace(model, sha256=other), info, Ranking(top=5), workers=1)
    ranked = run(space, replace(model, sha256=digest[:12]), info, Ranking(top=5), workers=1)
    assert ranked["model_sha256"][0] == digest


def test_hea_screen_prints_and_pins_the_bundle_identity(
    capsys, condition_bundle, tmp_path, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "200")
    digest = manifest_sha256(condition_bundle)
    small = ["--elements", "Co,Cr,Fe,Ni", "--step", "0.1", "--workers", "1", "--quiet"]
    small += ["--model", str(condition_bundle), "--top", "3"]
    assert main([*small, "--model-sha256", digest[:12]]) == 0
    out, err = capsys.readouterr()
    assert f"model: {condition_bundle} (sha256 {digest})" in err
    assert out.count("nearest datum") == 2 and " at 0." in out  # per-task distances
    assert main([*small, "--model-sha256", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and digest in err and "0" * 64 in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        main([*small, "--model-sha256", "abc"])
    assert exit_.value.code == 2
    assert "'abc' is not a SHA-256" in capsys.readouterr().err
    spec = tmp_path / "small.yaml"
    spec.write_text("name: small\nspace: {elements: [Co, Cr, Fe, Ni], step: 0.1}\n")
    job = ["batch", str(spec), "--out", str(tmp_path / "job"), "--model", str(condition_bundle)]
    job += ["--workers", "1", "--quiet"]
    assert main([*job, "--model-sha256", "f" * 12]) == 2
    assert f"{digest}, not the pinned {'f' * 12}" in capsys.readouterr().err
    assert main([*job, "--model-sha256", digest]) == 0
    assert f"model sha256 {digest}" in capsys.readouterr().out
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    job_manifest = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert summary["model_sha256"] == digest
    assert json.dumps(job_manifest).count(digest) >= 1
    ranked = pl.read_csv(tmp_path / "job" / "ranked.csv")
    assert set(ranked["model_sha256"]) == {digest}
