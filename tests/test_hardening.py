"""Issue 19, the second hardening sweep: outputs never replace anything but a regular file or
an input, batch files stay in the job, no hang on a silent scheduler, every value read from a
file is checked, no traceback and no file content echoed. One test (or more) per item."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from hea_screen.cli import main
from hea_screen.errors import UserInputError
from hea_screen.output import csv_safe, read_json, write_table
from hea_screen.planning.store import MeasurementStore, read_results
from hea_screen.screening.jobs import MANIFEST, PARTS, run_batch
from hea_screen.screening.model_ref import ModelRef
from hea_screen.screening.spec import spec_from_dict

UTS = "uts_tension_mpa"
SMALL = ["--elements", "Co,Cr,Fe,Ni", "--step", "0.1", "--workers", "1", "--quiet"]
HEADER = "composition,test_type,temperature_c,processing,uts_mpa,ys_mpa,elongation_pct"


def run(capsys, *args: str) -> tuple[int, str]:
    """Exit status and stderr of ``hea-screen ARGS`` (argparse's exits included)."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _one_result(tmp_path: Path) -> Path:
    """A results file of one tensile measurement (``r.csv`` in ``tmp_path``)."""
    measured = tmp_path / "r.csv"
    measured.write_text(HEADER + "\nCo0.2 Cr0.2 Fe0.3 Ni0.3,tension,25,cast,640,300,55\n")
    return measured


def _update_no_refit(capsys, measured: Path, store: Path, out: Path) -> tuple[int, str]:
    """``hea-screen update --measured MEASURED --store STORE --out OUT --no-refit``."""
    return run(
        capsys, "update", "--measured", str(measured), "--store", str(store), "--out", str(out),
        "--no-refit",
    )  # fmt: skip


@pytest.fixture(scope="module")
def screen(tmp_path_factory) -> Path:
    """A small screen (Co-Cr-Fe-Ni, step 0.1) by the shipped model, as Parquet."""
    out = tmp_path_factory.mktemp("screen") / "s.parquet"
    assert main([*SMALL, "--top", "100", "--show", "0", "--out", str(out)]) == 0
    return out


# ----------------------------------------------------------- 1, 3: output paths
def test_item1_a_fifo_or_device_is_never_replaced(screen, tmp_path, capsys):
    fifo = tmp_path / "p.html"
    os.mkfifo(fifo)
    code, err = run(
        capsys,
        "plan",
        str(screen),
        "-k",
        "2",
        "--out",
        str(tmp_path / "p.csv"),
        "--html",
        str(fifo),
    )
    assert code == 2 and "is a FIFO" in err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and not (tmp_path / "p.csv").exists()
    code, err = run(capsys, *SMALL, "--out", str(fifo.with_suffix(".csv")), "--show", "0")
    assert code == 0  # a new path is fine
    os.mkfifo(tmp_path / "q.csv")
    code, err = run(capsys, *SMALL, "--out", str(tmp_path / "q.csv"))
    assert code == 2 and "is a FIFO" in err
    if Path("/dev/full").exists():  # as root, this replaced the device node
        code, err = run(
            capsys, "plan", str(screen), "--out", str(tmp_path / "p.csv"), "--html", "/dev/full"
        )
        assert code == 2 and "is a character device" in err
        assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)


def test_item1_atomic_write_refuses_a_non_regular_destination(tmp_path):
    os.mkfifo(tmp_path / "t.csv")
    (tmp_path / "d.csv").mkdir()
    (tmp_path / "l.csv").symlink_to(tmp_path / "elsewhere.csv")
    frame = pl.DataFrame({"a": [1]})
    for name, kind in (("t.csv", "a FIFO"), ("d.csv", "a directory"), ("l.csv", "symbolic")):
        with pytest.raises(UserInputError, match=kind):
            write_table(frame, tmp_path / name)
    assert not (tmp_path / "elsewhere.csv").exists()


def test_item3_an_output_never_names_an_input_or_another_output(screen, tmp_path, capsys):
    mine = tmp_path / "mine.csv"
    mine.write_text("composition\nCoCrFeNi\nCoXx\n")
    before = mine.read_text()
    for args in (
        ["predict", str(mine), "--skip-bad", "--bad-rows", str(mine)],
        ["predict", str(mine), "--out", str(mine)],
        [
            "predict",
            str(mine),
            "--skip-bad",
            "--out",
            str(tmp_path / "x.csv"),
            "--bad-rows",
            str(tmp_path / "x.csv"),
        ],
    ):
        code, err = run(capsys, *args)
        assert code == 2 and "is the same file as" in err, err
        assert mine.read_text() == before
    plan = tmp_path / "plan.csv"
    code, err = run(capsys, "plan", str(screen), "--out", str(plan), "--html", str(plan))
    assert code == 2 and "--html" in err and "same file as --out" in err
    code, err = run(capsys, "plan", str(screen), "--out", str(screen.with_suffix(".parquet")))
    assert code == 2 and "same file as candidates FILE" in err


# ----------------------------------------------------------- 2: batch containment
def _spec():
    return spec_from_dict(
        {
            "name": "t",
            "space": {"elements": ["Co", "Cr", "Fe", "Ni"], "step": 0.25},
            "ranking": {"top": 5},
            "run": {"partition_size": 16},
        }
    )


def test_item2_partitions_as_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "part-000000.parquet").write_text("precious")
    out = tmp_path / "job"
    out.mkdir()
    (out / PARTS).symlink_to(elsewhere)
    model = ModelRef(None, device="cpu", batch_size=64)
    with pytest.raises(UserInputError, match="not a plain directory"):
        run_batch(_spec(), out, model, workers=1)
    assert (elsewhere / "part-000000.parquet").read_text() == "precious"
    assert [p.name for p in elsewhere.iterdir()] == ["part-000000.parquet"]


def test_item2_manifest_paths_through_a_link_are_outside(tmp_path):
    out = tmp_path / "job"
    model = ModelRef(None, device="cpu", batch_size=64)
    run_batch(_spec(), out, model, workers=1, max_partitions=1)
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (victim_dir / "keep.txt").write_text("precious")
    (out / PARTS / "link").symlink_to(victim_dir)
    data = json.loads((out / MANIFEST).read_text())
    data["partitions"]["0"]["file"] = f"{PARTS}/link/keep.txt"
    (out / MANIFEST).write_text(json.dumps(data))
    other = ModelRef(None, device="cpu", batch_size=32)  # another job: --restart would clear
    with pytest.raises(UserInputError, match="lies outside"):
        run_batch(_spec(), out, other, workers=1, restart=True)
    assert (victim_dir / "keep.txt").read_text() == "precious"


# ------------------------------------------------------- 19: truncated manifest
def test_item19_a_truncated_manifest_is_named_and_restart_clears_it(tmp_path):
    out = tmp_path / "job"
    model = ModelRef(None, device="cpu", batch_size=64)
    run_batch(_spec(), out, model, workers=1, max_partitions=1)
    text = (out / MANIFEST).read_text()
    (out / MANIFEST).write_text(text[: len(text) // 2])
    with pytest.raises(UserInputError, match=r"not valid JSON.*pass --restart to discard") as e:
        run_batch(_spec(), out, model, workers=1)
    assert '"identity"' not in str(e.value)
    done = run_batch(_spec(), out, model, workers=1, restart=True)
    assert done["status"] == "complete" and done["partitions_skipped"] == 0
    (out / MANIFEST).write_text("[" * 100_000)
    with pytest.raises(UserInputError, match="nests too deeply"):
        run_batch(_spec(), out, model, workers=1)


def test_item14_read_json_never_raises_recursion_error(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("[" * 100_000)
    with pytest.raises(UserInputError, match="nests too deeply"):
        read_json(path, "manifest")


# ----------------------------------------------------------- 4: update ordering
def test_item4_a_store_that_is_a_file_is_refused_before_any_bundle(tmp_path, capsys):
    measured = _one_result(tmp_path)
    store = tmp_path / "store"
    store.write_text("not a directory")
    code, err = _update_no_refit(capsys, measured, store, tmp_path / "nb")
    assert code == 2 and "is not a directory" in err and "batch" not in err
    assert not (tmp_path / "nb").exists()


# ------------------------------------------------------ 5: silent schedulers
@pytest.fixture()
def peer():
    """A local TCP server that accepts and never answers, or answers HTTP 400."""
    servers = []

    def start(answer: bytes | None) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        sock.settimeout(30)
        conns = []

        def serve():
            try:
                while True:
                    conn, _ = sock.accept()
                    conns.append(conn)
                    if answer is not None:
                        conn.recv(65536)
                        conn.sendall(answer)
            except OSError:
                pass

        threading.Thread(target=serve, daemon=True).start()
        servers.append((sock, conns))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for sock, conns in servers:
        for conn in conns:
            conn.close()
        sock.close()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [(None, "no answer"), (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "")],
)
def test_item5_a_silent_or_http_peer_is_a_clean_error_in_bounded_time(
    peer, capsys, monkeypatch, answer, reason
):
    monkeypatch.setattr("hea_screen.screening.cluster.SCHEDULER_TIMEOUT_S", 2.0)
    address = peer(answer)
    t0 = time.perf_counter()
    code, err = run(capsys, *SMALL, "--scheduler", address, "--show", "0")
    assert time.perf_counter() - t0 < 30
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"error: cannot reach the Dask scheduler at '{address}' within 2 s ({reason}")
    )


# ------------------------------------------------------------- 6: CSV formulas
def test_item6_formula_cells_are_escaped_in_every_csv(screen, tmp_path, capsys):
    frame = pl.DataFrame(
        {"text": ["=1+1", "@SUM(A1)", "+x", "-x", "-5", "1e3", "Co"], "n": [1, 2, 3, 4, 5, 6, 7]}
    )
    assert csv_safe(frame)["text"].to_list() == [
        "'=1+1",
        "'@SUM(A1)",
        "'+x",
        "'-x",
        "-5",
        "1e3",
        "Co",
    ]
    bad = tmp_path / "bad.csv"
    source = tmp_path / "in.txt"
    source.write_text("CoCrFeNi\n=1+1\n@SUM(A1)\n")
    code, err = run(
        capsys, "predict", str(source), "--skip-bad", "--bad-rows", str(bad), "--show", "0"
    )
    assert code == 0, err
    assert pl.read_csv(bad)["text"].to_list() == ["'=1+1", "'@SUM(A1)"]
    mine = tmp_path / "mine.csv"  # predict FILE keeps the user's columns
    pl.DataFrame({"composition": ["CoCrFeNi"], "notes": ["=HYPERLINK(1)"]}).write_csv(mine)
    out = tmp_path / "scored.csv"
    code, err = run(capsys, "predict", str(mine), "--out", str(out), "--show", "0")
    assert code == 0, err
    assert pl.read_csv(out)["notes"].to_list() == ["'=HYPERLINK(1)"]
    cands = pl.read_parquet(screen).with_columns(pl.lit("@SUM(1+1)").alias("notes"))
    cands.write_parquet(tmp_path / "c.parquet")
    plan = tmp_path / "p.csv"
    code, err = run(capsys, "plan", str(tmp_path / "c.parquet"), "-k", "2", "--out", str(plan))
    assert code == 0, err
    assert set(pl.read_csv(plan)["notes"]) == {"'@SUM(1+1)"}


# -------------------------------------------------------- 7, 8, 14: plan input
def test_item7_a_screen_at_another_test_type_is_refused(tmp_path, capsys):
    comp = tmp_path / "c.parquet"
    assert main([*SMALL, "--test", "compression", "--show", "0", "--out", str(comp)]) == 0
    code, err = run(
        capsys, "plan", str(comp), "--test", "tension", "--out", str(tmp_path / "p.csv")
    )
    assert code == 2 and "screened at test_type 'compression'" in err


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (f"{UTS}_hi", -1e6, "-1e+06] does not hold its mean"),
        (f"{UTS}_mean", float("nan"), f"row 0: {UTS}_mean nan is not a finite number"),
        (f"{UTS}_mean", "640", f"column '{UTS}_mean' is of type String, not a number"),
    ],
)
def test_item8_edited_predictions_in_a_screen_file_are_refused(
    screen, tmp_path, capsys, column, value, message
):
    frame = pl.read_parquet(screen)
    if isinstance(value, str):
        frame = frame.with_columns(pl.col(column).cast(pl.Utf8))
    else:
        first4 = pl.int_range(pl.len()) < 4
        frame = frame.with_columns(
            pl.when(first4).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        )
    path = tmp_path / "s.parquet"
    frame.write_parquet(path)
    code, err = run(capsys, "plan", str(path), "--out", str(tmp_path / "p.csv"))
    assert code == 2 and message in err, err


def test_item14_a_list_composition_column_is_refused(tmp_path, capsys):
    path = tmp_path / "c.parquet"
    pl.DataFrame({"composition": [["Co", "Cr"]]}).write_parquet(path)
    code, err = run(capsys, "plan", str(path), "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "not text" in err
    code, err = run(capsys, "predict", str(path))
    assert code == 2 and "not text" in err


@pytest.mark.parametrize(
    "args",
    [["--top", "1" + "0" * 20], ["--show", "1" + "0" * 20], ["--sample", "9" * 30]],
)
def test_item14_huge_counts_are_usage_errors(capsys, args):
    code, err = run(capsys, *SMALL, *args)
    assert code == 2 and "need a whole number from" in err


# ------------------------------------------------------- 9: the measurement store
def _stored(tmp_path: Path) -> MeasurementStore:
    measured = _one_result(tmp_path)
    store = MeasurementStore(tmp_path / "store")
    store.add(read_results(measured), str(measured))
    return store


def test_item9_an_edited_import_is_refused(tmp_path):
    store = _stored(tmp_path)
    [entry] = store.imports()
    path = store.path / entry["file"]
    frame = pl.read_parquet(path)
    frame.with_columns(pl.lit(9999.0).alias("value")).write_parquet(path)
    with pytest.raises(UserInputError, match="do not match their recorded SHA-256"):
        store.records()
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(UserInputError, match="cannot be read"):
        store.records()


def test_item9_a_rehashed_absurd_value_is_refused(tmp_path):
    from hea_screen.planning.store import records_sha256

    store = _stored(tmp_path)
    manifest = json.loads((store.path / MANIFEST).read_text())
    entry = manifest["imports"][0]
    frame = pl.read_parquet(store.path / entry["file"]).with_columns(pl.lit(1e9).alias("value"))
    digest = records_sha256(frame)
    frame.write_parquet(store.path / f"imports/{digest}.parquet")
    entry.update(sha256=digest, file=f"imports/{digest}.parquet")
    (store.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match=r"record 0: value 1000000000\.0 outside"):
        store.records()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: m["imports"][0].update(file="/etc/passwd"), "is not imports/<its sha256>"),
        (lambda m: m["imports"][0].update(file="imports/../../x.parquet"), "is not imports/"),
        (lambda m: m["imports"][0].pop("sha256"), "'sha256' is missing"),
        (lambda m: m.update(imports={"a": 1}), "'imports' is not a list"),
    ],
)
def test_item14_store_manifest_entries_are_checked(tmp_path, damage, message):
    store = _stored(tmp_path)
    manifest = json.loads((store.path / MANIFEST).read_text())
    damage(manifest)
    (store.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match=message):
        store.records()
    (store.path / MANIFEST).write_text("[" * 100_000)
    with pytest.raises(UserInputError, match="nests too deeply"):
        store.records()


def test_item9_a_missing_store_is_refused_by_plan(screen, tmp_path, capsys):
    code, err = run(
        capsys,
        "plan",
        str(screen),
        "--store",
        str(tmp_path / "nonexistent"),
        "--out",
        str(tmp_path / "p.csv"),
    )
    assert code == 2 and "does not exist" in err


# -------------------------------------------------------------- 10: ingot mass
@pytest.mark.parametrize("mass", ["1e17", "1e308", "0", "-5", "nan", "inf"])
def test_item10_ingot_mass_is_bounded_before_any_work(tmp_path, capsys, mass):
    source = tmp_path / "in.txt"
    source.write_text("CoCrFeNi\n")
    for args in (
        [*SMALL, "--ingot-mass", mass],
        ["predict", str(source), "--ingot-mass", mass],
        ["plan", str(source), "--ingot-mass", mass, "--out", str(tmp_path / "p.csv")],
    ):
        t0 = time.perf_counter()
        code, err = run(capsys, *args)
        assert code == 2 and "need a number of grams from 0.001 to 1,000,000" in err
        assert time.perf_counter() - t0 < 5  # refused by the parser, no model loaded


def test_item10_a_tonne_still_sums_exactly():
    from hea_screen.compositions.weighing import lab_columns

    out = lab_columns(pl.DataFrame({"composition": ["Co0.5 Ni0.5"]}), 1_000_000.0)
    grams = [float(p.split()[1]) for p in out["weigh_out_g"][0].split(", ")]
    assert sum(grams) == pytest.approx(1_000_000.0) and min(grams) > 0


# -------------------------------------------------------------- 11: results file
@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (["CoCrFeNi,tension,25,cast,300,640,"], HEADER, "ys_mpa 640 exceeds uts_mpa 300"),
        (["CoCrFeNi,tension,25,cast,600,300,"] * 3, HEADER, "row 1 (line 3): repeats row 0"),
    ],
)
def test_item11_results_are_checked_across_columns_and_rows(tmp_path, rows, header, message):
    path = tmp_path / "r.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(UserInputError, match=re.escape(message)):
        read_results(path)


def test_item11_unknown_columns_are_named(tmp_path, caplog):
    path = tmp_path / "r.csv"
    path.write_text(HEADER + ",uts_MPa,notes\nCoCrFeNi,tension,25,cast,600,300,,700,hi\n")
    read_results(path)
    assert "ignored column(s) 'uts_MPa', 'notes'" in caplog.text


# -------------------------------------------------- 17: no file content echoed
def test_item17_predict_quotes_a_short_marked_excerpt_and_keeps_permissions(tmp_path, capsys):
    secret = tmp_path / "secrets.env"
    secret.write_text("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    secret.chmod(0o600)
    code, err = run(capsys, "predict", str(secret))
    assert code == 2 and "(first 24 of 62 characters)" in err
    assert "EXAMPLEKEY" not in err
    bad = tmp_path / "bad.csv"
    (tmp_path / "ok.txt").write_text("CoCrFeNi\n")
    code, err = run(capsys, "predict", str(secret), "--skip-bad", "--bad-rows", str(bad))
    assert code == 2 and "no composition to predict" in err
    assert stat.S_IMODE(os.stat(bad).st_mode) & 0o077 == 0  # no wider than the input


# -------------------------------------------------- 20: predict's own flags
@pytest.mark.parametrize(
    "flag", [["--scheduler", "tcp://127.0.0.1:1"], ["--workers", "2"], ["--yes"]]
)
def test_item20_predict_refuses_flags_it_would_ignore(tmp_path, capsys, flag):
    source = tmp_path / "in.txt"
    source.write_text("CoCrFeNi\n")
    code, err = run(capsys, "predict", str(source), *flag)
    assert code == 2 and "unrecognized arguments" in err


# --------------------------------------------- 12-15: bundle, predictor and API
def _bundle_copy(tmp_path: Path) -> Path:
    import shutil

    from hea_screen.screening.model_ref import inspect_model

    copy = tmp_path / "bundle"
    shutil.copytree(inspect_model(None, None).path, copy)
    return copy


def _rehash(bundle: Path, rel: str) -> None:
    """List ``rel``'s new size and SHA-256 in the manifest, as a forger would."""
    from hea_screen.datasets.sources import sha256_file

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][rel] = {
        "sha256": sha256_file(bundle / rel),
        "bytes": (bundle / rel).stat().st_size,
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_item13_a_phase_model_over_a_uts_model_is_refused(tmp_path, capsys):
    import shutil

    bundle = _bundle_copy(tmp_path)
    shutil.copyfile(bundle / "phase/fold_0.onnx", bundle / f"{UTS}/fold_0.onnx")
    _rehash(bundle, f"{UTS}/fold_0.onnx")
    code, err = run(capsys, *SMALL, "--model", str(bundle), "--show", "0")
    assert code == 2 and f"{UTS}/fold_0.onnx" in err and "output" in err, err


def test_item14_random_bytes_as_a_fold_model_are_refused(tmp_path, capsys):
    bundle = _bundle_copy(tmp_path)
    (bundle / f"{UTS}/fold_1.onnx").write_bytes(os.urandom(4096))
    _rehash(bundle, f"{UTS}/fold_1.onnx")
    code, err = run(capsys, *SMALL, "--model", str(bundle), "--show", "0")
    assert code == 2 and f"{UTS}/fold_1.onnx" in err and "not an ONNX model" in err, err


def test_item14_a_deeply_nested_bundle_manifest_is_refused(tmp_path, capsys):
    bundle = _bundle_copy(tmp_path)
    (bundle / "manifest.json").write_text("[" * 100_000)
    code, err = run(capsys, *SMALL, "--model", str(bundle), "--show", "0")
    assert code == 2 and "manifest.json" in err and "nests too deeply" in err, err


@pytest.mark.parametrize("empty", [[], (), pl.Series("c", [], dtype=pl.Utf8), "generator"], ids=str)
def test_item15_predicting_nothing_gives_an_empty_frame(empty):
    from hea_screen import load_model
    from hea_screen.conditions import Condition

    model = load_model()
    condition = Condition.of("tension", 25, "cast")
    if isinstance(empty, str):
        empty = (t for t in ())
    got = model.predict(empty, condition)
    one = model.predict(["CoCrFeNi"], condition)
    assert got.height == 0 and got.schema == one.schema


def test_item15_a_condition_that_is_not_a_condition_is_named():
    from hea_screen import load_model

    with pytest.raises(UserInputError, match=r"condition 'tension'.*Condition\.of"):
        load_model().predict(["CoCrFeNi"], "tension")


def test_item4_update_out_as_a_dangling_link_is_refused(tmp_path, capsys):
    measured = _one_result(tmp_path)
    (tmp_path / "nb").symlink_to(tmp_path / "elsewhere")
    code, err = _update_no_refit(capsys, measured, tmp_path / "store", tmp_path / "nb")
    assert code == 2 and "exists" in err
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "store").exists()


def test_item17_plan_and_update_quote_only_an_excerpt_of_a_long_text(tmp_path, capsys):
    long_text = "Co" + "X" * 200 + "secretsecret"
    cands = tmp_path / "c.csv"
    pl.DataFrame({"composition": [long_text]}).write_csv(cands)
    code, err = run(capsys, "plan", str(cands), "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "(first 24 of 214 characters)" in err and "secret" not in err
    results = tmp_path / "r.csv"
    results.write_text(HEADER + f"\n{long_text},tension,25,cast,600,300,\n")
    with pytest.raises(UserInputError, match=r"first 24 of 214 characters") as info:
        read_results(results)
    assert "secret" not in str(info.value)
