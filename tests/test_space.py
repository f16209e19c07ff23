"""Candidate spaces: exact counts, each composition once, index ranges, sampling, specs."""

from __future__ import annotations

import itertools
import subprocess
import sys
from fractions import Fraction as F
from math import comb
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hea_screen.compositions.composition import Composition, parse
from hea_screen.errors import ElementDataError, SpaceError, UserInputError
from hea_screen.screening.space import CandidateSpace, SampledSpace
from hea_screen.screening.spec import (
    build_space,
    load_spec,
    parse_bounds,
    parse_elements,
    spec_from_dict,
)

CANDIDATES = Path(__file__).resolve().parents[1] / "candidates"


def _allowed(space: CandidateSpace, el: str, x: F) -> bool:
    lo, hi = space.bounds.get(el, (F(0), F(1)))
    return max(lo, space.min_fraction) <= x <= min(hi, space.max_fraction)


def brute_force(space: CandidateSpace) -> list[Composition]:
    """Every composition of the definition, by plain enumeration (an independent oracle)."""
    n = space.grid_units
    out = []
    for k in range(space.min_elements, min(space.max_elements, len(space.elements)) + 1):
        for sub in itertools.combinations(space.elements, k):
            if not set(space.required()) <= set(sub):
                continue
            if space.equimolar and all(_allowed(space, e, F(1, k)) for e in sub):
                out.append(Composition.from_amounts({e: 1 for e in sub}))
            if not space.non_equimolar:
                continue
            for units in itertools.product(range(1, n + 1), repeat=k):
                if sum(units) != n or len(set(units)) == 1:
                    continue
                if all(_allowed(space, e, F(c, n)) for e, c in zip(sub, units)):
                    out.append(Composition.from_amounts(dict(zip(sub, units))))
    return out


def partitions(size: int, step: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + step, size)) for lo in range(0, size, step)]


def all_rows(space) -> list[Composition]:
    table = space.table(0, space.size)
    return [table.composition(i) for i in range(len(table))]


def test_default_five_element_space_counts_match_combinatorics():
    space = CandidateSpace(("Co", "Cr", "Fe", "Mn", "Ni"), 3, 5, F(1, 20))
    # compositions of 20 units into k positive parts, minus the equimolar grid point
    grid = {k: comb(19, k - 1) - (20 % k == 0) for k in (3, 4, 5)}
    expected = sum(comb(5, k) * (grid[k] + 1) for k in (3, 4, 5))
    assert space.size == expected == 10 * (171 + 1) + 5 * (968 + 1) + (3875 + 1)
    rows = all_rows(space)
    assert len(rows) == len(set(rows)) == expected


def test_each_composition_once_and_canonical():
    space = CandidateSpace(
        ("Al", "Co", "Cr", "Fe", "Ni", "Ti"),
        2,
        4,
        F(1, 10),
        {"Al": (F(0), F(3, 10)), "Ti": (F(1, 10), F(2, 10))},
        F(1, 10),
        F(6, 10),
    )
    rows = all_rows(space)
    assert space.size == len(rows) == len(set(rows))
    assert set(rows) == set(brute_force(space))
    assert all("Ti" in c.elements for c in rows)  # a lower bound > 0 makes Ti required
    texts = space.table(0, space.size).canonical_texts().to_list()
    assert texts == [str(c) for c in rows]
    assert [parse(t) for t in texts] == rows  # canonical text parses back to the same row


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    palette=st.lists(
        st.sampled_from(["Al", "Co", "Cr", "Cu", "Fe", "Mn", "Ni", "Ti"]),
        min_size=1,
        max_size=5,
        unique=True,
    ),
    sizes=st.tuples(st.integers(1, 5), st.integers(0, 3)),
    units=st.sampled_from([2, 3, 4, 5, 6, 8, 10]),
    fractions=st.tuples(st.sampled_from([0, 0, 1, 2]), st.sampled_from([10, 10, 6, 4])),
    families=st.sampled_from([(True, True), (True, False), (False, True)]),
    bound=st.tuples(st.integers(0, 4), st.integers(0, 2), st.integers(1, 8)),
    data=st.data(),
)
def test_enumeration_equals_brute_force(palette, sizes, units, fractions, families, bound, data):
    palette = tuple(sorted(palette))
    lo_k = min(sizes[0], len(palette))
    which, low, width = bound
    bounds = {}
    if which < len(palette):
        bounds[palette[which]] = (F(low, 10), min(F(1), F(low + width, 10)))
    require = tuple(data.draw(st.lists(st.sampled_from(palette), max_size=1, unique=True)))
    space = CandidateSpace(
        palette,
        lo_k,
        lo_k + sizes[1],
        F(1, units),
        bounds,
        F(fractions[0], 10),
        F(fractions[1], 10),
        require,
        *families,
    )
    rows = all_rows(space)
    expected = brute_force(space)
    assert space.size == len(expected) == len(rows) == len(set(rows))
    assert set(rows) == set(expected)


def test_index_ranges_and_scattered_indices_agree():
    space = build_space(parse_elements("Co,Cr,Fe,Mn,Ni"))
    whole = space.table(0, space.size).micro
    pieces = [space.table(lo, hi).micro for lo, hi in partitions(space.size, 777)]
    assert np.array_equal(np.vstack(pieces), whole)
    idx = np.array([space.size - 1, 0, 4242, 17])
    assert np.array_equal(space.rows(idx).micro, whole[idx])
    assert np.all(whole.sum(axis=1) == 1_000_000)
    with pytest.raises(IndexError):
        space.rows(np.array([space.size]))


def test_rounding_matches_composition_largest_remainder():
    space = CandidateSpace(("Co", "Cr", "Fe"), 3, 3, F(1, 3), equimolar=True)
    table = space.table(0, space.size)
    assert table.composition(0) == parse("CoCrFe")
    assert table.micro[0].tolist() == [333334, 333333, 333333]
    space7 = CandidateSpace(("Al", "Co", "Cr", "Fe", "Mn", "Ni", "Ti"), 3, 7, F(1, 7))
    t = space7.table(0, space7.size)
    for i in range(0, len(t), 37):
        comp = t.composition(i)
        assert parse(str(comp)) == comp


def test_size_without_enumerating_huge_space():
    palette = tuple(sorted(["Al", "Co", "Cr", "Cu", "Fe", "Mn", "Mo", "Nb", "Ni", "Ti", "V", "Zr"]))
    space = CandidateSpace(palette, 3, 7, F(1, 100))
    assert space.size > 10**11
    sample = SampledSpace(space, 1000, seed=7)
    table = sample.table(0, 1000)
    rows = [table.composition(i) for i in range(0, 1000, 50)]
    assert all(3 <= len(c) <= 7 for c in rows)
    assert len({str(c) for c in rows}) == len(rows)


def test_sample_is_distinct_reproducible_and_independent_of_partitioning():
    space = build_space(parse_elements("Co,Cr,Fe,Mn,Ni"))
    sample = SampledSpace(space, 5000, seed=3)
    idx = sample.indices(0, 5000)
    assert len(np.unique(idx)) == 5000 and np.all(np.diff(idx) > 0)
    parts = np.concatenate([sample.indices(lo, hi) for lo, hi in partitions(5000, 999)])
    assert np.array_equal(parts, idx)
    assert np.array_equal(SampledSpace(space, 5000, seed=3).indices(0, 5000), idx)
    assert not np.array_equal(SampledSpace(space, 5000, seed=4).indices(0, 5000), idx)
    assert SampledSpace(space, 10**6, seed=0).size == space.size  # larger than the space


def test_fingerprint_tracks_definition():
    a = build_space(parse_elements("Co,Cr,Fe,Ni"))
    b = build_space(parse_elements(["Ni", "Fe", "Cr", "Co"]))
    c = build_space(parse_elements("Co,Cr,Fe,Ni"), step="0.1")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"elements": ("Co", "Xx")}, "unknown element 'Xx'"),
        ({"elements": ("Co", "co")}, "unknown element 'co'"),
        ({"elements": ("Co", "Pu")}, "no property data for Pu"),
        ({"min_elements": 6, "max_elements": 6}, "empty space: at least 6 elements"),
        ({"step": F(3, 10)}, "must divide 1 evenly"),
        ({"bounds": {"W": (F(0), F(1, 2))}}, "not in the palette"),
        ({"bounds": {"Co": (F(1, 2), F(1, 5))}}, "need 0 <= low <= high <= 1"),
        ({"equimolar": False, "non_equimolar": False}, "both equimolar and non-equimolar"),
    ],
)
def test_invalid_definitions_name_the_problem(kwargs, match):
    args = {"elements": ("Co", "Cr", "Fe", "Ni"), "min_elements": 2, "max_elements": 4}
    args |= {"step": F(1, 20)} | kwargs
    elements = args.pop("elements")
    with pytest.raises(UserInputError, match=match) as info:
        CandidateSpace(tuple(sorted(elements)), **args)
    if "property data" in match:
        assert isinstance(info.value, ElementDataError)


def test_bounds_that_admit_nothing_versus_empty_space():
    tight = build_space(
        parse_elements("Co,Cr,Fe,Ni"),
        min_elements=4,
        max_fraction="0.2",  # four elements cannot fill 100 % at <= 20 % each
    )
    assert tight.size == 0
    with pytest.raises(SpaceError, match="bounds admit no composition"):
        tight.check_nonempty()
    need_two = build_space(parse_elements("Co,Cr,Fe"), bounds=parse_bounds(["Co:0.6-1,Cr:0.6-1"]))
    with pytest.raises(SpaceError, match="bounds admit no composition"):
        need_two.check_nonempty()
    build_space(parse_elements("Co,Cr,Fe,Ni")).check_nonempty()


def test_spec_files_shipped_in_candidates_load():
    cantor = load_spec(CANDIDATES / "cantor.yaml")
    assert cantor.space.elements == ("Al", "Co", "Cr", "Cu", "Fe", "Mn", "Ni", "Ti")
    assert set(cantor.space.require) == {"Co", "Cr", "Fe", "Ni"}
    refractory = load_spec(CANDIDATES / "refractory.yaml")
    assert {"Mo", "Nb", "Ta", "W", "Ti", "V", "Zr", "Hf"} == set(refractory.space.elements)
    for spec in (cantor, refractory):
        assert 1_000 < spec.space.size < 100_000
        table = spec.space.table(0, 64)
        assert all(set(spec.space.require) <= set(table.composition(i).elements) for i in range(64))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("space: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: x\n", "no 'space' section"),
        ("space: {elements: [Co, Cr], colour: red}", "unknown key 'colour' in space"),
        ("space: {elements: [Co, Cr], step: abc}", "step: expected a number"),
        ("space: {elements: [Co, Cr]}\nranking: {objective: cheapest}", "unknown objective"),
        ("space: {elements: [Co, Cr], families: [binary]}", "choose one or both"),
        ("space: {elements: [Co, Cr], min_elements: two}", "expected a whole number"),
        # issue 19 item 18: the second of two equal keys silently won
        ("space: {elements: [Co, Cr]}\nspace: {elements: [Ni, Fe]}", "'space' given twice"),
        ("space: {elements: [Co, Cr], step: 0.1, step: 0.2}", "'step' given twice"),
        # issue 19 item 14: a 50-digit top overflowed (OverflowError)
        ("space: {elements: [Co, Cr]}\nranking: {top: " + "9" * 50 + "}", "from 1 to"),
        ("space: {elements: [Co, Cr], sample: " + "9" * 50 + "}", "from 1 to"),
    ],
)
def test_invalid_spec_files(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=match) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_unreadable_spec(tmp_path):
    with pytest.raises(SpaceError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpaceError, match="cannot read spec"):
        load_spec(tmp_path / "bin.yaml")


def test_spec_from_dict_defaults_and_sampling():
    spec = spec_from_dict({"space": {"elements": "Co,Cr,Fe,Ni", "sample": 100, "seed": 5}})
    assert spec.space.min_elements == 3 and spec.space.max_elements == 4
    assert spec.ranking.objective == "weighted" and spec.ranking.top == 100
    assert spec.candidates().size == 100
    assert (
        spec.fingerprint() != spec_from_dict({"space": {"elements": "Co,Cr,Fe,Ni"}}).fingerprint()
    )


# ------------------------------------------------------------------ hardening
HUGE_PALETTE = (
    "Ag,Al,Au,B,Ba,Be,C,Ca,Co,Cr,Cu,Fe,Ga,Hf,Li,Mg,Mn,Mo,Nb,Nd,Ni,Pd,Re,Sc,Si,Sn,Ta,Ti,V,W,Y,Zn,Zr"
)


def test_sampling_works_on_a_space_too_large_to_index():
    space = build_space(parse_elements(HUGE_PALETTE), step="0.01")  # 33 elements
    assert space.size > 10**30
    with pytest.raises(SpaceError, match="too many to screen whole: screen a random sample"):
        space.check_indexable()
    sample = SampledSpace(space, 300, seed=2)
    idx = sample.indices(0, 300)
    assert all(a < b for a, b in itertools.pairwise(idx)) and idx[-1] < space.size
    assert list(np.concatenate([sample.indices(0, 100), sample.indices(100, 300)])) == list(idx)
    table = sample.table(0, 300)
    rows = [table.composition(i) for i in range(300)]
    assert len({str(c) for c in rows}) == 300
    for comp in rows:  # every row lies in the space: k elements, 1 %-grid, at most 50 % each
        assert 3 <= len(comp) <= 33
        assert all(
            0.01 <= x <= 0.5 and round(x * 100, 6).is_integer() for x in comp.fractions.values()
        )
    assert len({len(c) for c in rows}) > 5  # spread over the element counts


@pytest.mark.parametrize(
    ("step", "match"),
    [
        ("1e-9", "finer than the storage resolution 1e-06"),
        ("1e-7", "finer than the storage resolution 1e-06"),
        ("0.000001", "too fine for 4 elements: the space cannot be indexed"),
        ("1" + "0" * 60, "at most 40 characters"),
    ],
)
def test_too_fine_steps_are_refused_at_once(step, match):
    with pytest.raises(SpaceError, match=match):
        build_space(parse_elements("Co,Cr,Fe,Ni"), step=step)


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "space: {elements: [Co, Cr, Fe]}\ndescription: &a [lol, lol, lol]\nname: *a\n",
            "anchors and aliases",
        ),
        ("space: {elements: [Co, Cr]}\ndescription: " + "[" * 20000 + "]" * 20000, "nested deeper"),
        ("space: {elements: [Co, Cr]}\n" + "# padding\n" * 200_000, "larger than 1,000,000 bytes"),
        ("space: {elements: [Co, Cr, Fe, Ni], step: 0.000001}", "cannot be indexed"),
        ("space: {elements: [Co, Cr]}\nranking: {top: 0}", "top 0: need a whole number from 1"),
        ("space: {elements: [Co, Cr]}\nrun: {ingot_mass_g: -50}", "ingot mass -50"),
        ("space: {elements: [Co, Cr]}\nrun: {ingot_mass_g: .nan}", "ingot mass nan"),
        ("space: {elements: [Co, Cr]}\nrun: {partition_size: 0}", "partition size 0"),
        ("space: {elements: [Co, Cr], seed: -1}", "seed -1"),
        ("space: {elements: [Co, Co, Fe]}", "Co given more than once"),
        ("space: {elements: [Co, Cr]}\nranking: {weights: [-1, 2]}", "weights must be >= 0"),
        ("space: {elements: [Co, Cr], step: !!float }", "cannot be read"),
    ],
)
def test_hostile_or_wrong_spec_files_are_refused_quickly(tmp_path, text, match):
    path = _spec(tmp_path, text)
    with pytest.raises(SpaceError, match=match) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def _load_guarded(path: Path) -> str:
    """``load_spec(path)`` in a child process under a wall-clock and memory guard (these
    inputs hung or took gigabytes before); returns the error message it printed."""
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from hea_screen.screening.spec import load_spec\n"
        "try:\n    load_spec(sys.argv[1])\nexcept Exception as exc:\n    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_alias_bomb_is_refused_without_expanding(tmp_path):
    lines = ["space: {elements: [Co, Cr, Fe]}", "description:", '  a0: &a0 ["lol", "lol"]']
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    message = _load_guarded(_spec(tmp_path, "\n".join(lines) + "\n"))  # 9**11 strings expanded
    assert "anchors and aliases" in message


def test_huge_exponent_is_refused_without_computing_it(tmp_path):
    message = _load_guarded(
        _spec(tmp_path, 'space: {elements: [Co, Cr, Fe], step: "1e-999999999"}')
    )
    assert "step: expected a number" in message and "exponent within" in message


def test_a_spec_that_is_another_file_is_not_echoed(tmp_path):
    # issue 19 item 17: a spec symlinked to a secrets file listed its 18 keys in the error
    secret = tmp_path / "secrets"
    secret.write_text("".join(f"TOKEN_{i}: s3cr3t{i}\n" for i in range(18)))
    link = tmp_path / "spec.yaml"
    link.symlink_to(secret)
    with pytest.raises(SpaceError, match=r"unknown key 'TOKEN_0' \(and 17 more\)") as info:
        load_spec(link)
    assert "TOKEN_1" not in str(info.value) and "s3cr3t" not in str(info.value)
