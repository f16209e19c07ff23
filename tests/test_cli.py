"""The hea-screen command: ranked output files, dry runs, batch jobs, clean bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from hea_screen.cli import main
from hea_screen.screening.engine import result_columns
from hea_screen.screening.ranking import Ranking

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--elements", "Co,Cr,Fe,Ni", "--step", "0.1", "--workers", "1", "--quiet"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_ranks_and_writes_every_format(capsys, condition_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    csv = tmp_path / "ranked.csv"
    code, out, err = cli(
        capsys, *SMALL, "--model", str(condition_bundle), "--top", "7", "--out", str(csv)
    )
    assert code == 0, err
    assert "rank" in out and "nearest datum" in out and " at 0." in out  # the printed table
    assert "ranked 7 of 145 candidates" in err
    table = pl.read_csv(csv)
    assert tuple(table.columns) == result_columns(Ranking())
    assert table["rank"].to_list() == list(range(1, 8))
    assert table["at_pct"][0].count("%") == 0 and table["weigh_out_g"][0].endswith(" g")
    for suffix in (".parquet", ".json"):
        path = tmp_path / f"ranked{suffix}"
        args = [*SMALL, "--model", str(condition_bundle), "--top", "7", "--show", "0"]
        assert main([*args, "--out", str(path)]) == 0
        other = pl.read_parquet(path) if suffix == ".parquet" else pl.read_json(path)
        assert other["composition"].to_list() == table["composition"].to_list()
    capsys.readouterr()


def test_options_shape_the_space_and_ranking(capsys, condition_bundle, tmp_path):
    out = tmp_path / "r.csv"
    args = [
        *SMALL,
        "--model",
        str(condition_bundle),
        "--bounds",
        "Co:0.2-0.4",
        "--min-elements",
        "4",
        "--non-equimolar-only",
        "--objective",
        "uts",
        "--risk",
        "safe",
        "--kappa",
        "2",
        "--top",
        "500",
        "--ingot-mass",
        "10",
        "--out",
        str(out),
    ]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    table = pl.read_csv(out)
    fractions = table["at_pct"].str.extract(r"Co (\d+\.\d+)").cast(float)
    assert fractions.min() >= 20 and fractions.max() <= 40
    assert (
        table["n_elements"] == 4
    ).all() and table.height == 43  # 4-element grid points: 18 + 15 + 10 for Co 20, 30, 40 %
    assert "Co0.25 Cr0.25 Fe0.25 Ni0.25" not in table["composition"].to_list()
    safe = table["uts_tension_mpa_mean"] - 2 * table["uts_tension_mpa_std"]
    assert (safe - table["score"]).abs().max() < 1e-9
    assert table["score"].is_sorted(descending=True)


def test_dry_run_reports_size_partitions_and_time(capsys, condition_bundle, tmp_path):
    out = tmp_path / "never.csv"
    code, text, err = cli(
        capsys, *SMALL, "--model", str(condition_bundle), "--dry-run", "--out", str(out)
    )
    assert code == 0, err
    assert "candidates: 145" in text
    assert "3 elements, grid: 72" in text and "4 elements, equimolar: 1" in text
    assert "partitions:" in text and "estimated time:" in text and "candidates/s" in text
    assert " to " in text.split("estimated time: ")[1].splitlines()[0]  # a range
    assert "assumes every fold model on all 145 candidates; 1 worker(s)" in text
    assert "1 local worker(s)" in text  # what the run (and a batch of this space) uses
    assert not out.exists()


def test_batch_subcommand_resumes(capsys, condition_bundle, tmp_path):
    spec = tmp_path / "small.yaml"
    spec.write_text(
        "name: small\nspace: {elements: [Co, Cr, Fe, Ni], step: 0.1}\n"
        "ranking: {objective: pareto, top: 50}\nrun: {partition_size: 64}\n"
    )
    job = tmp_path / "job"
    base = ["batch", str(spec), "--out", str(job), "--model", str(condition_bundle), "--quiet"]
    base += ["--batch-size", "32"]
    code, out, err = cli(capsys, *base, "--max-partitions", "1")
    assert code == 0, err
    assert "small: incomplete; partitions 1/3" in out
    assert "condition: tension, 25 °C, cast; ranking pareto on" in err  # as the main command
    assert json.loads((job / "summary.json").read_text())["workers"] == 1  # as its dry run
    code, out, err = cli(capsys, *base, "--workers", "1")
    assert code == 0, err
    assert "small: complete; partitions 3/3 (1 resumed, 2 this run)" in out
    summary = json.loads((job / "summary.json").read_text())
    assert summary["candidates_done"] == 145 and summary["spec_file"] == str(spec)
    ranked = pl.read_csv(job / "ranked.csv")
    assert ranked["pareto"].all() and ranked.height == summary["pareto_front_size"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--elements", "Co,Cr,Xx"], "unknown element 'Xx'"),
        (["--elements", "Co,Cr,Fe,Pu"], "no property data for Pu"),
        (["--elements", "Co,Cr,Te"], "no mixing enthalpy for Co-Te, Cr-Te"),
        (["--elements", "Co,Cr", "--min-elements", "3"], "empty space"),
        (
            ["--elements", "Co,Cr,Fe", "--equimolar-only", "--max-fraction", "0.3"],
            "bounds admit no",
        ),
        (["--elements", "Co,Cr,Fe", "--bounds", "Co:0.6-1,Cr:0.6-1"], "bounds admit no"),
        (["--elements", "Co,Cr,Fe", "--bounds", "Co=0.2"], "expected ELEMENT:LOW-HIGH"),
        (["--elements", "Co,Cr,Fe", "--step", "0.3"], "must divide 1 evenly"),
        (
            ["--elements", "Al,Co,Cr,Cu,Fe,Mn,Ni,Ti", "--step", "0.01", "--max-fraction", "1"],
            "screen a random sample with --sample N",
        ),
        (["--spec", "missing.yaml"], "cannot read spec"),
        (["--spec", "{bad}"], "not valid YAML"),
        (["--elements", "Co,Cr,Fe", "--out", "ranked.xlsx"], "unsupported extension '.xlsx'"),
        (["--elements", "Co,Cr,Fe", "--weights", "1"], "give two numbers"),
        (["--top", "5"], "give --elements"),
        (["--spec", "cantor", "--elements", "Co,Cr"], "cannot be combined with --spec"),
        (["--elements", "Co,Cr,Fe", "--model", "no/such/bundle"], "is not a directory"),
        (["--objective", "cheapest"], "invalid choice"),
    ],
)
def test_bad_input_is_a_clean_error(capsys, condition_bundle, tmp_path, args, message):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("space: [unclosed\n")
    args = [str(bad_yaml) if a == "{bad}" else a for a in args]
    args = [str(ROOT / "candidates" / "cantor.yaml") if a == "cantor" else a for a in args]
    if "--model" not in args:
        args += ["--model", str(condition_bundle)]
    with pytest.raises(SystemExit) if "invalid choice" in message else _no_exit():
        code, _, err = cli(capsys, *args, "--workers", "1")
        assert code == 2
        assert err.startswith("error: ") and message in err
        assert "Traceback" not in err
    if "invalid choice" in message:
        err = capsys.readouterr().err
        assert "error: argument --objective: invalid choice" in err


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_python_dash_m_exits_2_without_traceback(condition_bundle):
    model = ["--model", str(condition_bundle)]
    proc = subprocess.run(
        [sys.executable, "-m", "hea_screen", "--elements", "Co,Nope", *model],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.startswith("error: unknown element 'Nope'") and "Traceback" not in proc.stderr
    )


# ------------------------------------------------------------------ hardening
# These use the shipped default model (no --model): no training needed.
QUICK = ["--elements", "Co,Cr,Fe,Ni", "--step", "0.1", "--workers", "1", "--quiet"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ingot-mass", "-5"], "ingot mass -5.0 g: need a number of grams from 0.001"),
        (["--out", "/proc/top.csv"], "cannot write in directory '/proc'"),
        (["--elements", "Co,Co,Fe"], "--elements: Co given more than once"),
        (["--weights", "-1,2"], "weights must be >= 0"),
        (["--weights=-1,2"], "weights must be >= 0"),
        (["--weights", "nan,1"], "weights must be >= 0"),
    ],
)
def test_options_and_output_path_are_checked_before_any_work(capsys, args, message):
    try:
        code, out, err = cli(capsys, *QUICK, *args, "--dry-run")  # a dry run probes the model
    except SystemExit as exc:  # an argparse type's refusal (--ingot-mass)
        code, (out, err) = exc.code, capsys.readouterr()
    assert code == 2, err
    assert "error: " in err and message in err and "Traceback" not in err
    assert "partitions:" not in out  # refused before the dry run's probe


def test_show_must_not_be_negative(capsys):
    with pytest.raises(SystemExit) as info:
        main([*QUICK, "--show", "-5"])
    assert info.value.code == 2
    assert "argument --show: '-5': need a whole number from 0 to" in capsys.readouterr().err


def test_dry_run_of_a_space_too_large_to_index_estimates_and_samples(capsys):
    palette = "Al,Co,Cr,Cu,Fe,Hf,Mn,Mo,Nb,Ni,Ta,Ti,V,W,Zr,Si,Sn,Pd,Re,Ag,Au,Zn,Mg,Ga,B,C"
    args = ["--elements", palette, "--max-elements", "12", "--step", "0.01", "--workers", "1"]
    code, out, err = cli(capsys, *args, "--dry-run")
    assert code == 0, err
    assert "partitions: " in out and "years" in out  # counted, not listed
    assert "note: this space needs --sample N to run" in err
    code, out, err = cli(capsys, *args, "--dry-run", "--sample", "50")
    assert code == 0, err
    assert "sample: 50 (stratified, seed 0)" in out and "partitions: 1 of" in out
    code, out, err = cli(capsys, *args, "--yes", "--quiet")
    assert code == 2 and "too many to screen whole: screen a random sample" in err


def test_unreachable_scheduler_is_a_clean_error(capsys):
    code, _, err = cli(capsys, *QUICK, "--scheduler", "notaurl", "--show", "0")
    assert code == 2
    # the run header (condition, model) comes first; the error is the last line
    assert err.strip().splitlines()[-1].startswith(
        "error: cannot reach the Dask scheduler at 'notaurl'"
    )
    assert "Traceback" not in err


def _small_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "small.yaml"
    spec.write_text(
        "name: small\nspace: {elements: [Co, Cr, Fe, Ni], step: 0.1}\n"
        "ranking: {top: 20}\nrun: {partition_size: 64}\n"
    )
    return spec


def test_disk_full_mid_batch_is_a_clean_error_and_keeps_finished_partitions(
    capsys, monkeypatch, tmp_path
):
    import errno

    import hea_screen.output

    real = hea_screen.output.atomic_write

    def disk_fills_at_partition_2(path, write, *args):
        if "part-000002" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write, *args)

    monkeypatch.setattr(hea_screen.output, "atomic_write", disk_fills_at_partition_2)
    job = tmp_path / "job"
    base = ["batch", str(_small_spec(tmp_path)), "--out", str(job), "--quiet", "--workers", "1"]
    code, _, err = cli(capsys, *base, "--batch-size", "32")
    assert code == 1
    assert err.startswith("condition: ")  # a batch states its condition, as a screen does
    assert err.splitlines()[-1].startswith("error: No space left on device")
    assert "Traceback" not in err
    kept = json.loads((job / "manifest.json").read_text())["partitions"]
    assert sorted(kept) == ["0", "1"] and all((job / e["file"]).is_file() for e in kept.values())
    monkeypatch.setattr(hea_screen.output, "atomic_write", real)  # space freed
    code, out, err = cli(capsys, *base, "--batch-size", "32")
    assert code == 0, err
    assert "small: complete; partitions 3/3 (2 resumed, 1 this run)" in out


def test_busy_dashboard_port_does_not_reach_stderr(tmp_path):
    import socket

    space = ["--elements", "Co,Cr,Fe,Ni", "--step", "0.1"]
    split = ["--workers", "2", "--batch-size", "32", "--partition-size", "32"]  # 5 partitions

    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            busy.bind(("", 8787))
            busy.listen()
        except OSError:
            pass  # already taken by something else: just as good
        proc = subprocess.run(
            [sys.executable, "-m", "hea_screen", *space, *split, "--show", "0", "--quiet"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8787" not in proc.stderr and "already in use" not in proc.stderr


@pytest.mark.parametrize("command", ["pretrain.cli", "export.cli"])
def test_training_commands_without_the_train_extra_say_what_to_install(command):
    code = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'sklearn', 'optimum'):\n"
        "    sys.modules[name] = None  # as in the light install\n"
        f"from {command} import main\n"
        "sys.exit(main(['--help']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    name = "hea-train" if command == "pretrain.cli" else "hea-export"
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(
        f'error: {name} needs the training extra: pip install "hea-screen[train]"'
    )
    assert "(missing module torch)" in proc.stderr and "Traceback" not in proc.stderr


def test_condition_flags_are_checked_and_stated(capsys, condition_bundle, tmp_path):
    """The condition reaches the header and the output; a cryogenic temperature is a
    number, not an option; an uncovered or unknown condition is refused before any work."""
    out = tmp_path / "top.csv"
    args = [*SMALL, "--model", str(condition_bundle), "--top", "3", "--out", str(out)]
    code, _, err = cli(capsys, *args, "--test", "compression", "--objective", "ys")
    assert code == 0, err
    assert "condition: compression, 25 °C, cast; ranking ys on ys_compression_mpa" in err
    table = pl.read_csv(out)
    assert "ys_compression_mpa_mean" in table.columns
    assert "uts_tension_mpa_mean" not in table.columns
    assert set(table["test_type"]) == {"compression"} and set(table["processing"]) == {"CAST"}
    for flags, message in (
        (["--temperature", "-300"], "below absolute zero"),
        (["--temperature", "5000"], "5000 °C outside"),
        (["--processing", "forged"], "unknown processing route 'forged'"),
    ):
        code, _, err = cli(capsys, *args, *flags)
        assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5", "grain size '-5' µm: need a grain size in µm, more than 0"),
        ("0", "grain size '0' µm"),
        ("nan", "grain size 'nan' µm"),
        ("1e6", "grain size '1e6' µm"),
        ("fine", "grain size 'fine' is not a number"),
        ("5000", "grain size 5000 µm outside"),  # within 10 mm, beyond the training data
    ],
)
@pytest.mark.parametrize("command", ["screen", "predict", "plan"])
def test_bad_grain_size_is_refused_before_any_model_runs(capsys, tmp_path, command, value, message):
    comps = tmp_path / "c.csv"
    pl.DataFrame({"composition": ["CoCrFeMnNi", "CoCrFeNi"]}).write_csv(comps)
    args = {
        "screen": [*QUICK, "--dry-run"],
        "predict": ["predict", str(comps), "--out", str(tmp_path / "p.csv")],
        "plan": ["plan", str(comps), "--out", str(tmp_path / "plan.csv")],
    }[command]
    code, _, err = cli(capsys, *args, "--processing", "wrought", "--grain-size", value)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_grain_size_is_stated_in_the_output(capsys, tmp_path):
    out = tmp_path / "p.csv"
    comps = tmp_path / "c.csv"
    pl.DataFrame({"composition": ["CoCrFeMnNi"]}).write_csv(comps)
    code, stdout, err = cli(
        capsys, "predict", str(comps), "--processing", "wrought", "--grain-size", "5",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "grain size 5 µm" in stdout + err  # the run header
    assert pl.read_csv(out)["grain_size_um"].to_list() == [5.0]
