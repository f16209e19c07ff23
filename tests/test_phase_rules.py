"""Empirical phase rules (Yang & Zhang 2012; Guo et al. 2011) on every screened candidate."""

from __future__ import annotations

import math

import polars as pl
import pytest

from hea_screen.cli import main
from hea_screen.compositions.phase_rules import PHASE_FLAG_COLUMNS, phase_flags


def flags(*texts: str) -> dict[str, dict[str, object]]:
    frame = phase_flags(pl.DataFrame({"composition": list(texts)}))
    return {row["composition"]: row for row in frame.iter_rows(named=True)}


def test_omega_in_the_published_units():
    # Cantor alloy: T_m ~ 1792 K, dS_mix = R ln 5 = 13.38 J/mol/K, dH_mix = -4.16 kJ/mol
    # -> Omega ~ 5.8 (Yang & Zhang report 5.8); mixing kJ and J would be off by 1000
    cantor = flags("CoCrFeMnNi")["CoCrFeMnNi"]
    assert cantor["omega"] == pytest.approx(5.8, abs=0.1)
    assert cantor["delta_r"] == pytest.approx(3.27, abs=0.05)
    assert cantor["solid_solution"] is True


def test_vec_rule_classes_known_alloys():
    got = flags("CoCrFeMnNi", "CoCrFeNi", "NbMoTaW", "AlCoCrFeNi")
    assert got["CoCrFeMnNi"]["vec_phase"] == "FCC"  # VEC 8.0 exactly: the rule's boundary
    assert got["CoCrFeNi"]["vec_phase"] == "FCC"
    assert got["NbMoTaW"]["vec_phase"] == "BCC"
    assert got["AlCoCrFeNi"]["vec_phase"] == "FCC+BCC"  # VEC 7.2


def test_intermetallic_formers_fail_the_solid_solution_rule():
    got = flags("CuZr", "Ni3Al", "Fe")
    assert got["CuZr"]["solid_solution"] is False  # Omega 0.44, delta 11 %
    assert got["Ni3Al"]["solid_solution"] is False
    assert math.isinf(got["Fe"]["omega"]) and got["Fe"]["solid_solution"] is True  # dH = 0


def test_screen_output_carries_the_flags(capsys, tmp_path):
    out = tmp_path / "ranked.csv"
    args = ["--elements", "Co,Cr,Fe,Ni", "--step", "0.25", "--workers", "1", "--quiet"]
    assert main([*args, "--top", "5", "--show", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    table = pl.read_csv(out)
    assert set(PHASE_FLAG_COLUMNS) <= set(table.columns)
    assert table["phase_fcc_prob"].is_between(0, 1).all()
    assert table["vec_phase"].is_in(["FCC", "BCC", "FCC+BCC"]).all()


def test_risk_flags_of_known_alloys():
    got = flags("NbMoTaW", "HfNbTaTiZr", "CoCrFeMnNi", "CoCrFeNiV", "AlCoCrFeNi")
    # Sheikh et al. 2016: NbMoTaW (VEC 5.5) tensile-brittle, HfNbTaTiZr (VEC 4.4) ductile
    assert got["NbMoTaW"]["brittle_risk"] is True and got["NbMoTaW"]["risk_flags"] == "brittle"
    assert got["HfNbTaTiZr"]["brittle_risk"] is False
    # Tsai et al. 2013: CoCrFeNiV (VEC 7.6, V-bearing) forms sigma; Cantor (VEC 8) does not
    assert got["CoCrFeNiV"]["sigma_risk"] is True
    assert got["CoCrFeMnNi"]["risk_flags"] == ""
    # Yurchenko et al. 2017: delta 5.8 % > 5 %
    assert got["AlCoCrFeNi"]["laves_risk"] is True


def test_plan_excludes_flagged_candidates(tmp_path, capsys):
    cands = tmp_path / "c.csv"
    pl.DataFrame({"composition": ["NbMoTaW", "HfNbTaTiZr", "NbMoTa", "HfNbTiZr"]}).write_csv(cands)
    out = tmp_path / "plan.csv"
    args = ["plan", str(cands), "-k", "2", "--phase", "any", "--min-distance", "0"]
    assert main([*args, "--exclude-flags", "brittle,laves", "--out", str(out)]) == 0
    picked = pl.read_csv(out)
    assert picked["risk_flags"].fill_null("").str.contains("brittle").sum() == 0
    assert main([*args, "--exclude-flags", "cracks", "--out", str(out)]) == 2
    assert "unknown risk flag 'cracks'" in capsys.readouterr().err
