"""The Table 1 features: known values, cross-check against a per-row textbook script."""

import math

import numpy as np
import polars as pl
import pytest

import hea_screen.compositions.features as features_module
from benchmarks.featurize_bench import make_table
from benchmarks.reference_features import features_row, load_tables
from hea_screen import FEATURE_NAMES, CompositionTable, ElementDataError, featurize, parse
from hea_screen.compositions.composition import Composition
from hea_screen.compositions.elements import column_sources, mixing_enthalpy, supported_elements
from hea_screen.datasets.sources import load_mpea, load_paper_dataset
from hea_screen.errors import CompositionError, UserInputError

PAPER_GENERATOR = [
    "Li",
    "Be",
    "B",
    "C",
    "N",
    "Mg",
    "Al",
    "Si",
    "Sc",
    "Ti",
    "V",
    "Cr",
    "Mn",
    "Fe",
    "Co",
    "Ni",
    "Cu",
    "Zn",
    "Y",
    "Zr",
    "Nb",
    "Mo",
    "Pd",
    "Ag",
    "Sn",
    "Te",
    "Ba",
    "Hf",
    "Ta",
    "W",
    "Re",
    "Au",
]


def test_cantor_alloy_known_values() -> None:
    row = featurize(["CoCrFeMnNi"]).row(0, named=True)
    assert row["composition"] == "Co0.2 Cr0.2 Fe0.2 Mn0.2 Ni0.2"
    assert row["vec"] == pytest.approx(8.0)
    assert row["s_mix"] == pytest.approx(13.38, abs=0.005)
    assert row["h_mix"] == pytest.approx(-4.16, abs=0.005)
    assert row["delta_chi"] == pytest.approx(0.14, abs=0.005)
    assert row["delta_r"] == pytest.approx(3.3, abs=0.05)


def test_columns_and_types() -> None:
    df = featurize(["CoCrFeNi", "NbMoTaW", "W"])
    assert df.columns == ["composition", *FEATURE_NAMES]
    assert all(df[c].dtype == pl.Float64 for c in FEATURE_NAMES)
    pure = df.row(2, named=True)
    assert pure["s_mix"] == 0 and pure["h_mix"] == 0 and pure["delta_r"] == 0


def test_element_order_and_scale_do_not_matter() -> None:
    a = featurize(["Al0.5CoCrFeNi"]).drop("composition")
    b = featurize(["Ni2Fe2Cr2Co2Al1"]).drop("composition")
    assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-12)


def test_table_and_list_paths_agree() -> None:
    texts = ["CoCrFeNi", "Al0.3CoCrFeNi", "HfNbTaTiZr", "CuNi"]
    table = CompositionTable.from_compositions(texts)
    assert table.canonical_texts().to_list() == [str(parse(t)) for t in texts]
    assert featurize(table).equals(featurize(texts))
    single = pl.concat([featurize([t]) for t in texts])
    assert np.allclose(
        single.drop("composition").to_numpy(), featurize(texts).drop("composition").to_numpy()
    )


def test_delta_chi_pauling_identity() -> None:
    df = featurize(["CoCrFeMnNi", "AlTiVNb", "BCFe"])
    assert np.allclose(df["delta_chi_pauling"], 2 * df["delta_chi"] ** 2)


def _cross_check(compositions: list[str]) -> float:
    props, pairs = load_tables()
    ours = featurize(compositions)
    worst = 0.0
    for text, row in zip(compositions, ours.iter_rows(named=True)):
        ref = features_row(parse(text).fractions, props, pairs)
        for name in FEATURE_NAMES:
            scale = max(1.0, abs(ref[name]))
            worst = max(worst, abs(row[name] - ref[name]) / scale)
    return worst


@pytest.mark.parametrize("target", ["uts_mpa", "elongation_pct"])
def test_cross_check_paper_datasets(target: str) -> None:
    texts = load_paper_dataset(target)["composition"].to_list()
    assert _cross_check(texts) < 1e-9


def test_cross_check_mpea() -> None:
    texts = load_mpea()["formula"].unique().sort().to_list()
    assert _cross_check(texts) < 1e-9


def test_element_coverage() -> None:
    mpea_elements = {el for t in load_mpea()["formula"].unique() for el in parse(t).elements}
    assert (mpea_elements | set(PAPER_GENERATOR)) <= set(supported_elements())
    assert set(column_sources()) >= {"vec", "work_function_ev", "metallic_radius_pm"}
    for info in column_sources().values():
        assert info["source"]


def test_standard_element_values() -> None:
    from hea_screen.compositions.elements import element_table

    t = element_table()
    # VEC of 5d elements (the paper's release had Hf 8, Ta 9, W 10, Au 5).
    assert [t[e]["vec"] for e in ("Hf", "Ta", "W", "Au")] == [4, 5, 6, 11]
    # Work functions are about 4.5-4.7 eV for Cu and Cr (the release had 1.0 and 0.92).
    assert 4.4 < t["Cu"]["work_function_ev"] < 4.8 and 4.3 < t["Cr"]["work_function_ev"] < 4.8
    assert mixing_enthalpy("Co", "Cr") == mixing_enthalpy("Cr", "Co") == pytest.approx(-4)


def test_missing_data_errors() -> None:
    with pytest.raises(ElementDataError, match="no property data for U"):
        featurize(["UFe"])
    with pytest.raises(ElementDataError, match="Fe-Te"):
        featurize(["FeTe", "CoNi"])
    assert math.isfinite(featurize(["Te"])["vec"][0])


def _wide_palette_compositions(rows: int, seed: int = 0) -> list[Composition]:
    """Random alloys of 1 to 6 elements drawn from every element with ΔH_ij data (34).

    Pure N is left out: its shear modulus is 0, where the shear-modulus ratios are 0/0.
    """
    rng = np.random.default_rng(seed)
    palette = [el for el in supported_elements() if el != "Te"]
    comps = []
    for _ in range(rows):
        size = rng.integers(1, 7)
        chosen = rng.choice([el for el in palette if size > 1 or el != "N"], size, replace=False)
        amounts = rng.dirichlet(np.ones(len(chosen))) + rng.choice([0.0, 1e-6], len(chosen))
        comps.append(Composition.from_amounts(dict(zip(chosen.tolist(), amounts))))
    return comps


def test_wide_palette_slot_path_matches_reference() -> None:
    comps = _wide_palette_compositions(400)
    table = CompositionTable.from_compositions(comps)
    assert len(table.elements) == 34
    assert features_module._prefers_slots(table.slots())  # rows of <= 6 of 34 elements
    assert (table.micro == 0).sum(axis=1).max() > 34 - 6  # rows shorter than the slots
    ours = featurize(table)
    assert ours["composition"].to_list() == [str(c) for c in comps]
    assert _cross_check([str(c) for c in comps]) < 1e-9


def test_wide_palette_slot_and_dense_moments_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    # The two paths differ only in the order of the sums: the moments agree to rounding.
    # (Features such as delta_r = 100 sqrt(Σx r²/r̄² - 1) amplify that rounding where the
    # two terms nearly cancel; the cross-check against the reference bounds them.)
    table = CompositionTable.from_compositions(_wide_palette_compositions(300, seed=1))
    slots = table.slots()
    gathered = features_module._moments(table, slots)
    monkeypatch.setattr(features_module, "_prefers_slots", lambda _slots: False)
    dense = features_module._moments(table, slots)
    assert gathered.keys() == dense.keys()
    for name, values in dense.items():
        assert np.allclose(gathered[name], values, rtol=1e-12, atol=1e-12), name


def test_wide_palette_missing_pair_error() -> None:
    texts = [str(c) for c in _wide_palette_compositions(200, seed=2)]
    with pytest.raises(ElementDataError, match=r"Fe-Te \(needed by Fe0.5 Te0.5\)"):
        featurize([*texts, "FeTe", "TeW"])


def test_wide_palette_many_blocks() -> None:
    # 100,000 rows span several row blocks, which may run on several threads: every row
    # comes out as it does on its own.
    table = make_table("random-5-of-34", 100_000, seed=3)
    rows = np.random.default_rng(4).choice(len(table), size=300, replace=False)
    assert featurize(table)[rows].equals(featurize(table.take(rows)))


def test_undefined_feature_is_refused_not_nan() -> None:
    # the shear modulus of N is tabulated as 0, so pure N divides 0 by a mean of 0
    with pytest.raises(
        ElementDataError,
        match=r"row 1: N1 — feature modulus_mismatch, shear_modulus_difference is not finite",
    ):
        featurize(["CoNi", "N"])
    assert featurize(["Fe0.99N0.01"]).select(pl.all_horizontal(pl.col(FEATURE_NAMES).is_finite()))[
        0, 0
    ]


def test_one_composition_and_refused_input_types() -> None:
    one = featurize("CNB")
    assert one["composition"].to_list() == ["B0.333334 C0.333333 N0.333333"]
    assert featurize(parse("CoNi")).equals(featurize(["CoNi"]))
    assert featurize(("CoNi", "FeNi")).equals(featurize(pl.Series(["CoNi", "FeNi"])))
    refused = [
        ({"Co": 1, "Ni": 1}, r"got dict \{'Co': 1, 'Ni': 1\}: a mapping is not a list"),
        ({"CoNi", "FeNi"}, r"got set .*no row order"),
        (frozenset({"CoNi"}), r"got frozenset .*no row order"),
        (b"CoNi", r"got bytes b'CoNi': decode bytes"),
        (42, r"got int 42: it is not iterable"),
        (pl.DataFrame({"composition": ["CoNi"]}), r"got DataFrame: .*frame\['composition'\]"),
    ]
    for value, message in refused:
        with pytest.raises(UserInputError, match=r"compositions must be a list .*" + message):
            featurize(value)


def test_bad_rows_are_named_by_number_and_text() -> None:
    texts = ["CoCrFeMnNi"] * 100_000
    texts[53172] = "Co1Xx"
    with pytest.raises(
        CompositionError, match=r"^row 53172: 'Co1Xx' — unknown element symbol 'Xx'"
    ):
        featurize(texts)
    texts[53172] = b"CoNi"
    with pytest.raises(CompositionError, match=r"^row 53172: b'CoNi' — composition must be text"):
        featurize(texts)
    with pytest.raises(ElementDataError, match=r"^row 2: Co0.5 U0.5 — no property data for U"):
        featurize(["CoNi", "FeNi", "CoU"])
    with pytest.raises(ElementDataError, match=r"^row 1: no mixing enthalpy for the pair Fe-Te"):
        featurize(["CoNi", "FeTe"])
