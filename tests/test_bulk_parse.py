"""The bulk parser gives exactly the full parser's compositions and errors, row by row."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hea_screen.compositions.bulk_parse import parse_texts
from hea_screen.compositions.composition import PERIODIC_TABLE, parse
from hea_screen.compositions.table import CompositionTable
from hea_screen.datasets.sources import load_mpea
from hea_screen.errors import CompositionError

SYMBOLS = sorted(PERIODIC_TABLE)
AMOUNTS = st.one_of(
    st.just(""),
    st.integers(min_value=0, max_value=999_999).map(str),
    st.builds(
        "{}.{}".format,
        st.integers(min_value=0, max_value=999_999),
        st.text(alphabet="0123456789", min_size=1, max_size=7),
    ),
    st.sampled_from(["1e-3", "1E2", ".5", "1.", "0", "0.0000001", "0000.25"]),
)
TOKEN = st.builds("{}{}".format, st.sampled_from([*SYMBOLS, "Xx", "E", "co"]), AMOUNTS)
FORMULA = st.builds(
    lambda tokens, sep: sep.join(tokens),
    st.lists(TOKEN, min_size=0, max_size=30),
    st.sampled_from(["", " ", "  ", "\t"]),
)
TEXTS = st.one_of(FORMULA, st.builds("({}){}".format, FORMULA, AMOUNTS), st.text(max_size=20))


def full_parser(text: str) -> dict[str, int] | str:
    """``parse(text)`` as {element: millionths}, or its error message."""
    try:
        comp = parse(text)
    except CompositionError as error:
        return str(error)
    return dict(zip(comp.elements, comp.micro))


def bulk(texts: list[str]) -> list[dict[str, int] | str]:
    """``parse_texts(texts)`` row by row in the same form as :func:`full_parser`."""
    parsed = parse_texts(texts)
    out: list[dict[str, int] | str] = [""] * len(texts)
    for i, row in enumerate(parsed.rows):
        out[row] = {parsed.elements[j]: int(m) for j, m in enumerate(parsed.micro[i]) if m}
    for row, _, reason in parsed.bad.iter_rows():
        out[row] = reason
    return out


def test_every_mpea_formula_parses_as_the_full_parser_does():
    texts = load_mpea()["formula"].cast(pl.Utf8).to_list()
    assert len(texts) > 1000
    assert bulk(texts) == [full_parser(t) for t in texts]


def test_common_notations_and_refusals_match_the_full_parser():
    texts = [
        "Co1 Cr1 Fe1 Ni1", "CoCrFeNi", "Al0.5CoCrFeNi", "Co20Cr20Fe20Mn20Ni20", "CoCrCo",
        "Co999999.999999Ni0.000001", "Co1Ni2Fe3", "Co1E3", "Co 20Cr", "(CoCr)2Ni", "Xx1",
        "Co0", "", "   ", "Co0.0000001Ni1", "Fe0.620C0.000953Mn0.000521", "CoCrFeNi ",
        "FeNi", "AlAl", "TiZrTi0.5", "NiCoNi2Co",
    ]
    assert bulk(texts) == [full_parser(t) for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=40))
def test_generated_texts_parse_as_the_full_parser_does(texts):
    assert bulk(texts) == [full_parser(t) for t in texts]


def test_table_of_texts_names_the_first_bad_row():
    with pytest.raises(CompositionError, match=r"row 2: 'CoXx' — unknown element symbol 'Xx'"):
        CompositionTable.from_compositions(["CoCrFeNi", "Al0.5CoCrFeNi", "CoXx", "Q"])
    table = CompositionTable.from_compositions(["CoCrFeNi", "Al0.5CoCrFeNi", "(CoCr)90Al10"])
    assert table.canonical_texts().to_list() == [
        str(parse(t)) for t in ["CoCrFeNi", "Al0.5CoCrFeNi", "(CoCr)90Al10"]
    ]


def test_tables_parsed_in_slices_equal_one_parse(monkeypatch):
    """``from_compositions`` parses texts by slices (bounded memory): the table, and the row
    named by an error, are those of one parse."""
    from hea_screen.compositions import table as table_module

    texts = ["CoCrFeNi", "Al0.5CoCrFeNi", "W1", "Co20Cr20Fe20Mn20Ni20", "Nb1 Ta1", "Co1 Xx1"]
    whole = CompositionTable.from_compositions(texts[:-1])
    monkeypatch.setattr(table_module, "PARSE_ROWS", 2)
    sliced = CompositionTable.from_compositions(texts[:-1])
    assert sliced.elements == whole.elements and (sliced.micro == whole.micro).all()
    with pytest.raises(CompositionError, match=r"row 5: 'Co1 Xx1'"):
        CompositionTable.from_compositions(texts)
