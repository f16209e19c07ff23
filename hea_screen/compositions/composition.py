"""One canonical alloy composition, parsed once and compared by value.

A :class:`Composition` holds atomic fractions over alphabetically sorted element symbols.
Fractions are stored exactly as integers in millionths (ppm of atoms, i.e. a resolution of
0.0001 at.%) that always sum to exactly 1,000,000: amounts are normalised with exact
rational arithmetic and rounded with the largest-remainder method, so ``Co2Cr2Fe2``,
``FeCrCo`` and ``Co33.3333Cr33.3333Fe33.3333`` are the same value, hash alike and print as
the same canonical text (``Co0.333334 Cr0.333333 Fe0.333333``). Parsing the canonical text
gives back the same composition.

Accepted notations (pymatgen-like):
``Co1 Cr1 Fe1 Ni1``, ``CoCrFeNi``, ``Al0.5CoCrFeNi``, ``Co20Cr20Fe20Mn20Ni20`` (at.%),
``(CoCrFeNi)90Al10`` (a group is normalised, then scaled by its multiplier: 90 at.% CoCrFeNi
and 10 at.% Al; groups nest), ``Fe0.620C0.000953Mn0.000521``.
A repeated element is merged; amounts may use exponents (``C1e-3``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from fractions import Fraction

from hea_screen.errors import CompositionError

#: Resolution of stored fractions: amounts are held in millionths of the whole.
SCALE = 1_000_000

#: Every element symbol of the periodic table (IUPAC 2016), to tell a typo from an element
#: that merely lacks property data.
PERIODIC_TABLE: frozenset[str] = frozenset(
    [
        "H",
        "He",
        "Li",
        "Be",
        "B",
        "C",
        "N",
        "O",
        "F",
        "Ne",
        "Na",
        "Mg",
        "Al",
        "Si",
        "P",
        "S",
        "Cl",
        "Ar",
        "K",
        "Ca",
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
        "Ga",
        "Ge",
        "As",
        "Se",
        "Br",
        "Kr",
        "Rb",
        "Sr",
        "Y",
        "Zr",
        "Nb",
        "Mo",
        "Tc",
        "Ru",
        "Rh",
        "Pd",
        "Ag",
        "Cd",
        "In",
        "Sn",
        "Sb",
        "Te",
        "I",
        "Xe",
        "Cs",
        "Ba",
        "La",
        "Ce",
        "Pr",
        "Nd",
        "Pm",
        "Sm",
        "Eu",
        "Gd",
        "Tb",
        "Dy",
        "Ho",
        "Er",
        "Tm",
        "Yb",
        "Lu",
        "Hf",
        "Ta",
        "W",
        "Re",
        "Os",
        "Ir",
        "Pt",
        "Au",
        "Hg",
        "Tl",
        "Pb",
        "Bi",
        "Po",
        "At",
        "Rn",
        "Fr",
        "Ra",
        "Ac",
        "Th",
        "Pa",
        "U",
        "Np",
        "Pu",
        "Am",
        "Cm",
        "Bk",
        "Cf",
        "Es",
        "Fm",
        "Md",
        "No",
        "Lr",
        "Rf",
        "Db",
        "Sg",
        "Bh",
        "Hs",
        "Mt",
        "Ds",
        "Rg",
        "Cn",
        "Nh",
        "Fl",
        "Mc",
        "Lv",
        "Ts",
        "Og",
    ]
)

#: Longest composition text accepted, in characters (the canonical text of a composition of
#: every element of the periodic table is about 1,300).
MAX_TEXT_LENGTH = 2_000

#: Most digits in the mantissa of one amount (``0.000953`` has 7): more carry no meaning at a
#: resolution of millionths.
MAX_DIGITS = 30

#: Largest exponent magnitude of one amount (``C1e-3``): amounts are relative, and 1e30 spans
#: the 1e-6 resolution many times over.
MAX_EXPONENT = 30

#: Deepest nesting of parentheses and brackets accepted.
MAX_DEPTH = 20

# ASCII digits only ([0-9], not \d, which matches every Unicode digit).
_NUMBER = re.compile(
    r"\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?i:nan|inf(?:inity)?))"
)
_MANTISSA_EXPONENT = re.compile(r"[-+]?([0-9]*)\.?([0-9]*)(?:[eE]([-+]?[0-9]+))?")
_SYMBOL = re.compile(r"[A-Z][a-z]?")
_OPEN = {"(": ")", "[": "]"}


def largest_remainder(exact: Mapping[str, Fraction]) -> dict[str, int]:
    """Round exact fractions (summing to 1) to integer millionths summing to exactly SCALE.

    Floors every share, then gives the missing units to the largest remainders; ties go
    to the alphabetically first element, so the result is deterministic.
    """
    floors = {el: math.floor(x * SCALE) for el, x in exact.items()}
    missing = SCALE - sum(floors.values())
    order = sorted(exact, key=lambda el: (-(exact[el] * SCALE - floors[el]), el))
    for el in order[:missing]:
        floors[el] += 1
    return floors


class Composition:
    """An alloy composition: atomic fractions over sorted element symbols.

    Build one with :func:`parse` (from text) or :meth:`from_amounts` (from a mapping of
    element symbol to molar amount). Instances are immutable and compare and hash by value.
    """

    __slots__ = ("_elements", "_micro")

    def __init__(self, micro: Mapping[str, int]):
        """Wrap integer millionths that already sum to SCALE (use ``from_amounts`` otherwise)."""
        if sum(micro.values()) != SCALE or any(v <= 0 for v in micro.values()):
            raise CompositionError(
                f"internal amounts {dict(micro)} must be positive and sum to {SCALE}"
            )
        self._elements: tuple[str, ...] = tuple(sorted(micro))
        self._micro: tuple[int, ...] = tuple(micro[el] for el in self._elements)

    @classmethod
    def from_amounts(
        cls, amounts: Mapping[str, float | int | str | Fraction], text: str = ""
    ) -> Composition:
        """Normalise molar amounts (any overall scale) into a composition.

        ``text`` is the user's input, quoted in error messages.
        """
        where = f" in {text!r}" if text else ""
        if not amounts:
            raise CompositionError(
                f"empty composition{where}: give at least one element, e.g. 'CoCrFeNi'"
            )
        exact: dict[str, Fraction] = {}
        for el, amount in amounts.items():
            if el not in PERIODIC_TABLE:
                raise CompositionError(
                    f"unknown element symbol {el!r}{where}: not in the periodic table"
                )
            value = _to_fraction(amount, el, where)
            if value <= 0:
                raise CompositionError(
                    f"amount of {el} is {amount}{where}: amounts must be positive (> 0)"
                )
            exact[el] = exact.get(el, Fraction(0)) + value
        total = sum(exact.values())
        micro = largest_remainder({el: x / total for el, x in exact.items()})
        small = [el for el, v in micro.items() if v == 0]
        if small:
            raise CompositionError(
                f"amount of {', '.join(small)}{where} is below the resolution "
                "of 1e-6 atomic fraction"
            )
        return cls(micro)

    @property
    def elements(self) -> tuple[str, ...]:
        """Element symbols, sorted alphabetically."""
        return self._elements

    @property
    def micro(self) -> tuple[int, ...]:
        """Atomic fractions in millionths, aligned with :attr:`elements`; they sum to 1,000,000."""
        return self._micro

    @property
    def fractions(self) -> dict[str, float]:
        """Atomic fractions (sum 1) keyed by element symbol."""
        return {el: m / SCALE for el, m in zip(self._elements, self._micro)}

    def __len__(self) -> int:
        return len(self._elements)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Composition):
            return NotImplemented
        return self._elements == other._elements and self._micro == other._micro

    def __hash__(self) -> int:
        return hash((self._elements, self._micro))

    def __lt__(self, other: Composition) -> bool:
        return (self._elements, self._micro) < (other._elements, other._micro)

    def __str__(self) -> str:
        """Canonical text: ``Co0.25 Cr0.25 Fe0.25 Ni0.25`` (atomic fractions, sorted)."""
        return " ".join(f"{el}{format_micro(m)}" for el, m in zip(self._elements, self._micro))

    def __repr__(self) -> str:
        return f"Composition('{self}')"


def format_micro(micro: int) -> str:
    """Format a fraction held in millionths as the shortest exact decimal (``1``, ``0.25``)."""
    if micro == SCALE:
        return "1"
    return "0." + f"{micro:06d}".rstrip("0")


def _to_fraction(amount: float | int | str | Fraction, el: str, where: str) -> Fraction:
    if isinstance(amount, Fraction):
        return amount
    if isinstance(amount, float) and not math.isfinite(amount):
        raise CompositionError(f"amount of {el} is {amount}{where}: amounts must be finite numbers")
    if isinstance(amount, str) and _NUMBER.fullmatch(amount.strip()) is not None:
        return _number(amount.strip(), el, where)
    try:
        value = Fraction(str(amount))
    except (ValueError, ZeroDivisionError):
        lowered = str(amount).strip().lower().lstrip("+-")
        if lowered in {"nan", "inf", "infinity"}:
            raise CompositionError(
                f"amount of {el} is {amount}{where}: amounts must be finite numbers"
            ) from None
        raise CompositionError(f"amount of {el} is {amount!r}{where}: not a number") from None
    if isinstance(amount, str):
        raise CompositionError(
            f"amount of {el} is {amount!r}{where}: write amounts with ASCII digits 0-9, "
            "a decimal point and an optional exponent (e.g. '0.5', '1e-3')"
        )
    return value


def _number(raw: str, what: str, where: str) -> Fraction:
    """The exact value of an ASCII decimal ``raw`` (``_NUMBER``), within the digit and
    exponent limits (:data:`MAX_DIGITS`, :data:`MAX_EXPONENT`)."""
    lowered = raw.lower().lstrip("+-")
    if lowered in {"nan", "inf", "infinity"}:
        raise CompositionError(f"amount of {what} is {raw}{where}: amounts must be finite numbers")
    m = _MANTISSA_EXPONENT.fullmatch(raw)
    assert m is not None, raw  # _NUMBER admits no other form
    digits = len(m.group(1)) + len(m.group(2))
    if digits > MAX_DIGITS:
        raise CompositionError(
            f"amount of {what} {_excerpt(raw)} has {digits} digits{where}: "
            f"at most {MAX_DIGITS} digits are "
            "accepted in a number (fractions are resolved to millionths)"
        )
    exponent = m.group(3)
    if exponent is not None and (
        len(exponent.lstrip("+-")) > 3 or abs(int(exponent)) > MAX_EXPONENT
    ):
        raise CompositionError(
            f"amount of {what} is {_excerpt(raw)}{where}: exponents must lie between "
            f"-{MAX_EXPONENT} and {MAX_EXPONENT} (e.g. 'C1e-3')"
        )
    return Fraction(raw)


def _excerpt(text: str, limit: int = 40) -> str:
    """``text``, cut to ``limit`` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[:limit] + "..."


def parse(text: str) -> Composition:
    """Parse alloy notation into a :class:`Composition`.

    >>> str(parse("(CoCrFeNi)90Al10"))
    'Al0.1 Co0.225 Cr0.225 Fe0.225 Ni0.225'

    Raises :class:`~hea_screen.errors.CompositionError` naming the input and the problem:
    empty text, unknown symbol, zero/negative/NaN/infinite amount, unbalanced parentheses,
    characters that are not part of a formula (digits must be ASCII 0-9), and input beyond
    the limits :data:`MAX_TEXT_LENGTH`, :data:`MAX_DIGITS`, :data:`MAX_EXPONENT` and
    :data:`MAX_DEPTH`.
    """
    if isinstance(text, Composition):
        return text
    if not isinstance(text, str):
        raise CompositionError(f"composition must be text, got {type(text).__name__} {text!r}")
    if not text.strip():
        raise CompositionError(
            f"empty composition {text!r}: give at least one element, e.g. 'CoCrFeNi'"
        )
    if len(text) > MAX_TEXT_LENGTH:
        raise CompositionError(
            f"composition text of {len(text)} characters ({_excerpt(text)!r}): at most "
            f"{MAX_TEXT_LENGTH} characters are accepted"
        )
    amounts, _ = _parse_group(text, 0, closing=None, depth=0)
    return Composition.from_amounts(amounts, text)


def _parse_group(
    text: str, pos: int, closing: str | None, depth: int
) -> tuple[dict[str, Fraction], int]:
    """Parse a sequence of ``Symbol[amount]`` and ``(group)[amount]`` up to ``closing``.

    ``depth`` counts the groups that enclose this one (at most :data:`MAX_DEPTH`).
    """
    amounts: dict[str, Fraction] = {}
    n = len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            if closing is not None:
                raise CompositionError(f"unbalanced parentheses in {text!r}: missing {closing!r}")
            return amounts, pos
        ch = text[pos]
        if closing is not None and ch == closing:
            return amounts, pos + 1
        if ch in _OPEN:
            if depth == MAX_DEPTH:
                raise CompositionError(
                    f"parentheses nested deeper than {MAX_DEPTH} levels at position {pos} "
                    f"in {text!r}: at most {MAX_DEPTH} levels are accepted"
                )
            inner, pos = _parse_group(text, pos + 1, closing=_OPEN[ch], depth=depth + 1)
            if not inner:
                raise CompositionError(f"empty group {ch}{_OPEN[ch]} in {text!r}")
            factor, pos = _parse_amount(text, pos, f"group ending at position {pos}")
            # Alloy convention: (CoCrFeNi)90Al10 is 90 parts of the group as a whole.
            group_total = sum(inner.values())
            for el, x in inner.items():
                amounts[el] = amounts.get(el, Fraction(0)) + x / group_total * factor
            continue
        if ch in ")]":
            raise CompositionError(
                f"unbalanced parentheses in {text!r}: unexpected {ch!r} at position {pos}"
            )
        m = _SYMBOL.match(text, pos)
        if m is None and (ch in "0123456789" or (ch in "+-." and _NUMBER.match(text, pos))):
            raise CompositionError(
                f"number without an element at position {pos} in {text!r}: an amount follows "
                "the element or group it counts, e.g. 'Co1', 'Al0.5CoCrFeNi', '(CoFe)2'"
            )
        if m is None and ch.isdigit():
            raise CompositionError(
                f"non-ASCII digit {ch!r} (U+{ord(ch):04X}) at position {pos} in {text!r}: "
                "amounts take ASCII digits 0-9 only"
            )
        if m is None:
            raise CompositionError(
                f"unexpected character {ch!r} at position {pos} in {text!r}: expected an element "
                "symbol (e.g. 'Co'), a number or parentheses"
            )
        symbol = m.group()
        if symbol not in PERIODIC_TABLE:
            raise CompositionError(
                f"unknown element symbol {symbol!r} in {text!r}: not in the periodic table"
            )
        amount, pos = _parse_amount(text, m.end(), symbol)
        amounts[symbol] = amounts.get(symbol, Fraction(0)) + amount


def _parse_amount(text: str, pos: int, what: str) -> tuple[Fraction, int]:
    """Parse an optional amount after a symbol or group (default 1)."""
    m = _NUMBER.match(text, pos)
    if m is None:
        return Fraction(1), pos
    raw = m.group(1)
    value = _number(raw, what, f" in {text!r}")
    if value <= 0:
        raise CompositionError(
            f"amount of {what} is {raw} in {text!r}: amounts must be positive (> 0)"
        )
    return value, m.end()


def parse_many(texts: Iterable[str]) -> list[Composition]:
    """Parse several compositions; the error names the first bad one."""
    return [parse(t) for t in texts]
