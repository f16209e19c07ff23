"""Parsing, canonical form and value semantics of Composition."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hea_screen import Composition, CompositionError, parse
from hea_screen.compositions.composition import SCALE

METALS = ["Al", "Co", "Cr", "Cu", "Fe", "Mn", "Mo", "Nb", "Ni", "Ta", "Ti", "V", "W", "Zr"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Co1 Cr1 Fe1 Ni1", "Co0.25 Cr0.25 Fe0.25 Ni0.25"),
        ("CoCrFeNi", "Co0.25 Cr0.25 Fe0.25 Ni0.25"),
        ("Co20Cr20Fe20Mn20Ni20", "Co0.2 Cr0.2 Fe0.2 Mn0.2 Ni0.2"),
        ("(CoCrFeNi)90Al10", "Al0.1 Co0.225 Cr0.225 Fe0.225 Ni0.225"),
        ("Al0.5CoCrFeNi", "Al0.111111 Co0.222223 Cr0.222222 Fe0.222222 Ni0.222222"),
        ("Fe0.620C0.000953Mn0.000521", "C0.001534 Fe0.997628 Mn0.000838"),
        ("Cu1 Mn1 Ni1 Sn0.053", "Cu0.327547 Mn0.327547 Ni0.327546 Sn0.01736"),
        ("CoCo Cr", "Co0.666667 Cr0.333333"),
        ("W", "W1"),
        ("[(CoCr)50Fe50]80Ni20", "Co0.2 Cr0.2 Fe0.4 Ni0.2"),
        ("C1e-3Fe", "C0.000999 Fe0.999001"),
    ],
)
def test_notations(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


def test_value_semantics() -> None:
    assert parse("Co2Cr2Fe2") == parse("FeCrCo")
    assert hash(parse("Co2Cr2Fe2")) == hash(parse("FeCrCo"))
    assert len({parse("CoCrFeNi"), parse("Ni25Fe25Cr25Co25"), parse("Co1 Cr1 Fe1 Ni1")}) == 1
    assert parse("CoCr") != parse("Co2Cr")
    assert repr(parse("CoNi")) == "Composition('Co0.5 Ni0.5')"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty composition"),
        ("   ", "empty composition"),
        ("XxCo", "unknown element symbol 'Xx'"),
        ("Co0Cr", "amount of Co is 0"),
        ("Co-1Cr", "amount of Co is -1"),
        ("(CoCr", "unbalanced parentheses"),
        ("CoCr)", "unbalanced parentheses"),
        ("Co nan Cr", "amount of Co is nan"),
        ("Co inf", "amount of Co is inf"),
        ("Co#Cr", "unexpected character '#'"),
        ("co cr", "unexpected character 'c'"),
        ("()Co", "empty group"),
        ("Co1e-9Cr", "below the resolution"),
    ],
)
def test_bad_input_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(CompositionError, match=message) as info:
        parse(text)
    assert isinstance(info.value, ValueError)
    if text.strip():
        assert repr(text) in str(info.value)


def test_non_string_and_nan_amounts() -> None:
    with pytest.raises(CompositionError, match="must be text"):
        parse(float("nan"))  # type: ignore[arg-type]
    with pytest.raises(CompositionError, match="finite"):
        Composition.from_amounts({"Co": float("nan")})
    with pytest.raises(CompositionError, match="empty"):
        Composition.from_amounts({})


amounts = st.dictionaries(
    st.sampled_from(METALS), st.integers(min_value=1, max_value=10_000), min_size=1, max_size=8
)


@given(amounts, st.permutations(range(8)), st.integers(min_value=1, max_value=1000))
def test_order_and_scale_invariance(amts: dict[str, int], perm: list[int], scale: int) -> None:
    items = list(amts.items())
    order = [i for i in perm if i < len(items)]
    shuffled = "".join(f"{items[i][0]}{items[i][1]}" for i in order)
    scaled = " ".join(f"{el}{n * scale}" for el, n in items)
    a, b = parse(shuffled), parse(scaled)
    assert a == b and hash(a) == hash(b) and str(a) == str(b)


@given(amounts)
def test_canonical_round_trip_and_exact_sum(amts: dict[str, int]) -> None:
    c = parse("".join(f"{el}{n}" for el, n in amts.items()))
    assert sum(c.micro) == SCALE
    assert list(c.elements) == sorted(c.elements)
    assert parse(str(c)) == c
    assert abs(sum(c.fractions.values()) - 1) < 1e-9


@given(st.floats(min_value=1e-3, max_value=1e3), st.floats(min_value=1e-3, max_value=1e3))
def test_decimal_amounts_are_exact(a: float, b: float) -> None:
    c = parse(f"Co{a!r}Ni{b!r}")
    expected_co = a / (a + b)
    assert abs(c.fractions["Co"] - expected_co) <= 1e-6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Co1e9999999Fe", r"exponents must lie between -30 and 30"),
        ("Co1e-9999999Fe", r"exponents must lie between -30 and 30"),
        ("Co" + "1" * 31 + "Fe", r"has 31 digits .*at most 30 digits"),
        ("(" * 21 + "Co" + ")" * 21, r"nested deeper than 20 levels"),
        ("Co٣Fe", r"non-ASCII digit '٣' \(U\+0663\) at position 2 .*ASCII digits 0-9 only"),
        ("Co１Fe２", r"non-ASCII digit '１' \(U\+FF11\)"),
        ("Co2.５Fe", r"non-ASCII digit '５'"),
    ],
)
def test_limits_and_non_ascii_digits_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(CompositionError, match=message) as info:
        parse(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "(" * 1000 + "Co" + ")" * 1000,  # was a RecursionError
        "Co" + "1" * 4301,  # was Python's int digit limit (a plain ValueError)
        "Co" * 1001,
    ],
)
def test_overlong_text_is_refused_with_its_length(text: str) -> None:
    with pytest.raises(CompositionError, match=rf"{len(text)} characters.*at most 2000"):
        parse(text)


def test_limits_admit_what_they_should() -> None:
    assert parse("(" * 20 + "CoNi" + ")" * 20) == parse("CoNi")
    assert parse("Co" + "1" * 30 + "Ni" + "1" * 30) == parse("CoNi")
    assert parse("Co1e30Ni1e30") == parse("Co1e-30Ni1e-30")
    assert parse("Co1E+3Ni1e3") == parse("CoNi")


def test_string_amounts_follow_the_parser_rules() -> None:
    assert Composition.from_amounts({"Co": "1e-1", "Ni": " 0.1 "}) == parse("CoNi")
    with pytest.raises(CompositionError, match="exponents must lie between"):
        Composition.from_amounts({"Co": "1e9999999", "Ni": 1})
    for amount in ("٣", "1_000"):
        with pytest.raises(CompositionError, match="ASCII digits 0-9"):
            Composition.from_amounts({"Co": amount, "Ni": 1})


@pytest.mark.parametrize(
    ("text", "position"), [("1", 0), ("0.5", 0), ("2(CoFe)", 0), ("Co 1 2", 5)]
)
def test_a_number_without_an_element_is_named_as_such(text: str, position: int) -> None:
    # issue 19 item 16: "1" was reported as a non-ASCII digit '1' (U+0031)
    message = rf"number without an element at position {position}"
    with pytest.raises(CompositionError, match=message):
        parse(text)
