"""Property-based fuzzing of ``parse``: any text gives a Composition or the project's own
error, within a bounded time per input, and every parsed composition round-trips."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from hea_screen import Composition, parse
from hea_screen.compositions.composition import PERIODIC_TABLE
from hea_screen.errors import UserInputError

#: Per-input time bound: generous for a shared 2-core machine, far below the minutes that an
#: unbounded exponent (``Co1e9999999Fe``) or digit string used to take.
DEADLINE = timedelta(seconds=2)

SYMBOLS = sorted(PERIODIC_TABLE)

#: Pieces of near-valid formulas: element symbols, typos, amounts (plain, exponent, signed,
#: huge, non-finite, Unicode digits), brackets and separators.
NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=10**40).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
    st.builds(
        "{}e{}".format,
        st.integers(min_value=0, max_value=999),
        st.integers(min_value=-(10**8), max_value=10**8),
    ),
    st.sampled_from(["nan", "inf", "-1", "+2", ".5", "1.", "0", "1e-7", "٣", "１", "²", "½"]),
    st.text(alphabet="0123456789", min_size=1, max_size=200),
)
PIECES = st.one_of(
    st.sampled_from(SYMBOLS),
    st.sampled_from(["Xx", "co", "Q", "J", "Zz"]),
    NUMBERS,
    st.sampled_from(["(", ")", "[", "]", " ", "\t", "e", "E", ".", "-", "#", ""]),
)
NEAR_VALID = st.lists(PIECES, max_size=60).map("".join)
NESTED = st.builds(
    lambda depth, inner, amount: "(" * depth + inner + ")" * depth + amount,
    st.integers(min_value=0, max_value=60),
    NEAR_VALID,
    st.sampled_from(["", "2", "0.5", "1e3"]),
)
VALID = st.lists(
    st.tuples(
        st.sampled_from(SYMBOLS),
        st.one_of(
            st.just(""),
            st.integers(min_value=1, max_value=10**6).map(str),
            st.decimals(min_value="0.001", max_value="1000", places=6).map(str),
        ),
    ),
    min_size=1,
    max_size=12,
).map(lambda parts: "".join(el + amount for el, amount in parts))


def parse_or_own_error(text: str) -> Composition | None:
    """``parse(text)``, or None when it raises one of the project's own input errors."""
    try:
        result = parse(text)
    except UserInputError:
        return None
    assert isinstance(result, Composition)
    return result


@settings(deadline=DEADLINE, max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_raises_our_error(text: str) -> None:
    parse_or_own_error(text)


@settings(deadline=DEADLINE, max_examples=300)
@given(st.one_of(NEAR_VALID, NESTED))
def test_near_valid_text_parses_or_raises_our_error(text: str) -> None:
    parse_or_own_error(text)


@settings(deadline=DEADLINE, max_examples=200)
@given(st.one_of(VALID, NEAR_VALID))
def test_canonical_text_round_trips(text: str) -> None:
    composition = parse_or_own_error(text)
    if composition is not None:
        again = parse(str(composition))
        assert again == composition and str(again) == str(composition)
