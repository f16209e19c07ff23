"""``hea-screen predict FILE`` with the shipped model: formats, column, order, bad rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from hea_screen import load_model, parse
from hea_screen.cli import main
from hea_screen.conditions import Condition, Processing, TestType
from hea_screen.screening.engine import result_columns
from hea_screen.screening.predict_output import rank_rows
from hea_screen.screening.ranking import Ranking

TEXTS = ["CoCrFeNi", "Al0.5CoCrFeNi", "Co20Cr20Fe20Mn20Ni20", "(CoCrFeNi)90Al10", "Co1 Cr1 Ni1"]


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    """The same compositions as a text file, a CSV (column ``formula``) and a Parquet file."""
    text = tmp_path / "alloys.txt"
    text.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    frame = pl.DataFrame({"name": [f"a{i}" for i in range(len(TEXTS))], "formula": TEXTS})
    csv, parquet = tmp_path / "alloys.csv", tmp_path / "alloys.parquet"
    frame.write_csv(csv)
    frame.write_parquet(parquet)
    return {"txt": text, "csv": csv, "parquet": parquet}


def predict(tmp_path: Path, *args: str) -> pl.DataFrame:
    out = tmp_path / "out.parquet"
    assert main(["predict", *args, "--out", str(out), "--show", "0"]) == 0
    return pl.read_parquet(out)


def test_every_format_gives_the_screen_columns_and_the_predictor_values(files, tmp_path):
    frames = [
        predict(tmp_path, str(files["txt"])),
        predict(tmp_path, str(files["csv"]), "--column", "formula"),
        predict(tmp_path, str(files["parquet"]), "--column", "formula"),
    ]
    for frame in frames[1:]:  # the tables keep their other column, beside the row number
        assert frame.columns[:2] == ["row", "name"] and frame["name"].to_list()[:2] == ["a0", "a1"]
        assert frame.drop("name").equals(frames[0])
    frame = frames[0]
    assert frame.columns[: len(result_columns(Ranking())) + 1] == [
        "row", *result_columns(Ranking())
    ]
    assert frame["row"].to_list() == [1, 2, 3, 4, 5]
    assert frame["composition"].to_list() == [str(parse(t)) for t in TEXTS]
    direct = load_model().predict(TEXTS, Condition(), ["uts_tension_mpa"])
    assert frame["uts_tension_mpa_mean"].to_list() == pytest.approx(
        direct["uts_tension_mpa_mean"].to_list()
    )


def test_condition_flags_and_ranked_order(files, tmp_path):
    frame = predict(
        tmp_path, str(files["txt"]), "--test", "compression", "--temperature", "600",
        "--processing", "anneal", "--order", "ranked", "--objective", "ys",
    )
    assert frame["rank"].to_list() == [1, 2, 3, 4, 5]
    assert frame["score"].is_sorted(descending=True)
    assert sorted(frame["row"].to_list()) == [1, 2, 3, 4, 5]
    assert set(frame["test_type"]) == {"compression"} and set(frame["temperature_c"]) == {600.0}
    direct = load_model().predict(
        TEXTS, Condition(TestType.COMPRESSION, 600.0, Processing.parse("anneal")),
        ["ys_compression_mpa"],
    )
    by_row = frame.sort("row")
    assert by_row["ys_compression_mpa_mean"].to_list() == pytest.approx(
        direct["ys_compression_mpa_mean"].to_list()
    )


def test_a_bad_row_is_named_before_any_model_runs(tmp_path, capsys):
    source = tmp_path / "mixed.csv"
    pl.DataFrame({"composition": ["CoCrFeNi", "CoCrXx", "HCo", "CoNi"]}).write_csv(source)
    out = tmp_path / "out.csv"
    assert main(["predict", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "row 2: 'CoCrXx'" in err and "unknown element symbol 'Xx'" in err
    assert "--skip-bad" in err and "Traceback" not in err
    assert not out.exists()


def test_skip_bad_writes_the_bad_rows_to_a_side_file(tmp_path, capsys):
    source = tmp_path / "mixed.txt"
    source.write_text("CoCrFeNi\nCoCrXx\n\nHCo\nCoNi\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    frame = predict(tmp_path, str(source), "--skip-bad", "--bad-rows", str(bad))
    assert frame["row"].to_list() == [1, 5]
    rows = pl.read_csv(bad)
    assert rows.columns == ["row", "text", "reason"]
    assert rows["row"].to_list() == [2, 3, 4]
    assert rows["text"].to_list()[0] == "CoCrXx" and "no property data for H" in rows["reason"][2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--column", "nope"], "has no column 'nope'"),
        (["--order", "random"], "invalid choice"),
    ],
)
def test_bad_options_are_clean_errors(files, capsys, args, message):
    try:
        status = main(["predict", str(files["csv"]), *args])
    except SystemExit as exc:  # argparse's own usage errors
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_chunks_and_text_blocks_do_not_change_the_output(tmp_path, monkeypatch):
    """A file read, parsed and predicted in chunks of 2 rows, its text decoded in blocks of
    3 bytes (lines and "\\r\\n" cut across blocks, a non-ASCII line), gives the rows of one
    chunk; duplicated rows rank in row order."""
    lines = [*TEXTS, TEXTS[0], "", "CoCrFeNi", "Co1 Cr1 Ni1"]
    source = tmp_path / "alloys.txt"
    source.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    whole = predict(tmp_path, str(source), "--skip-bad", "--bad-rows", str(tmp_path / "b.csv"))
    assert whole["row"].to_list() == [1, 2, 3, 4, 5, 6, 8, 9]
    monkeypatch.setattr("hea_screen.screening.predict_file._TEXT_BLOCK", 3)
    monkeypatch.setattr("hea_screen.screening.predict_file.CHUNK_ROWS", 2)
    chunked = predict(tmp_path, str(source), "--skip-bad", "--bad-rows", str(tmp_path / "b.csv"))
    assert chunked.equals(whole)
    same = whole.filter(pl.col("composition") == str(parse("CoCrFeNi"))).sort("row")
    assert same["row"].to_list() == [1, 6, 8] and same["rank"].is_sorted()
    assert pl.read_csv(tmp_path / "b.csv")["row"].to_list() == [7]


def test_ranks_by_position_are_those_of_the_sorted_rows(tmp_path, monkeypatch):
    """Ranks attached by position over parts of 2 rows (no join on ``row``) are the order
    of ``(score descending, composition, row)``, repeated alloys in row order."""
    monkeypatch.setattr("hea_screen.screening.predict_file.CHUNK_ROWS", 2)
    source = tmp_path / "alloys.txt"
    source.write_text("\n".join([*TEXTS, TEXTS[2], "Co1 Fe1", TEXTS[2]]) + "\n", "utf-8")
    frame = predict(tmp_path, str(source))
    keys = ["score", "composition", "row"]
    by_score = frame.sort(keys, descending=[True, False, False], nulls_last=True)
    assert frame.sort("rank")["row"].to_list() == by_score["row"].to_list()
    assert frame["rank"].sort().to_list() == list(range(1, frame.height + 1))


def test_streamed_csv_equals_the_parquet_rows(files, tmp_path):
    out = tmp_path / "out.csv"
    assert main(["predict", str(files["txt"]), "--out", str(out), "--show", "0"]) == 0
    parquet = predict(tmp_path, str(files["txt"]))
    assert pl.read_csv(out).columns == parquet.columns
    assert pl.read_csv(out)["composition"].to_list() == parquet["composition"].to_list()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hea-predict-")]


def test_the_users_columns_stay_beside_the_predictions(tmp_path, capsys, monkeypatch):
    source = tmp_path / "mine.csv"
    pl.DataFrame(
        {"sample": ["S-7", "S-9"], "composition": ["CoCrFeNi", "CoCrFeMnNi"],
         "rank": ["their own", "rank column"], "note": ["arc melted", ""]}
    ).write_csv(source)
    frame = predict(tmp_path, str(source), "--order", "ranked")
    assert frame.columns[:4] == ["row", "sample", "input_rank", "note"]
    by_row = frame.sort("row")
    assert by_row["sample"].to_list() == ["S-7", "S-9"]  # matched by row, whatever the order
    assert by_row["input_rank"].to_list() == ["their own", "rank column"]
    assert by_row["composition"].to_list() == [str(parse("CoCrFeNi")), str(parse("CoCrFeMnNi"))]
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["predict", str(source)]) == 0
    out = capsys.readouterr().out
    assert "S-7" in out and max(len(line) for line in out.splitlines()) <= 100


def test_batches_predicted_together_give_the_values_of_one_call_each(tmp_path, monkeypatch):
    """Whole batches of 128 rows go to the model in one call, the short last batch alone:
    every value equals that of one call per batch."""
    elements = ["Al", "Co", "Cr", "Fe", "Ni", "Ti", "Mn"]
    lines = [
        "".join(f"{el}{1 + (i * 7 + j) % 5}" for j, el in enumerate(elements[: 3 + i % 4]))
        for i in range(2 * 128 + 41)
    ]
    source = tmp_path / "many.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    together = predict(tmp_path, str(source), "--batch-size", "128")
    monkeypatch.setattr("hea_screen.screening.partition.CALL_ROWS", 128)
    one_each = predict(tmp_path, str(source), "--batch-size", "128")
    assert together.equals(one_each) and together.height == len(lines)


@pytest.mark.parametrize("order", ["input", "ranked"])
def test_many_parts_write_the_bytes_of_one_part(tmp_path, monkeypatch, order):
    """Parts of 2 rows and rank blocks of 3 (the output written part by part, the rank
    order block by block) give the CSV and Parquet bytes of one part: repeated alloys
    (equal scores) in row order, the user's columns (one named ``rank``) beside their rows."""
    texts = [*TEXTS, TEXTS[2], "Co1 Fe1", TEXTS[2], TEXTS[0], "CoFe", TEXTS[2]]
    source = tmp_path / "mine.csv"
    pl.DataFrame(
        {"sample": [f"=S{i}" for i in range(len(texts))], "composition": texts,
         "rank": [str(i % 3) for i in range(len(texts))]}
    ).write_csv(source)

    def outputs(name: str) -> list[bytes]:
        paths = [tmp_path / f"{name}.csv", tmp_path / f"{name}.parquet"]
        for out in paths:
            args = ["predict", str(source), "--order", order, "--out", str(out), "--show", "0"]
            assert main(args) == 0
        return [p.read_bytes() for p in paths]

    one = outputs("one")
    monkeypatch.setattr("hea_screen.screening.predict_file.CHUNK_ROWS", 2)
    monkeypatch.setattr("hea_screen.screening.predict_output.RANK_BLOCK", 3)
    assert outputs("many") == one
    frame = pl.read_parquet(tmp_path / "many.parquet")
    same = frame.filter(pl.col("composition") == str(parse(TEXTS[2]))).sort("rank")
    assert same["row"].to_list() == [3, 6, 8, 11]
    assert frame.sort("row")["sample"].to_list() == [f"=S{i}" for i in range(len(texts))]


def test_ranks_read_compositions_only_to_break_ties(tmp_path):
    """The ranks of parts (rows with equal, NaN, signed zero and missing scores across
    parts) are the positions of polars' sort of ``(score descending, nulls last;
    composition; row)``."""
    nan, inf = float("nan"), float("inf")
    frame = pl.DataFrame(
        {
            "row": list(range(1, 15)),
            "score": [0.5, None, 0.9, 0.5, None, 0.1, 0.5, 0.9, 0.2, nan, 0.0, -0.0, nan, -inf],
            "composition": [*"NCFCACNCTNAFVC"],
        }
    )
    parts = []
    for i, start in enumerate(range(0, frame.height, 4)):
        parts.append(tmp_path / f"part-{i}.parquet")
        frame.slice(start, 4).write_parquet(parts[-1])
    ranks = rank_rows(parts)
    by_sort = frame.sort(
        ["score", "composition", "row"], descending=[True, False, False], nulls_last=True
    )
    assert frame.with_columns(rank=ranks).sort("rank")["row"].to_list() == by_sort["row"].to_list()
    assert by_sort["row"].to_list() == [10, 13, 8, 3, 4, 1, 7, 9, 6, 11, 12, 14, 5, 2]
