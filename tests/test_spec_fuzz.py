"""Property-based fuzzing of the spec loader: any text or mapping gives a ScreenSpec or one of
the project's own errors, never another exception, a hang or a memory blow-up."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hea_screen.errors import UserInputError
from hea_screen.screening.spec import _SECTIONS, ScreenSpec, load_spec, spec_from_dict

#: Generous per-input bound: a spec is parsed in milliseconds; the defects this guards
#: against (alias bombs, huge exponents, deep nesting) took minutes or gigabytes.
FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

KEYS = [k for keys in _SECTIONS.values() for k in keys] + ["colour", "<<", ""]
SYMBOLS = ["Co", "Cr", "Fe", "Ni", "Mn", "Al", "Ti", "Te", "Pu", "Xx", "co"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([*SYMBOLS, "0.05", "1/20", "1e-999999999", "1e-9", "0.000001", "-1", ""]),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), inner, max_size=6),
    ),
    max_leaves=25,
)
sections = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
specs = st.fixed_dictionaries(
    {},
    optional={
        "name": values,
        "description": values,
        "space": st.one_of(
            sections,
            st.fixed_dictionaries(
                {"elements": values},
                optional={k: values for k in _SECTIONS["space"] if k != "elements"},
            ),
        ),
        "ranking": st.one_of(sections, values),
        "run": st.one_of(sections, values),
    },
)

TOKENS = [
    "space:", "elements:", "[Co, Cr, Fe]", "step:", "0.05", '"1e-999999999"', "&a", "*a", "<<:",
    "[", "]", "{", "}", ",", ":", "-", "? ", "!!float", "!!binary", "!!python/object", ".nan",
    "\n", "\n  ", "  ", "#", "'", '"', "|", ">", "%YAML 1.1\n", "---\n", "...\n", "\t", "\x00",
    "1" * 60, "top:", "0", "ingot_mass_g:", "-50",
]  # fmt: skip
yamlish = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=60).map(
    "".join
)


def _loads(path: Path) -> None:
    try:
        assert isinstance(load_spec(path), ScreenSpec)
    except UserInputError as exc:
        assert str(path) in str(exc)


@FUZZ
@given(text=st.one_of(yamlish, st.text(max_size=400)))
def test_any_text_gives_a_spec_or_a_user_error(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _loads(path)


@FUZZ
@given(data=specs)
def test_any_mapping_gives_a_spec_or_a_user_error(tmp_path, data):
    with contextlib.suppress(UserInputError):
        assert isinstance(spec_from_dict(data), ScreenSpec)
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    _loads(path)
