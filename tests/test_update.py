"""hea-screen update: results validation, the measurement store, the new bundle version."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hea_screen import parse
from hea_screen.cli import main
from hea_screen.conditions import Condition
from hea_screen.errors import UserInputError
from hea_screen.inference.bundle import load_task_bundle
from hea_screen.inference.bundle_files import default_bundle_path
from hea_screen.inference.intervals import conformal_quantile
from hea_screen.inference.versions import models_dir, next_version, resolve_model
from hea_screen.planning.store import MeasurementStore, read_results
from hea_screen.planning.update import _condition, old_scores, recalibrate

HEADER = "composition,test_type,temperature_c,processing,uts_mpa,ys_mpa,elongation_pct,hardness_hv"
GOOD = [
    "Co0.2 Cr0.2 Fe0.3 Ni0.3,tension,25,cast,640,300,55,",
    "Co0.25 Cr0.3 Ni0.45,tension,25,cast,720,350,48,180",
    "Co35Cr15Fe30Ni20,T,25,as-cast,600,280,60,",
]


def results(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "r.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_results_become_task_records(tmp_path):
    rec = read_results(results(tmp_path, GOOD))
    assert rec.height == 10  # 3 x (UTS, YS, elongation) + 1 hardness
    assert set(rec["task"]) == {
        "uts_tension_mpa", "ys_tension_mpa", "elongation_tension_pct", "hardness_hv"
    }
    assert rec.filter(pl.col("source_row") == 2)["composition"][0] == "Co0.35 Cr0.15 Fe0.3 Ni0.2"


@pytest.mark.parametrize(
    "rows, header, message",
    [
        (["CoCrXxNi,tension,25,cast,600,,,"], HEADER, "row 0 (line 2): unknown element symbol"),
        ([GOOD[0], "CoCrFeNi,tension,25,cast,-5,,,"], HEADER, "row 1 (line 3): uts_mpa '-5'"),
        ([GOOD[0], "CoCrFeNi,tension,25,cast,90000,,,"], HEADER, "row 1 (line 3): uts_mpa"),
        ([GOOD[0], "CoCrFeNi,tension,25,cast,,,abc,"], HEADER, "elongation_pct 'abc' is not"),
        (["CoCrFeNi,shear,25,cast,600,,,"], HEADER, "row 0 (line 2): unknown test type"),
        (["CoCrFeNi,tension,25,cast,,,,"], HEADER, "row 0 (line 2): no measured value"),
        (["Te1Fe1,tension,25,cast,600,,,"], HEADER, "row 0 (line 2)"),
        (["CoCrFeNi,25,600"], "composition,temperature_c,uts_mpa", "lack test_type, processing"),
        (["CoCrFeNi,tension,25,cast"], "composition,test_type,temperature_c,processing",
         "lack a property column"),
    ],
)
def test_bad_results_name_the_row(tmp_path, rows, header, message):
    with pytest.raises(UserInputError, match=None) as err:
        read_results(results(tmp_path, rows, header))
    assert message in str(err.value)


def test_store_refuses_a_duplicate_and_ignores_a_half_written_import(tmp_path):
    store = MeasurementStore(tmp_path / "store")
    first = read_results(results(tmp_path, GOOD))
    store.add(first, "r.csv")
    # a crash after writing an import's Parquet file but before the manifest leaves an
    # unlisted file: the store reads as before
    (tmp_path / "store" / "imports" / f"{'0' * 64}.parquet").write_bytes(b"PAR1 half")
    assert store.records().height == 10
    same = read_results(results(tmp_path, list(reversed(GOOD)), name="again.csv"))
    with pytest.raises(UserInputError, match="imported before"):
        store.add(same, "again.csv")
    assert len(store.imports()) == 1
    assert not list((tmp_path / "store").glob(".*tmp"))  # atomic writes leave no temp file
    measured = store.measured()
    assert measured.values["uts_tension_mpa"]["Co0.25 Cr0.3 Ni0.45"] == 720.0


@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    return dst


def test_bad_rows_are_all_named_in_one_pass(tmp_path):
    rows = [GOOD[0], "CoCrXxNi,tension,25,cast,600,,,", "CoCrFeNi,shear,25,cast,600,,,",
            "CoCrFeNi,tension,25,cast,-5,,,", "Te1Fe1,tension,25,cast,600,,,"]
    with pytest.raises(UserInputError) as err:
        read_results(results(tmp_path, rows))
    text = str(err.value)
    assert "4 bad row(s); nothing was stored" in text
    for row in ("row 1 (line 3): unknown element", "row 2 (line 4): unknown test type",
                "row 3 (line 5): uts_mpa '-5'"):
        assert row in text
    rows = [GOOD[0], "Te1Fe1,tension,25,cast,600,,,", "FeTe,tension,25,cast,600,,,"]
    with pytest.raises(UserInputError) as err:  # element data: every row too
        read_results(results(tmp_path, rows))
    assert "2 bad row(s)" in str(err.value) and "row 2 (line 4)" in str(err.value)
    many = [f"CoCrFeNi,tension,25,cast,{-i},,," for i in range(1, 31)]
    with pytest.raises(UserInputError) as err:  # capped, with the count
        read_results(results(tmp_path, many))
    text = str(err.value)
    assert "30 bad row(s)" in text and "... and 10 more bad row(s)" in text
    assert text.count("outside the accepted") == 20


def test_update_writes_a_new_version_to_the_user_data_directory(
    tmp_path, bundle_copy, capsys, monkeypatch
):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "100")
    old_manifest = (bundle_copy / "manifest.json").read_bytes()
    old = load_task_bundle(bundle_copy)
    args = ["update", "--measured", str(results(tmp_path, GOOD)), "--store",
            str(tmp_path / "store"), "--model", str(bundle_copy)]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    new_path = tmp_path / "data" / "hea-screen" / "models" / "bundle.v2"
    assert not (tmp_path / "bundle.v2").exists()  # never beside the bundle (the package)
    new = load_task_bundle(new_path)  # verifies every file's SHA-256
    assert resolve_model("bundle.v2") == str(new_path)  # --model by version name
    assert "use it with --model bundle.v2" in out
    heading, table_text = out.split("before -> after")[1].split(":\n", 1)
    assert heading == " (the first 3 of 3 measured alloys)"  # only the shown rows predicted
    table = table_text.splitlines()
    assert len(table) >= 4 and max(len(line) for line in table) <= 100  # fits COLUMNS
    assert "shape:" not in out and "┌" not in out  # a formatted table, not a raw frame
    assert (bundle_copy / "manifest.json").read_bytes() == old_manifest  # never overwritten
    assert new.manifest["parent"]["sha256"] == old.sha256 != new.sha256
    for task in ("uts_tension_mpa", "ys_tension_mpa", "elongation_tension_pct", "hardness_hv"):
        cal = new.manifest["tasks"][task]["calibration"]
        assert cal["new_rows"] >= 1 and cal["previous_factor"] == old.task(task).interval_factor
        assert "conformal factor" in out
    assert "uts_compression_mpa" not in new.manifest["update"]["refitted"]
    changed = [r for r, e in new.manifest["files"].items() if e != old.manifest["files"][r]]
    assert "training_set.json" in changed
    if importlib.util.find_spec("sklearn") and importlib.util.find_spec("skl2onnx"):
        assert "uts_tension_mpa" in new.manifest["update"]["refitted"]
        assert "uts_tension_mpa/fold_0.onnx" in changed
    else:  # the light install says what it could not do
        why = new.manifest["update"]["not_refitted"]["uts_tension_mpa"]
        assert "training extra" in why and "training extra" in out
    assert "uts_compression_mpa/fold_0.onnx" not in changed
    training = json.loads((new_path / "training_set.json").read_text())
    assert "Co0.25 Cr0.3 Ni0.45" in training["targets"]["uts_tension_mpa"]["compositions"]
    assert "before -> after" in out
    # the same results again: refused, and no third bundle is written
    assert main(args) == 2
    assert "imported before" in capsys.readouterr().err
    assert not new_path.with_name("bundle.v3").exists()


def test_update_refuses_a_condition_the_model_lacks(tmp_path, bundle_copy, capsys):
    rows = [GOOD[0], "CoCrFeNi,tension,1500,cast,300,,,"]
    args = ["update", "--measured", str(results(tmp_path, rows)), "--store",
            str(tmp_path / "store"), "--model", str(bundle_copy), "--no-refit"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "row 1 (line 3)" in err and "1500" in err and "lacks this condition" in err
    assert "1 bad row(s)" in err
    assert not (tmp_path / "store").exists() and not (tmp_path / "bundle.v2").exists()


def test_recalibration_only_keeps_the_members(tmp_path, bundle_copy, capsys):
    args = ["update", "--measured", str(results(tmp_path, GOOD)), "--store",
            str(tmp_path / "store"), "--model", str(bundle_copy), "--no-refit",
            "--out", str(tmp_path / "v2")]
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    old, new = load_task_bundle(bundle_copy), load_task_bundle(tmp_path / "v2")
    onnx = [r for r in old.manifest["files"] if r.endswith(".onnx")]
    assert all(new.manifest["files"][r] == old.manifest["files"][r] for r in onnx)
    for t in ("uts_tension_mpa", "hardness_hv"):
        cal = new.manifest["tasks"][t]["calibration"]
        q_oof = conformal_quantile(old_scores(old, t), old.interval)
        assert new.task(t).interval_factor == pytest.approx(max(q_oof, cal["factor"]))


def test_refitting_on_covered_points_never_shrinks_c_below_the_oof_support(bundle_copy):
    bundle = load_task_bundle(bundle_copy)
    task = "uts_tension_mpa"
    oof = old_scores(bundle, task)
    assert len(oof) > 100
    q_oof = conformal_quantile(oof, bundle.interval)
    covered = np.zeros(5 * len(oof))  # many new rows, every one dead on the old centre
    cal = recalibrate(bundle, {task: (covered, np.ones(len(covered), dtype=bool))})[task]
    assert cal.all_quantile < q_oof  # pooled with them, the quantile alone would shrink
    assert cal.new == pytest.approx(q_oof) and cal.oof_rows == len(oof)
    assert "max(" in cal.arithmetic(bundle.interval)


def test_plan_counts_the_store_as_measured(tmp_path, capsys):
    store = MeasurementStore(tmp_path / "store")
    store.add(read_results(results(tmp_path, GOOD)), "r.csv")
    comps = tmp_path / "c.csv"
    pl.DataFrame({"composition": ["Co25Cr30Ni45", "Co26Cr30Ni44", "CoCrNi", "Co2CrNi"]}).write_csv(
        comps
    )
    args = ["plan", str(comps), "-k", "4", "--objective", "uts", "--phase", "any"]
    assert main([*args, "--out", str(tmp_path / "a.csv")]) == 0
    without = pl.read_csv(tmp_path / "a.csv")["composition"].to_list()
    assert main([*args, "--store", str(tmp_path / "store"), "--out", str(tmp_path / "b.csv")]) == 0
    capsys.readouterr()
    with_store = pl.read_csv(tmp_path / "b.csv")["composition"].to_list()
    twins = {"Co0.25 Cr0.3 Ni0.45", "Co0.26 Cr0.3 Ni0.44"}  # 0.02 apart: one pick at most
    assert len(twins & set(without)) == 1  # which one is the model's choice
    assert not twins & set(with_store)  # both within the minimum distance of a stored alloy


def test_versions_live_in_the_xdg_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert models_dir() == tmp_path / "xdg" / "hea-screen" / "models"
    assert next_version(Path("hea_screen/models/default")) == models_dir() / "default.v2"
    (models_dir() / "default.v2").mkdir(parents=True)
    assert next_version(models_dir() / "default.v2") == models_dir() / "default.v3"
    assert resolve_model("default.v2") == str(models_dir() / "default.v2")
    assert resolve_model("default") == "default"  # a shipped bundle's name stays one
    assert resolve_model("nowhere.v9") == "nowhere.v9"  # the bundle check then says so
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the spec: absolute paths only
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models_dir() == tmp_path / "home" / ".local" / "share" / "hea-screen" / "models"


def test_bulk_reading_gives_the_row_by_row_records(tmp_path, monkeypatch):
    """Results read in slices of 2 rows, in bulk, give the records of the row-by-row reading
    (aliases, spaces, exponents, hardness at 25 °C, compression); a cell only Python reads
    as a number (``1_000``) takes the row-by-row path, with the same records."""
    from hea_screen.planning import store

    rows = [
        *GOOD,
        "Al0.5CoCrFeNi,compression,600,anneal,,900, 12 ,300",
        "Co20Cr20Fe20Mn20Ni20,C,-50,powder,1.2e3,,,",
        "(CoCrFeNi)90Al10,tension,1e2,other,700,,1e1,",
    ]
    monkeypatch.setattr(store, "READ_ROWS", 2)
    for extra in ([], ["Co1 Ni1,tension,25,cast,1_000,,,"]):
        path = results(tmp_path, rows + extra)
        raw = pl.read_csv(path, infer_schema=False)
        one_by_one = pl.DataFrame(
            [r for i, row in enumerate(raw.iter_rows(named=True)) for r in store._records(i, row)],
            schema=dict.fromkeys(store.RECORD_COLUMNS),
            orient="row",
        ).cast({"temperature_c": pl.Float64, "value": pl.Float64, "source_row": pl.Int64})
        assert read_results(path).equals(one_by_one)


def test_results_read_in_slices_keep_the_whole_file_s_answers(tmp_path, monkeypatch):
    """Read in slices of 2 rows, a file still gives the whole file's answers: a row that
    cannot be parsed after the first slices, a bad row or a repeat in a later slice, a file
    of a header only."""
    from hea_screen.planning import store

    monkeypatch.setattr(store, "READ_ROWS", 2)
    bad = [*GOOD, "CoNi,tension,25,cast,600,,,,extra"]
    with pytest.raises(UserInputError, match="cannot be read"):
        read_results(results(tmp_path, bad))
    with pytest.raises(UserInputError, match=r"row 4 \(line 6\): unknown element"):
        read_results(results(tmp_path, [*GOOD, "Co1 Ni1,T,25,cast,640,,,", "Xx1,T,25,cast,9,,,"]))
    with pytest.raises(UserInputError, match=r"row 3 \(line 5\): repeats row 1"):
        read_results(results(tmp_path, [*GOOD, GOOD[1]]))
    with pytest.raises(UserInputError, match="hold no rows"):
        read_results(results(tmp_path, []))


def test_only_the_slice_with_a_bad_row_is_read_row_by_row(tmp_path, monkeypatch):
    """A bad row sends its slice, not the file, to the row-by-row reading; the error names
    it and the repeat of a row of another slice."""
    from hea_screen.planning import store

    monkeypatch.setattr(store, "READ_ROWS", 2)
    slow: list[int] = []
    row_records = store._row_records

    def counted(raw: pl.DataFrame, first_row: int):
        slow.append(first_row)
        return row_records(raw, first_row)

    monkeypatch.setattr(store, "_row_records", counted)
    rows = [*GOOD, "Co1 Ni1,T,25,cast,640,,,", "Xx1,T,25,cast,9,,,", GOOD[0], "Fe1,T,25,cast,5,,,"]
    with pytest.raises(UserInputError) as err:
        read_results(results(tmp_path, rows))
    assert slow == [4]
    text = str(err.value)
    assert "2 bad row(s)" in text and "row 4 (line 6): unknown element" in text
    assert "row 5 (line 7): repeats row 0" in text


def test_import_sha256_is_that_of_the_sorted_records(monkeypatch):
    """The import's SHA-256, hashed from the sort order slice by slice, is the digest of the
    CSV text of the records sorted whole (ties, every column deciding, slices of 3)."""
    from hea_screen.planning import store

    monkeypatch.setattr(store, "READ_ROWS", 3)
    rng = np.random.default_rng(0)
    n = 40
    records = pl.DataFrame(
        {
            "composition": rng.choice(["Co1 Ni1", "Fe1", "Cr1 Fe1"], n),
            "task": rng.choice(["uts_tension_mpa", "elongation_tension_pct"], n),
            "test_type": ["tension"] * n,
            "temperature_c": rng.choice([25.0, 600.0], n),
            "processing": rng.choice(["CAST", "WROUGHT"], n),
            "value": rng.choice([1.5, 2.0, 700.0], n),
            "source_row": np.arange(n),
        }
    )
    text = records.drop("source_row").sort(list(store.RECORD_COLUMNS[:-1])).write_csv()
    assert store.records_sha256(records) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert store.records_sha256(records.reverse()) == store.records_sha256(records)
    empty = records.clear()
    header = empty.drop("source_row").write_csv()
    assert store.records_sha256(empty) == hashlib.sha256(header.encode("utf-8")).hexdigest()
    keys = ["composition", "processing"]
    assert store.distinct(records, keys).equals(records.select(keys).unique(maintain_order=True))


def test_scores_gathered_from_slices_are_those_of_each_condition_s_batches(monkeypatch):
    """Records of several tasks and conditions, interleaved, are scored in the batches of
    each task and condition's records in file order (what ``group_by`` gave), slices of 3."""
    from hea_screen.inference.intervals import forward
    from hea_screen.inference.predictor import TaskPredictor
    from hea_screen.planning import update as up

    monkeypatch.setattr(up, "SCORE_BATCH", 3)
    model = TaskPredictor(default_bundle_path())
    tasks = ["uts_tension_mpa", "elongation_tension_pct", "uts_compression_mpa"]
    kinds = ["tension", "tension", "compression"]
    n = 23
    which = [i % 3 if i % 5 else 0 for i in range(n)]
    records = pl.DataFrame(
        {
            "composition": [f"Co{1 + i % 7} Cr1 Fe1 Ni{1 + i % 4}" for i in range(n)],
            "task": [tasks[w] for w in which],
            "test_type": [kinds[w] for w in which],
            "temperature_c": [25.0] * n,
            "processing": ["CAST" if i % 4 else "WROUGHT" for i in range(n)],
            "value": [600.0 + 10 * i if which[i] != 1 else 5.0 + i for i in range(n)],
        }
    )
    keys = ["task", "test_type", "temperature_c", "processing"]
    expected: dict[str, tuple[list, list]] = {}
    for key, group in records.group_by(keys, maintain_order=True):  # main's batches
        task, condition = str(key[0]), _condition(dict(zip(keys, key)))
        space = model.bundle.task(task).interval_space
        for part in group.iter_slices(3):
            near = model.bundle.task(task).distance_slope > 0
            got = model.predict(part["composition"], condition, [task], applicability=near)
            y = part["value"].to_numpy()
            lo, hi = got[f"{task}_lo"].to_numpy(), got[f"{task}_hi"].to_numpy()
            z_lo, z_hi = forward(lo, space), forward(hi, space)
            half = (z_hi - z_lo) / 2 / model.bundle.task(task).factor(condition.processing)
            scores, inside = expected.setdefault(task, ([], []))
            scores.append(np.abs(forward(y, space) - (z_lo + z_hi) / 2) / half)
            inside.append((y >= lo) & (y <= hi))
    got = up.new_scores(records, model)
    assert list(got) == list(expected)
    for task, (scores, inside) in expected.items():
        assert np.array_equal(got[task][0], np.concatenate(scores))
        assert np.array_equal(got[task][1], np.concatenate(inside))


def test_training_set_keeps_old_alloys_in_place_and_appends_new_ones():
    """Stored alloys update the values of known ones in place and are appended after them,
    with their values per condition where the task keeps ``measured_at``."""
    from hea_screen.planning.update import _training_set

    old = {"a": {"compositions": ["Co0.5 Ni0.5", "Fe1"], "values": [1.0, 2.5]}}
    old["b"] = {"compositions": ["Fe1"], "values": [3.0]}
    stored = pl.DataFrame(
        {
            "task": ["a", "c", "a", "a"],
            "composition": ["Fe1", "Co1", "Ni1", "Ni1"],
            "test_type": ["tension"] * 4,
            "temperature_c": [25.0, 25.0, 25.0, 600.0],
            "processing": ["CAST"] * 4,
            "value": [4.0, 5.0, 6.0, 7.0],
        }
    )
    new = json.loads(_training_set(json.dumps({"targets": old}), stored, {"a", "c"}))
    key = Condition.of("tension", 25, "cast").measured_key
    assert new == {
        "targets": {
            "a": {"compositions": ["Co0.5 Ni0.5", "Fe1", "Ni1"], "values": [1.0, 4.0, 6.5]},
            "b": {"compositions": ["Fe1"], "values": [3.0]},
            "c": {"compositions": ["Co1"], "values": [5.0], "measured_at": [{key: 5.0}]},
        }
    }


def test_tasks_whose_members_were_kept_count_the_alloys_they_learned():
    """A task with stored alloys but kept members gains (or keeps) ``learned``, its alloys
    before the lab's; a refitted task learned them all and drops the count."""
    from hea_screen.planning.update import _training_set

    old = {"a": {"compositions": ["Co0.5 Ni0.5", "Fe1"], "values": [1.0, 2.5]}}
    old["b"] = {"compositions": ["Fe1"], "values": [3.0]}
    stored = pl.DataFrame(
        {
            "task": ["a", "c", "a"],
            "composition": ["Fe1", "Co1", "Ni1"],
            "test_type": ["tension"] * 3,
            "temperature_c": [25.0] * 3,
            "processing": ["CAST"] * 3,
            "value": [4.0, 5.0, 6.0],
        }
    )
    kept = json.loads(_training_set(json.dumps({"targets": old}), stored, set()))["targets"]
    assert (kept["a"]["learned"], kept["c"]["learned"], "learned" in kept["b"]) == (2, 0, False)
    assert kept["a"]["compositions"] == ["Co0.5 Ni0.5", "Fe1", "Ni1"]
    more = stored.with_columns(pl.col("composition").replace({"Ni1": "Cr1"}))
    again = json.loads(_training_set(json.dumps({"targets": kept}), more, {"c"}))["targets"]
    assert again["a"]["learned"] == 2 and "learned" not in again["c"]
    assert again["a"]["compositions"] == ["Co0.5 Ni0.5", "Fe1", "Ni1", "Cr1"]


def _main_training_set(text: str, store_records: pl.DataFrame) -> str:
    """main's merge before the streamed one, kept as the reference.

    ``training_set.json`` with the stored alloys added (mean value per alloy and task, and
    per alloy, task and ``ROUTE|band`` of the condition). Linear in records: one position
    index per task, one condition key per distinct condition."""
    data = json.loads(text)
    columns = ["test_type", "temperature_c", "processing"]
    conditions = store_records.select(columns).unique(maintain_order=True)
    keys = conditions.with_columns(
        pl.Series(
            "key",
            [_condition(r).measured_key for r in conditions.iter_rows(named=True)],
            dtype=pl.Utf8,
        )
    )
    keyed = store_records.join(keys, on=columns, how="left", maintain_order="left")
    means = keyed.group_by("task", "composition", maintain_order=True).agg(
        pl.col("value").mean()
    )
    at = keyed.group_by("task", "composition", "key", maintain_order=True).agg(
        pl.col("value").mean()
    )
    index: dict[str, dict[str, int]] = {}
    for task, comp, value in means.iter_rows():
        target = data["targets"].setdefault(
            task, {"compositions": [], "values": [], "measured_at": []}
        )
        if task not in index:
            index[task] = {c: i for i, c in enumerate(target["compositions"])}
        where = index[task]
        if comp not in where:
            where[comp] = len(target["compositions"])
            target["compositions"].append(comp)
            target["values"].append(value)
            if "measured_at" in target:
                target["measured_at"].append({})
        target["values"][where[comp]] = value
    for task, comp, key, value in at.iter_rows():
        target = data["targets"][task]
        if "measured_at" in target:
            target["measured_at"][index[task][comp]][key] = value
    return json.dumps(data)


@pytest.mark.parametrize(("chunk", "merge"), [(1, 1), (2, 2), (50_000, 32_768)])
def test_streamed_training_set_is_byte_identical_to_the_dict_merge(
    tmp_path, monkeypatch, chunk, merge
):
    """The streamed merge writes the same bytes as main's merge of Python lists and dicts:
    the shipped training set (known alloys updated in place, new ones appended, a new task,
    a target without ``measured_at``, non-ASCII text), in chunks of any size, the records
    grouped in parts of any size (split by alloy)."""
    from hea_screen.inference.bundle import load_task_bundle as load
    from hea_screen.planning import update as up

    monkeypatch.setattr(up, "JSON_CHUNK", chunk)
    monkeypatch.setattr(up, "MERGE_ROWS", merge)
    text = load(default_bundle_path()).training_set_text()
    data = json.loads(text)
    task, known = next((t, e["compositions"]) for t, e in data["targets"].items())
    data["targets"]["plain"] = {"compositions": ["Fe1", "Ni1"], "values": [1.0, 2.0]}
    text = json.dumps(data)
    stored = pl.DataFrame(
        {
            "task": [task, task, task, "new_task", "plain", "plain", task, task],
            "composition": [
                *(known[0], "Co1 Ni1", "Co1 Ni1", "Co1"),
                *("Ni1", "Crµ1", known[1], "Co1 Ni1"),
            ],
            "test_type": ["tension"] * 8,
            "temperature_c": [25.0, 25.0, 600.0, 25.0, 25.0, 25.0, 800.0, 25.0],
            "processing": ["CAST"] * 6 + ["WROUGHT", "CAST"],
            "value": [4.0, 0.1, 0.2, 7.0, 8.0, 9.0, 1.5, 0.3],
        }
    )
    expected = _main_training_set(text, stored).encode("utf-8")
    path = tmp_path / "training_set.json"
    digest, size = up.write_training_set(text, stored, path, set(stored["task"]))
    assert path.read_bytes() == expected
    assert (digest, size) == (hashlib.sha256(expected).hexdigest(), len(expected))


def test_movement_predicts_only_the_rows_it_reports():
    from hea_screen.inference.predictor import TaskPredictor
    from hea_screen.planning.update import MOVEMENT_ROWS, movement

    model = TaskPredictor(default_bundle_path())
    texts = pl.Series([f"Co{i + 1} Ni1" for i in range(MOVEMENT_ROWS + 7)])
    moved = movement(model, model, texts, Condition(), ["uts_tension_mpa"])
    assert moved["composition"].to_list() == [str(parse(t)) for t in texts[:MOVEMENT_ROWS]]


def test_a_predictor_without_its_training_set_predicts_the_same():
    """``training_set=False`` (the movement report's new bundle) predicts as the full load
    does without the nearest-data columns, and refuses to give them."""
    from hea_screen.inference.predictor import TaskPredictor

    full, lean = (TaskPredictor(default_bundle_path(), training_set=t) for t in (True, False))
    assert lean.training_set is None and lean.bundle.training_set is None
    texts = pl.Series(["Co1 Cr1 Fe1 Ni1", "Al0.5 Co1 Cr1 Fe1 Ni1"])
    tasks = ["uts_tension_mpa"]
    assert lean.predict(texts, Condition(), tasks, applicability=False).equals(
        full.predict(texts, Condition(), tasks, applicability=False)
    )
    with pytest.raises(UserInputError, match="applicability=False"):
        lean.predict(texts, Condition(), tasks)


def test_lab_alloys_the_members_did_not_learn_leave_intervals_at_their_width(
    tmp_path, bundle_copy, capsys
):
    """After ``update --no-refit`` the nearest-measured columns know a lab alloy, but its
    interval is scaled at its distance to the alloys the members learned: its (log-space)
    width moves by the new conformal factor alone (it would shrink by ``exp(-slope·d)``
    otherwise)."""
    from hea_screen.conditions import Processing
    from hea_screen.inference.predictor import TaskPredictor

    args = ["update", "--measured", str(results(tmp_path, GOOD)), "--store",
            str(tmp_path / "store"), "--model", str(bundle_copy), "--no-refit",
            "--out", str(tmp_path / "v2")]
    assert main(args) == 0, capsys.readouterr().err
    task, alloy, condition = "uts_tension_mpa", "Co0.25 Cr0.3 Ni0.45", Condition()
    old, new = TaskPredictor(bundle_copy), TaskPredictor(tmp_path / "v2")
    a, b = (m.predict([alloy], condition, [task]) for m in (old, new))
    assert a[f"{task}_nearest_distance"][0] > 0.05 and old.bundle.task(task).distance_slope > 0
    assert b[f"{task}_nearest_distance"][0] == 0 and b[f"{task}_nearest_composition"][0] == alloy
    training = json.loads((tmp_path / "v2" / "training_set.json").read_text())
    learned = training["targets"][task]["learned"]
    assert learned == len(old.training_set.targets[task].compositions)
    # half-widths in the interval's (log) space: factor x scale
    half = [np.log(p[f"{task}_hi"][0] / p[f"{task}_lo"][0]) for p in (a, b)]
    factor = new.bundle.task(task).factor(Processing.CAST) / old.bundle.task(task).factor(
        Processing.CAST
    )
    assert b[f"{task}_mean"][0] == a[f"{task}_mean"][0]
    assert half[1] / half[0] == pytest.approx(factor, rel=1e-9)
