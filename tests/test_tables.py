"""Printed tables: as wide as the terminal (COLUMNS), values rounded with units."""

from __future__ import annotations

import polars as pl
import pytest

from hea_screen.cli import main
from hea_screen.cli.tables import Column, render, terminal_width
from hea_screen.screening.columns import at_pct, interval

SMALL = ["--elements", "Co,Cr,Fe,Mn,Ni", "--step", "0.1", "--workers", "1", "--quiet"]


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_render_keeps_columns_by_priority_and_never_exceeds_the_width():
    columns = [
        Column("rank", ["1", "2"], 0, right=True),
        Column("composition\nat.%", ["Co20 Cr20 Fe20 Mn20 Ni20", "Co25 Cr25 Fe25 Ni25"], 0,
               cut_to=12),
        Column("UTS, MPa\nmean [90 %]", ["710 [213–1,208]", "591 [0–1,233]"], 1, right=True),
        Column("notes", ["x" * 60, "y"], 2),
    ]
    wide = render(columns, 120)
    assert widest(wide) <= 120 and "x" * 60 in wide and "not shown" not in wide
    narrow = render(columns, 60)
    assert widest(narrow) <= 60 and "710 [213–1,208]" in narrow
    assert "not shown at width 60: notes" in narrow  # says what it left out
    tiny = render(columns, 26)  # identity columns are cut, never dropped
    assert widest(tiny) <= 26 and "…" in tiny and "1" in tiny


def test_width_follows_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "123")
    assert terminal_width() == 123


def test_values_are_rounded_with_units():
    assert interval(710.4, 212.6, 1208.2, "MPa") == "710 [213–1,208]"
    assert interval(65.9, 1.57, 130.2, "%") == "66 [1.6–130]"
    assert at_pct("Co0.25 Cr0.178572 Fe0.285714 Ni0.285714") == "Co25 Cr17.86 Fe28.57 Ni28.57"


@pytest.mark.parametrize("width", [100, 80])
def test_screen_plan_and_predict_print_tables_that_fit(tmp_path, capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    out_file = tmp_path / "screen.parquet"
    assert main([*SMALL, "--top", "200", "--show", "10", "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert widest(out) <= width and "rank" in out and "[90 %]" in out
    assert main(["plan", str(out_file), "-k", "4", "--out", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert widest(out) <= width and "pick" in out and "expected gain" in out
    mine = tmp_path / "mine.csv"
    pl.DataFrame({"composition": ["CoCrFeNi", "CoCrFeMnNi"]}).write_csv(mine)
    assert main(["predict", str(mine)]) == 0
    out = capsys.readouterr().out
    assert widest(out) <= width and "Co25 Cr25 Fe25 Ni25" in out
    assert "shape:" not in out and "┌" not in out  # a formatted table, not a raw frame


def test_a_screen_without_out_says_how_to_save_it(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main([*SMALL, "--top", "30", "--show", "5"]) == 0
    err = capsys.readouterr().err
    assert "ranked 30 of" in err and "shown 5" in err
    assert "not saved: add --out FILE (.csv, .parquet or .json) to keep all 30 rows" in err
