"""Predictor: fold-ensemble predictions, length bucketing, validation, providers, applicability."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
import torch
from transformers import BertForSequenceClassification

from hea_screen import Composition, featurize, load_model, parse
from hea_screen.compositions.elements import supported_elements
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import BundleError, CompositionError, ElementDataError, UserInputError
from hea_screen.inference.paper_bundle import default_bundle_path, load_bundle, onnx_relpath
from hea_screen.inference.paper_predictor import Predictor
from hea_screen.inference.runtime import cuda_usable

pytestmark = pytest.mark.slow

MIXED = [
    "CoCrFeMnNi",
    "Al0.5CoCrFeNi",
    "NbMoTaW",
    "CoCrNi",
    "Al0.3CoCrFeNiTi0.2Cu0.1Mo0.1",
    "FeNi",
    "Co20Cr20Fe20Mn20Ni20",
    "HfNbTaTiZr",
]
COLUMNS = [
    "composition",
    "uts_mpa_mean",
    "uts_mpa_std",
    "elongation_pct_mean",
    "elongation_pct_std",
    "unseen_elements",
    "uts_mpa_nearest_distance",
    "uts_mpa_nearest_composition",
    "uts_mpa_nearest_measured",
    "elongation_pct_nearest_distance",
    "elongation_pct_nearest_composition",
    "elongation_pct_nearest_measured",
]


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> Predictor:
    return load_model(tiny_bundle, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def manifest(tiny_bundle: Path) -> dict:
    return json.loads((tiny_bundle / "manifest.json").read_text())


class Spy:
    """Records the batches a predictor hands to ONNX Runtime (and still runs them)."""

    def __init__(self, predictor: Predictor, monkeypatch: pytest.MonkeyPatch):
        self.feeds: list[dict[str, np.ndarray]] = []
        run = predictor._run

        def recording(sessions, feed):
            self.feeds.append(feed)
            return run(sessions, feed)

        monkeypatch.setattr(predictor, "_run", recording)


def test_columns_order_and_units(predictor: Predictor) -> None:
    out = predictor.predict(MIXED)
    assert out.columns == COLUMNS
    assert out["composition"].to_list() == [str(parse(t)) for t in MIXED]
    assert out.schema["uts_mpa_mean"] == pl.Float64
    assert (out["uts_mpa_std"] >= 0).all() and (out["elongation_pct_std"] >= 0).all()
    assert predictor.provider == "CPUExecutionProvider" and predictor.precision == "fp32"
    assert "CPUExecutionProvider (fp32)" in predictor.summary


def test_mean_and_std_over_folds_in_original_units(
    tiny_run: Path, predictor: Predictor, manifest: dict
) -> None:
    """Oracle: every PyTorch fold model of the run, its scaler inverted, then mean and std."""
    out = predictor.predict(MIXED)
    table = CompositionTable.from_compositions(MIXED)
    encoded = predictor.encoder.encode(table, featurize(table))
    for target, info in manifest["targets"].items():
        values = []
        for entry in info["folds"]:
            model_dir = (
                tiny_run
                / "finetune"
                / target
                / manifest["run"]["experiment"]
                / f"fold_{entry['fold']}"
            )
            model = BertForSequenceClassification.from_pretrained(model_dir / "model").eval()
            scaler = json.loads((model_dir / "scaler.json").read_text())
            with torch.no_grad():
                z = model(**{k: torch.from_numpy(v) for k, v in encoded.as_dict().items()}).logits[
                    :, 0
                ]
            values.append(z.double().numpy() * scaler["std"] + scaler["mean"])
        values = np.array(values)
        scale = float(np.mean([e["scaler"]["std"] for e in info["folds"]]))
        np.testing.assert_allclose(out[f"{target}_mean"], values.mean(axis=0), atol=1e-4 * scale)
        np.testing.assert_allclose(
            out[f"{target}_std"], values.std(axis=0, ddof=1), atol=1e-4 * scale
        )


def test_batches_are_grouped_by_length_and_never_padded(predictor: Predictor, monkeypatch) -> None:
    reference = predictor.predict(MIXED)
    spy = Spy(predictor, monkeypatch)
    out = predictor.predict(MIXED)
    n_targets = len(predictor.targets)
    lengths = sorted({len(parse(t)) for t in MIXED})
    assert len(spy.feeds) == len(lengths) * n_targets
    widths = sorted({f["input_ids"].shape[1] for f in spy.feeds})
    assert widths == [2 * k + 17 for k in lengths]
    assert all(f["attention_mask"].all() for f in spy.feeds)  # no padding anywhere
    assert out.equals(reference)
    one_by_one = pl.concat([predictor.predict([t]) for t in MIXED])
    np.testing.assert_allclose(one_by_one["uts_mpa_mean"], out["uts_mpa_mean"], rtol=1e-5)


def test_batch_size_bounds_every_model_call(
    tiny_bundle: Path, predictor: Predictor, monkeypatch
) -> None:
    small = load_model(tiny_bundle, device="cpu", precision="fp32", batch_size=2)
    spy = Spy(small, monkeypatch)
    texts = MIXED * 3
    out = small.predict(texts)
    assert max(len(f["input_ids"]) for f in spy.feeds) == 2
    np.testing.assert_allclose(
        out["uts_mpa_mean"], predictor.predict(texts)["uts_mpa_mean"], rtol=1e-5
    )


def test_input_is_validated_before_any_model_call(predictor: Predictor, monkeypatch) -> None:
    spy = Spy(predictor, monkeypatch)
    with pytest.raises(CompositionError, match="Xx"):
        predictor.predict([*MIXED, "CoCrXx"])
    with pytest.raises(ElementDataError, match="Og"):
        predictor.predict([*MIXED, "CoCrOg"])
    with pytest.raises(UserInputError, match="DataFrame"):
        predictor.predict(pl.DataFrame({"composition": MIXED}))
    with pytest.raises(UserInputError, match="int"):
        predictor.predict(42)
    bundle = load_bundle(predictor.bundle.path)
    k = next(k for k in range(1, 40) if 2 * k + 17 > bundle.max_length)
    crowded = "".join(list(supported_elements_for_length())[:k])
    with pytest.raises(UserInputError, match=f"{k} elements.*at most {bundle.max_length} tokens"):
        predictor.predict([*MIXED, crowded])
    assert spy.feeds == []


def test_input_types_and_bad_rows_are_refused_before_any_model_call(monkeypatch) -> None:
    """The shipped bundle: no training needed to check what predict() accepts."""
    shipped = load_model(device="cpu")
    runs: list[str] = []
    model_run = shipped._task_columns
    monkeypatch.setattr(
        shipped, "_task_columns", lambda m, x: runs.append(m.task.name) or model_run(m, x)
    )
    for value, message in [
        ({"Co": 1}, r"got dict \{'Co': 1\}: a mapping is not a list of compositions"),
        ({"CoNi", "FeNi"}, r"got set .*no row order"),
        (b"CoNi", r"got bytes b'CoNi': decode bytes"),
    ]:
        with pytest.raises(UserInputError, match=r"compositions must be a list .*" + message):
            shipped.predict(value)
    texts = ["CoCrFeMnNi"] * 100_000
    texts[53172] = "Co1Xx"
    with pytest.raises(CompositionError, match=r"^row 53172: 'Co1Xx' — unknown element symbol"):
        shipped.predict(texts)
    with pytest.raises(ElementDataError, match=r"^row 2: Co0.5 U0.5 — no property data for U"):
        shipped.predict(["CoNi", "FeNi", "CoU"])
    assert runs == []
    assert shipped.predict("CoNi").height == 1 and runs


def supported_elements_for_length() -> list[str]:
    """Metals whose property data and pairwise mixing enthalpies are all tabulated."""
    picks = ["Al", "Co", "Cr", "Cu", "Fe", "Mn", "Mo", "Nb", "Ni", "Ti", "V", "Zr", "Hf", "Ta"]
    picks += ["W", "Si", "Sn", "Zn", "Mg", "Pd", "Ag", "Au", "Re", "Y"]
    return [e for e in picks if e in supported_elements()]


def test_accepted_input_forms_agree(predictor: Predictor) -> None:
    table = CompositionTable.from_compositions(MIXED)
    base = predictor.predict(table)
    assert predictor.predict(MIXED).equals(base)
    assert predictor.predict(parse(t) for t in MIXED).equals(base)
    assert predictor.predict(pl.Series(MIXED)).equals(base)
    assert predictor.predict(Composition.from_amounts({"Fe": 1, "Ni": 1})).height == 1
    assert predictor.predict("FeNi")["composition"].to_list() == ["Fe0.5 Ni0.5"]
    empty = predictor.predict([])
    assert empty.columns == COLUMNS and empty.height == 0


def test_caller_features_are_used_and_checked(predictor: Predictor) -> None:
    table = CompositionTable.from_compositions(MIXED)
    features = featurize(table)
    assert predictor.predict(table, features).equals(predictor.predict(table))
    with pytest.raises(UserInputError, match="row 0 is for"):
        predictor.predict(table, features.reverse())
    with pytest.raises(UserInputError, match="rows for"):
        predictor.predict(table, features.head(3))
    with pytest.raises(UserInputError, match="lacks column"):
        predictor.predict(table, features.drop("vec"))
    with pytest.raises(UserInputError, match="polars DataFrame"):
        predictor.predict(table, features.to_dicts())


def test_precisions_run_their_own_files(tiny_bundle: Path, manifest: dict) -> None:
    """Oracle: the predictor's int8 mean equals the mean of the int8 files run directly."""
    int8 = load_model(tiny_bundle, device="cpu", precision="int8")
    assert int8.precision == "int8"
    table = CompositionTable.from_compositions(MIXED)
    encoded = int8.encoder.encode(table, featurize(table))
    values = []
    for entry in manifest["targets"]["uts_mpa"]["folds"]:
        session = ort.InferenceSession(
            str(tiny_bundle / onnx_relpath("uts_mpa", entry["fold"], "int8")),
            providers=["CPUExecutionProvider"],
        )
        z = session.run(["logits"], encoded.as_dict())[0][:, 0]
        values.append(z * entry["scaler"]["std"] + entry["scaler"]["mean"])
    np.testing.assert_allclose(
        int8.predict(MIXED)["uts_mpa_mean"], np.mean(values, axis=0), rtol=1e-4
    )


def test_cpu_default_is_int8_when_the_bundle_has_it(tiny_bundle: Path, manifest: dict) -> None:
    cpu = load_model(tiny_bundle, device="cpu")
    assert (cpu.provider, cpu.precision) == ("CPUExecutionProvider", "int8")
    auto = load_model(tiny_bundle)
    if cuda_usable():
        fp16 = manifest["variants"]["fp16"]["written"]
        assert (auto.provider, auto.precision) == (
            "CUDAExecutionProvider",
            "fp16" if fp16 else "fp32",
        )
    else:
        assert (auto.provider, auto.precision) == ("CPUExecutionProvider", "int8")


def test_sessions_cache_no_buffers_between_calls(predictor: Predictor) -> None:
    """No per-session arena and no per-shape memory pattern: resident memory must not grow
    with the number of distinct batch shapes a long screen meets (docs/inference.md)."""
    for _, sessions in predictor._sessions:
        for session in sessions:
            options = session.get_session_options()
            assert not options.enable_cpu_mem_arena
            assert not options.enable_mem_pattern


def test_io_binding_path_gives_the_same_answer(tiny_bundle: Path, predictor: Predictor) -> None:
    bound = load_model(tiny_bundle, device="cpu", precision="fp32", io_binding=True)
    assert bound.io_binding and "I/O binding" in bound.summary
    np.testing.assert_allclose(
        bound.predict(MIXED)["uts_mpa_mean"], predictor.predict(MIXED)["uts_mpa_mean"], rtol=1e-6
    )


def test_device_and_precision_choices_are_checked(tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"unknown device 'tpu'.*auto, cpu, cuda"):
        load_model(tiny_bundle, device="tpu")
    with pytest.raises(UserInputError, match="unknown precision 'bf16'"):
        load_model(tiny_bundle, precision="bf16")
    with pytest.raises(UserInputError, match="batch_size"):
        load_model(tiny_bundle, batch_size=0)
    with pytest.raises(UserInputError, match="does not run on CPUExecutionProvider"):
        load_model(tiny_bundle, device="cpu", precision="fp16")
    if not cuda_usable():
        with pytest.raises(UserInputError, match=r"device='cuda'.*no usable CUDA GPU"):
            load_model(tiny_bundle, device="cuda")
        with pytest.raises(UserInputError, match=r"fp16.*CUDA only"):
            load_model(tiny_bundle, precision="fp16")


def test_default_bundle(tmp_path: Path) -> None:
    if default_bundle_path().is_dir():
        out = load_model().predict(["CoCrFeMnNi"])
        assert out.height == 1 and out["uts_tension_mpa_mean"][0] > 0
    else:
        with pytest.raises(BundleError, match="no shipped default model bundle"):
            load_model()


def test_pickles_as_path_and_options(tiny_bundle: Path) -> None:
    p = load_model(tiny_bundle, device="cpu", precision="int8", batch_size=7)
    blob = pickle.dumps(p)
    assert len(blob) < 2000  # no model bytes, no sessions
    q = pickle.loads(blob)
    assert (q.provider, q.precision, q.batch_size) == (p.provider, p.precision, 7)
    assert q.predict(MIXED).equals(p.predict(MIXED))


def test_applicability_columns(predictor: Predictor) -> None:
    training = predictor.training_set
    known = training.targets["uts_mpa"].compositions[0]
    out = predictor.predict([known])
    assert out["uts_mpa_nearest_distance"][0] == 0.0
    assert out["uts_mpa_nearest_composition"][0] == known
    assert out["uts_mpa_nearest_measured"][0] == training.targets["uts_mpa"].values[0]
    assert out["unseen_elements"][0] == ""
    seen = training.seen_elements("uts_mpa") & training.seen_elements("elongation_pct")
    novel = None
    for el in supported_elements():
        if el not in seen:
            try:
                featurize([f"CoCrFeNi{el}0.2"])
            except ElementDataError:
                continue
            novel = el
            break
    assert novel is not None
    row = predictor.predict([f"CoCrFeNi{novel}0.2"])
    assert novel in row["unseen_elements"][0].split(",")
    assert row["uts_mpa_nearest_distance"][0] > 0
    assert row["elongation_pct_nearest_distance"][0] > 0


def test_nearest_distance_is_per_target() -> None:
    """An alloy whose hardness was measured but not its tensile UTS: its hardness datum is
    at distance 0, its UTS datum is another alloy; no pooled 0.0 may suggest a UTS."""
    model = load_model(device="cpu")
    hardness = model.training_set.targets["hardness_hv"].compositions
    tensile = set(model.training_set.targets["uts_tension_mpa"].compositions)
    alloy = next(c for c in hardness if c not in tensile)
    out = model.predict([alloy], tasks=["uts_tension_mpa", "hardness_hv"])
    assert out["hardness_hv_nearest_distance"][0] == 0.0
    assert out["hardness_hv_nearest_composition"][0] == alloy
    assert out["uts_tension_mpa_nearest_distance"][0] > 0
    assert out["uts_tension_mpa_nearest_composition"][0] != alloy
    assert not [c for c in out.columns if c.startswith("nearest_train")]


def test_nearest_distance_is_the_brute_force_l1(predictor: Predictor) -> None:
    training = predictor.training_set
    out = predictor.predict(MIXED)
    palette = sorted(set(training.table.elements) | {e for t in MIXED for e in parse(t).elements})

    def dense(comp: Composition) -> np.ndarray:
        v = np.zeros(len(palette))
        for el, x in comp.fractions.items():
            v[palette.index(el)] = x
        return v

    for r, text in enumerate(MIXED):
        for name, rows in training.targets.items():
            train = np.array([dense(parse(t)) for t in rows.compositions])
            d = np.abs(train - dense(parse(text))).sum(axis=1)
            assert out[f"{name}_nearest_distance"][r] == pytest.approx(d.min(), abs=1e-9)
            nearest = rows.compositions.index(out[f"{name}_nearest_composition"][r])
            assert d[nearest] == pytest.approx(d.min(), abs=1e-9)
            assert out[f"{name}_nearest_measured"][r] == rows.values[nearest]


def test_bundle_identity_is_exposed_and_pinnable(tiny_bundle: Path) -> None:
    digest = hashlib.sha256((tiny_bundle / "manifest.json").read_bytes()).hexdigest()
    p = load_model(tiny_bundle, device="cpu", precision="fp32", sha256=digest[:12].upper())
    assert p.bundle_sha256 == digest
    assert digest in p.summary
    assert pickle.loads(pickle.dumps(p)).bundle_sha256 == digest
    other = "0" * 64
    with pytest.raises(BundleError, match=f"SHA-256 {digest}, not the pinned {other}"):
        load_model(tiny_bundle, device="cpu", sha256=other)
    for bad in (digest[:11], "z" * 64, digest + "0"):
        with pytest.raises(UserInputError, match=r"not a hex digest.*at least 12"):
            load_model(tiny_bundle, device="cpu", sha256=bad)


def test_sessions_load_the_bytes_whose_hash_was_checked(tiny_bundle: Path, tmp_path) -> None:
    """Swapping a model file after the bundle was verified is caught when the session opens."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    p = load_model(copy, device="cpu", precision="fp32")
    fold_0, fold_1 = (copy / onnx_relpath("uts_mpa", k, "fp32") for k in (0, 1))
    shutil.copyfile(fold_1, fold_0)
    with pytest.raises(BundleError, match=r"fold_0\.fp32\.onnx does not match its SHA-256"):
        p._open_sessions(None)
