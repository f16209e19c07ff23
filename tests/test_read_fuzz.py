"""Property-based fuzzing of the files planning reads (issue 19): a screen's output given to
``plan``, the lab's results given to ``update`` and the measurement store. Any content gives
a checked result or a :class:`UserInputError`, never another exception; what passes the
checks holds finite, ordered, in-range values."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hea_screen.conditions import Condition
from hea_screen.errors import UserInputError
from hea_screen.planning.acquisition import predicted_at, read_candidates, table_of
from hea_screen.planning.checks import LIMITS, TEMPERATURE_RANGE_C
from hea_screen.planning.store import MANIFEST, MeasurementStore, read_results, records_sha256

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TASKS = ("uts_tension_mpa", "elongation_tension_pct")
SHA = "0" * 64
TEXTS = ["CoCrFeNi", "Co0.25 Cr0.25 Fe0.25 Ni0.25", "Al0.5CoCrFeNi", "CoXx", "", "=1+1", "1"]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=2000),
    st.none(),
)
cells = st.one_of(numbers, st.text(max_size=8))


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz19_") as folder:
        yield Path(folder)


@st.composite
def screen_frames(draw) -> pl.DataFrame:
    """Frames shaped like a screen's output, with any values, types and condition."""
    n = draw(st.integers(min_value=1, max_value=5))
    data: dict[str, list] = {
        "composition": draw(st.lists(st.sampled_from(TEXTS), min_size=n, max_size=n))
    }
    for task in TASKS:
        if draw(st.booleans()):  # a well-formed interval, as a screen writes it
            mean = draw(st.lists(st.floats(0, 2000), min_size=n, max_size=n))
            data[f"{task}_mean"] = mean
            data[f"{task}_lo"] = [m - draw(st.floats(0, 100)) for m in mean]
            data[f"{task}_hi"] = [m + draw(st.floats(0, 100)) for m in mean]
            continue
        for stat in ("mean", "lo", "hi"):
            if draw(st.booleans()) or stat == "mean":
                kind = draw(st.sampled_from(["float", "text"]))
                values = draw(st.lists(numbers, min_size=n, max_size=n))
                data[f"{task}_{stat}"] = [
                    None if v is None else (str(v) if kind == "text" else v) for v in values
                ]
    if draw(st.booleans()):
        data["test_type"] = [draw(st.sampled_from(["tension", "compression", ""]))] * n
    return pl.DataFrame(data, strict=False)


@FUZZ
@given(frame=screen_frames(), suffix=st.sampled_from([".csv", ".parquet", ".json"]))
def test_screen_file_reader_checks_every_value(frame, suffix):
    with _workdir() as folder:
        path = folder / f"s{suffix}"
        {".csv": frame.write_csv, ".parquet": frame.write_parquet, ".json": frame.write_json}[
            suffix
        ](path)
        try:
            read = read_candidates(path)
            used_as_is = predicted_at(read, Condition(), TASKS, SHA)
            table_of(read["composition"])
        except UserInputError:
            return
        if used_as_is:
            for task in TASKS:
                lo, mean, hi = (read[f"{task}_{s}"].to_list() for s in ("lo", "mean", "hi"))
                for a, b, c in zip(lo, mean, hi):
                    assert all(math.isfinite(v) for v in (a, b, c)) and a <= b <= c


@FUZZ
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".parquet", ".json"]))
def test_screen_file_reader_refuses_garbage_cleanly(content, suffix):
    with _workdir() as folder:
        path = folder / f"s{suffix}"
        path.write_bytes(content)
        with contextlib.suppress(UserInputError):
            read_candidates(path)


RESULT_COLUMNS = [
    "composition",
    "test_type",
    "temperature_c",
    "processing",
    "uts_mpa",
    "ys_mpa",
    "elongation_pct",
    "hardness_hv",
    "notes",
]


@FUZZ
@given(
    columns=st.lists(st.sampled_from(RESULT_COLUMNS), min_size=1, max_size=9, unique=True),
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "composition": st.sampled_from(TEXTS),
                "test_type": st.sampled_from(["tension", "T", "compression", "shear", ""]),
                "temperature_c": st.one_of(st.sampled_from(["25", "600", "-300", "nan"]), cells),
                "processing": st.sampled_from(["cast", "wrought", "as-cast", "x", ""]),
                "uts_mpa": cells,
                "ys_mpa": cells,
                "elongation_pct": cells,
                "hardness_hv": cells,
                "notes": st.text(max_size=5),
            }
        ),
        min_size=0,
        max_size=4,
    ),
)
def test_results_reader_checks_every_value(columns, rows):
    with _workdir() as folder:
        path = folder / "r.csv"
        frame = pl.DataFrame(
            {c: ["" if r[c] is None else str(r[c]) for r in rows] for c in columns},
            schema=dict.fromkeys(columns, pl.Utf8),
        )
        frame.write_csv(path)
        try:
            records = read_results(path)
        except UserInputError:
            return
        lo_t, hi_t = TEMPERATURE_RANGE_C
        assert records["temperature_c"].is_between(lo_t, hi_t).all()
        for task, value in zip(records["task"], records["value"]):
            prop = next(p for p in LIMITS if task.startswith(p))
            assert LIMITS[prop][0] <= value <= LIMITS[prop][1]


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "file": st.sampled_from(["imports/x.parquet", f"imports/{SHA}.parquet", "/etc/passwd"]),
        "sha256": st.sampled_from([SHA, "abc", ""]),
        "rows": st.one_of(st.integers(), st.text(max_size=3)),
        "source": st.text(max_size=5),
        "imported": st.text(max_size=5),
    },
)


@FUZZ
@given(
    manifest=st.one_of(
        json_values,
        st.fixed_dictionaries({"format": st.sampled_from([1, 2, "1"]), "imports": json_values}),
        st.fixed_dictionaries({"format": st.just(1), "imports": st.lists(entries, max_size=3)}),
    ),
    content=st.binary(max_size=100),
)
def test_store_reads_any_manifest_and_import_cleanly(manifest, content):
    with _workdir() as root:
        (root / "imports").mkdir()
        (root / MANIFEST).write_text(json.dumps(manifest))
        (root / f"imports/{SHA}.parquet").write_bytes(content)
        with contextlib.suppress(UserInputError):
            MeasurementStore(root, create=False).measured()


@FUZZ
@given(value=numbers, task=st.sampled_from(["uts_tension_mpa", "phase", "nonsense"]))
def test_store_rechecks_rehashed_records(value, task):
    with _workdir() as root:
        records = pl.DataFrame(
            {
                "composition": ["Co0.25 Cr0.25 Fe0.25 Ni0.25"],
                "task": [task],
                "test_type": ["tension"],
                "temperature_c": [25.0],
                "processing": ["CAST"],
                "value": [value],
                "source_row": [0],
            },
            schema_overrides={"value": pl.Float64},
        )
        digest = records_sha256(records)
        (root / "imports").mkdir()
        records.write_parquet(root / f"imports/{digest}.parquet")
        entry = {"file": f"imports/{digest}.parquet", "sha256": digest, "rows": 1, "source": "x"}
        (root / MANIFEST).write_text(json.dumps({"format": 1, "imports": [entry]}))
        try:
            stored = MeasurementStore(root, create=False).records()
        except UserInputError:
            return
        assert task == "uts_tension_mpa" and value is not None and 1.0 <= value <= 10000.0
        assert stored.height == 1
