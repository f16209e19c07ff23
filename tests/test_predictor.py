"""The predictor: fold-ensemble predictions, length bucketing, validation, providers,
applicability; on the tiny run's transformer bundle and the shipped bundle."""

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

from hea_screen import Composition, featurize, load_model, parse
from hea_screen.compositions.elements import supported_elements
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import PHASES, REGRESSION_TASKS, Condition
from hea_screen.errors import BundleError, CompositionError, ElementDataError, UserInputError
from hea_screen.inference import bundle_files
from hea_screen.inference.applicability import NEAREST_COLUMNS
from hea_screen.inference.bundle import transformer_relpath
from hea_screen.inference.bundle_files import bundle_root, default_bundle_path
from hea_screen.inference.predictor import TaskPredictor
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
AT = Condition.of("compression", 25, "cast")
UTS = "uts_tension_mpa"


def columns() -> list[str]:
    """Every column of a transformer bundle's prediction, in order."""
    out = ["composition"]
    for t in REGRESSION_TASKS:
        out += [f"{t.name}_{s}" for s in ("mean", "std", "lo", "hi")]
    out += [f"phase_{p.lower()}_prob" for p in PHASES]
    out += ["extrapolated_tasks", "unseen_elements"]
    for t in REGRESSION_TASKS:
        out += [f"{t.name}_{s}" for s in NEAREST_COLUMNS]
    return out


@pytest.fixture(scope="module")
def predictor(transformer_bundle: Path) -> TaskPredictor:
    return load_model(transformer_bundle, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def manifest(transformer_bundle: Path) -> dict:
    return json.loads((transformer_bundle / "manifest.json").read_text())


class Spy:
    """Records the batches a predictor hands to ONNX Runtime (and still runs them)."""

    def __init__(self, predictor: TaskPredictor, monkeypatch: pytest.MonkeyPatch):
        self.feeds: list[dict[str, np.ndarray]] = []
        run = predictor._run

        def recording(sessions, feed):
            self.feeds.append(feed)
            return run(sessions, feed)

        monkeypatch.setattr(predictor, "_run", recording)


def test_columns_order_and_units(predictor: TaskPredictor) -> None:
    out = predictor.predict(MIXED)
    assert out.columns == columns()
    assert out["composition"].to_list() == [str(parse(t)) for t in MIXED]
    assert out.schema[f"{UTS}_mean"] == pl.Float64
    assert (out[f"{UTS}_std"] >= 0).all() and (out["hardness_hv_std"] >= 0).all()
    assert predictor.provider == "CPUExecutionProvider" and predictor.precision == "fp32"
    assert "transformer on CPUExecutionProvider (fp32)" in predictor.summary


def test_mean_and_std_over_folds_in_task_units(tiny_run: Path, predictor: TaskPredictor) -> None:
    """Oracle: every PyTorch fold network of the run, its scalers inverted, then mean and std."""
    from pretrain.multitask import OUTPUT_TASKS, predict_outputs

    out = predictor.predict(MIXED, AT)
    table = CompositionTable.from_compositions(MIXED)
    folds = sorted((tiny_run / "conditions" / "transformer" / "seed_0").glob("fold_*"))
    values = np.stack(
        [predict_outputs(f, tiny_run / "tokenizer", table, None, AT) for f in folds]
    )
    for task in REGRESSION_TASKS:
        j = OUTPUT_TASKS.index(task.name)
        scale = float(np.std(values[:, :, j])) + 1.0
        np.testing.assert_allclose(
            out[f"{task.name}_mean"], values[:, :, j].mean(axis=0), atol=1e-4 * scale
        )
        np.testing.assert_allclose(
            out[f"{task.name}_std"], values[:, :, j].std(axis=0, ddof=1), atol=1e-4 * scale
        )


def test_batches_are_grouped_by_length_and_never_padded(
    predictor: TaskPredictor, monkeypatch
) -> None:
    reference = predictor.predict(MIXED)
    spy = Spy(predictor, monkeypatch)
    out = predictor.predict(MIXED)
    lengths = sorted({len(parse(t)) for t in MIXED})
    assert len(spy.feeds) == len(lengths)  # one call per length: every fold on one encoding
    widths = sorted({f["input_ids"].shape[1] for f in spy.feeds})
    assert widths == [2 * k + 20 for k in lengths]  # 14 feature and 3 condition tokens
    assert all(f["attention_mask"].all() for f in spy.feeds)  # no padding anywhere
    assert out.equals(reference)
    one_by_one = pl.concat([predictor.predict([t]) for t in MIXED])
    np.testing.assert_allclose(one_by_one[f"{UTS}_mean"], out[f"{UTS}_mean"], rtol=1e-5)


def test_batch_size_bounds_every_model_call(
    transformer_bundle: Path, predictor: TaskPredictor, monkeypatch
) -> None:
    small = load_model(transformer_bundle, device="cpu", precision="fp32", batch_size=2)
    spy = Spy(small, monkeypatch)
    texts = MIXED * 3
    out = small.predict(texts)
    assert max(len(f["input_ids"]) for f in spy.feeds) == 2
    np.testing.assert_allclose(out[f"{UTS}_mean"], predictor.predict(texts)[f"{UTS}_mean"],
                               rtol=1e-5)


def supported_elements_for_length() -> list[str]:
    """Metals whose property data and pairwise mixing enthalpies are all tabulated."""
    picks = ["Al", "Co", "Cr", "Cu", "Fe", "Mn", "Mo", "Nb", "Ni", "Ti", "V", "Zr", "Hf", "Ta"]
    picks += ["W", "Si", "Sn", "Zn", "Mg", "Pd", "Ag", "Au", "Re", "Y"]
    return [e for e in picks if e in supported_elements()]


def test_input_is_validated_before_any_model_call(predictor: TaskPredictor, monkeypatch) -> None:
    spy = Spy(predictor, monkeypatch)
    with pytest.raises(CompositionError, match="Xx"):
        predictor.predict([*MIXED, "CoCrXx"])
    with pytest.raises(ElementDataError, match="Og"):
        predictor.predict([*MIXED, "CoCrOg"])
    with pytest.raises(UserInputError, match="DataFrame"):
        predictor.predict(pl.DataFrame({"composition": MIXED}))
    with pytest.raises(UserInputError, match="int"):
        predictor.predict(42)
    limit = predictor.bundle.max_length
    k = next(k for k in range(1, 40) if 2 * k + 20 > limit)
    crowded = "".join(supported_elements_for_length()[:k])
    with pytest.raises(UserInputError, match=f"{k} elements.*at most {limit} tokens"):
        predictor.predict([*MIXED, crowded])
    assert spy.feeds == []


def test_input_types_and_bad_rows_are_refused_before_any_model_call(monkeypatch) -> None:
    """The shipped bundle: no training needed to check what predict() accepts."""
    shipped = load_model(device="cpu")
    runs: list[str] = []
    model_run = shipped._task_columns
    monkeypatch.setattr(
        shipped, "_task_columns", lambda m, *a: runs.append(m.task.name) or model_run(m, *a)
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


def test_accepted_input_forms_agree(predictor: TaskPredictor) -> None:
    table = CompositionTable.from_compositions(MIXED)
    base = predictor.predict(table)
    assert predictor.predict(MIXED).equals(base)
    assert predictor.predict(parse(t) for t in MIXED).equals(base)
    assert predictor.predict(pl.Series(MIXED)).equals(base)
    assert predictor.predict(Composition.from_amounts({"Fe": 1, "Ni": 1})).height == 1
    assert predictor.predict("FeNi")["composition"].to_list() == ["Fe0.5 Ni0.5"]
    empty = predictor.predict([])
    assert empty.columns == columns() and empty.height == 0
    assert load_model(device="cpu").predict([]).height == 0  # tabular members too


def test_caller_features_are_used_and_checked(predictor: TaskPredictor) -> None:
    table = CompositionTable.from_compositions(MIXED)
    features = featurize(table)
    assert predictor.predict(table, features=features).equals(predictor.predict(table))
    with pytest.raises(UserInputError, match="row 0 is for"):
        predictor.predict(table, features=features.reverse())
    with pytest.raises(UserInputError, match="rows for"):
        predictor.predict(table, features=features.head(3))
    with pytest.raises(UserInputError, match="lacks column"):
        predictor.predict(table, features=features.drop("vec"))
    with pytest.raises(UserInputError, match="polars DataFrame"):
        predictor.predict(table, features=features.to_dicts())


def test_precisions_run_their_own_files(transformer_bundle: Path, manifest: dict) -> None:
    """Oracle: the predictor's int8 mean equals the mean of the int8 files run directly."""
    int8 = load_model(transformer_bundle, device="cpu", precision="int8")
    assert int8.precision == "int8"
    table = CompositionTable.from_compositions(MIXED)
    assert int8.bundle.encoder is not None
    encoded = int8.bundle.encoder.encode(table, featurize(table), AT)
    j = manifest["transformer"]["outputs"].index(UTS)
    values = []
    for entry in manifest["tasks"][UTS]["folds"]:
        session = ort.InferenceSession(
            str(transformer_bundle / transformer_relpath(entry["fold"], "int8")),
            providers=["CPUExecutionProvider"],
        )
        z = session.run(["logits"], encoded.as_dict())[0][:, j]
        values.append(z * entry["scaler"]["std"] + entry["scaler"]["mean"])
    np.testing.assert_allclose(
        int8.predict(MIXED, AT)[f"{UTS}_mean"], np.mean(values, axis=0), rtol=1e-4
    )


def test_cpu_default_is_int8_when_the_bundle_has_it(transformer_bundle: Path) -> None:
    cpu = load_model(transformer_bundle, device="cpu")
    assert (cpu.provider, cpu.precision) == ("CPUExecutionProvider", "int8")
    auto = load_model(transformer_bundle)
    if cuda_usable():
        assert (auto.provider, auto.precision) == ("CUDAExecutionProvider", "fp16")
    else:
        assert (auto.provider, auto.precision) == ("CPUExecutionProvider", "int8")


def test_sessions_cache_no_buffers_between_calls(predictor: TaskPredictor) -> None:
    """No per-session arena and no per-shape memory pattern: resident memory must not grow
    with the number of distinct batch shapes a long screen meets (docs/inference.md)."""
    predictor.predict(MIXED)
    assert predictor._sessions
    for session in predictor._sessions.values():
        options = session.get_session_options()
        assert not options.enable_cpu_mem_arena
        assert not options.enable_mem_pattern


def test_io_binding_path_gives_the_same_answer(
    transformer_bundle: Path, predictor: TaskPredictor
) -> None:
    bound = load_model(transformer_bundle, device="cpu", precision="fp32", io_binding=True)
    assert bound.io_binding and "I/O binding" in bound.summary
    np.testing.assert_allclose(
        bound.predict(MIXED)[f"{UTS}_mean"], predictor.predict(MIXED)[f"{UTS}_mean"], rtol=1e-6
    )


def test_device_and_precision_choices_are_checked(transformer_bundle: Path) -> None:
    with pytest.raises(UserInputError, match=r"unknown device 'tpu'.*auto, cpu, cuda"):
        load_model(transformer_bundle, device="tpu")
    with pytest.raises(UserInputError, match="unknown precision 'bf16'"):
        load_model(transformer_bundle, precision="bf16")
    with pytest.raises(UserInputError, match="batch_size"):
        load_model(transformer_bundle, batch_size=0)
    with pytest.raises(UserInputError, match="does not run on CPUExecutionProvider"):
        load_model(transformer_bundle, device="cpu", precision="fp16")
    with pytest.raises(BundleError, match=r"no int8 variant \(the bundle has no transformer"):
        load_model(device="cpu", precision="int8")
    if not cuda_usable():
        for bundle in (transformer_bundle, None):  # the shipped bundle too (issue 19 item 12)
            with pytest.raises(UserInputError, match=r"device='cuda'.*no usable CUDA GPU"):
                load_model(bundle, device="cuda")
            with pytest.raises(UserInputError, match=r"device='cuda'.*no usable CUDA GPU"):
                load_model(bundle, device="cuda", precision="fp16")
        with pytest.raises(UserInputError, match=r"fp16.*CUDA only"):
            load_model(transformer_bundle, precision="fp16")


def test_default_bundle_and_shipped_names(monkeypatch, transformer_bundle: Path) -> None:
    out = load_model().predict(["CoCrFeMnNi"])
    assert out.height == 1 and out[f"{UTS}_mean"][0] > 0
    assert bundle_root("default") == bundle_root(None) == default_bundle_path()
    assert bundle_root("./transformer") == Path("transformer")  # a path, not the name
    models = transformer_bundle.parent / "models"
    monkeypatch.setattr(bundle_files, "shipped_bundle_path", lambda name: models / name)
    with pytest.raises(BundleError, match="no shipped 'transformer' model bundle"):
        load_model("transformer")
    models.mkdir(exist_ok=True)
    shutil.copytree(transformer_bundle, models / "transformer", dirs_exist_ok=True)
    assert load_model("transformer", device="cpu").bundle.path == models / "transformer"


def test_pickles_as_path_and_options(transformer_bundle: Path) -> None:
    p = load_model(transformer_bundle, device="cpu", precision="int8", batch_size=7)
    blob = pickle.dumps(p)
    assert len(blob) < 2000  # no model bytes, no sessions
    q = pickle.loads(blob)
    assert (q.provider, q.precision, q.batch_size) == (p.provider, p.precision, 7)
    assert q.predict(MIXED).equals(p.predict(MIXED))


def test_applicability_columns(predictor: TaskPredictor) -> None:
    training = predictor.training_set
    ts, key = training.targets[UTS], Condition().measured_key  # cast, room: the default
    i = next(i for i, at in enumerate(ts.measured_at) if key in at)
    known = ts.compositions[i]
    out = predictor.predict([known])
    assert out[f"{UTS}_nearest_distance"][0] == 0.0
    assert out[f"{UTS}_nearest_composition"][0] == known
    assert out[f"{UTS}_nearest_measured"][0] == ts.measured_at[i][key]
    assert out[f"{UTS}_nearest_condition"][0] == "cast, room"
    assert out["unseen_elements"][0] == ""
    seen = frozenset.intersection(*(training.seen_elements(t.name) for t in REGRESSION_TASKS))
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
    assert row[f"{UTS}_nearest_distance"][0] > 0


def test_nearest_distance_is_per_task() -> None:
    """An alloy whose hardness was measured but not its tensile UTS: its hardness datum is
    at distance 0, its UTS datum is another alloy; no pooled 0.0 may suggest a UTS."""
    model = load_model(device="cpu")
    hardness = model.training_set.targets["hardness_hv"].compositions
    tensile = set(model.training_set.targets[UTS].compositions)
    alloy = next(c for c in hardness if c not in tensile)
    out = model.predict([alloy], tasks=[UTS, "hardness_hv"])
    assert out["hardness_hv_nearest_distance"][0] == 0.0
    assert out["hardness_hv_nearest_composition"][0] == alloy
    assert out[f"{UTS}_nearest_distance"][0] > 0
    assert out[f"{UTS}_nearest_composition"][0] != alloy
    assert not [c for c in out.columns if c.startswith("nearest_train")]


def test_nearest_distance_is_the_brute_force_l1(predictor: TaskPredictor) -> None:
    training = predictor.training_set
    out = predictor.predict(MIXED)
    palette = sorted(set(training.table.elements) | {e for t in MIXED for e in parse(t).elements})

    def dense(comp: Composition) -> np.ndarray:
        v = np.zeros(len(palette))
        for el, x in comp.fractions.items():
            v[palette.index(el)] = x
        return v

    key = Condition().measured_key  # only alloys measured at the stated route and band count
    for r, text in enumerate(MIXED):
        for name, rows in training.targets.items():
            keep = [i for i, at in enumerate(rows.measured_at) if key in at]
            train = np.array([dense(parse(rows.compositions[i])) for i in keep])
            d = np.abs(train - dense(parse(text))).sum(axis=1)
            assert out[f"{name}_nearest_distance"][r] == pytest.approx(d.min(), abs=1e-9)
            nearest = keep.index(rows.compositions.index(out[f"{name}_nearest_composition"][r]))
            assert d[nearest] == pytest.approx(d.min(), abs=1e-9)
            assert out[f"{name}_nearest_measured"][r] == rows.measured_at[keep[nearest]][key]


def test_bundle_identity_is_exposed_and_pinnable(transformer_bundle: Path) -> None:
    digest = hashlib.sha256((transformer_bundle / "manifest.json").read_bytes()).hexdigest()
    p = load_model(transformer_bundle, device="cpu", precision="fp32", sha256=digest[:12].upper())
    assert p.bundle_sha256 == digest
    assert digest in p.summary
    assert pickle.loads(pickle.dumps(p)).bundle_sha256 == digest
    other = "0" * 64
    with pytest.raises(BundleError, match=f"SHA-256 {digest}, not the pinned {other}"):
        load_model(transformer_bundle, device="cpu", sha256=other)
    for bad in (digest[:11], "z" * 64, digest + "0"):
        with pytest.raises(UserInputError, match=r"not a hex digest.*at least 12"):
            load_model(transformer_bundle, device="cpu", sha256=bad)


def test_sessions_load_the_bytes_whose_hash_was_checked(
    transformer_bundle: Path, tmp_path: Path
) -> None:
    """Swapping a model file after the bundle was verified is caught when the session opens."""
    copy = tmp_path / "bundle"
    shutil.copytree(transformer_bundle, copy)
    p = load_model(copy, device="cpu", precision="fp32")
    fold_0, fold_1 = (copy / transformer_relpath(k) for k in (0, 1))
    shutil.copyfile(fold_1, fold_0)
    with pytest.raises(BundleError, match=r"fold_0\.onnx does not match its SHA-256"):
        p.predict(MIXED)


@pytest.mark.skipif(cuda_usable(), reason="checks the refusal where no GPU is usable")
@pytest.mark.parametrize(
    "command",
    [
        ["--elements", "Co,Cr,Fe,Ni", "--top", "3", "--quiet"],
        ["--elements", "Co,Cr,Fe,Ni", "--top", "3", "--quiet", "--precision", "fp16"],
        ["predict", "{file}", "--quiet"],
        ["batch", "{spec}", "--out", "{job}", "--quiet"],
    ],
)
def test_cli_refuses_cuda_without_a_gpu_before_any_work(capsys, tmp_path, command) -> None:
    """Issue 19 item 12: --device cuda (with or without fp16) ran on the CPU, exit 0."""
    from hea_screen.cli import main

    (tmp_path / "in.csv").write_text("composition\nCoCrFeMnNi\n")
    (tmp_path / "spec.yaml").write_text("space:\n  elements: [Co, Cr, Fe, Ni]\n")
    places = {"{file}": tmp_path / "in.csv", "{spec}": tmp_path / "spec.yaml",
              "{job}": tmp_path / "job"}
    argv = [str(places.get(a, a)) for a in command] + ["--device", "cuda"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    # batch states its condition and model first (issue 20); the error is the last line
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: device='cuda' was requested but no usable CUDA GPU")
    assert "Traceback" not in err and not (tmp_path / "job").exists()


def test_cli_model_transformer_names_the_shipped_folder(capsys, monkeypatch, tmp_path) -> None:
    from hea_screen.cli import main

    monkeypatch.setattr(bundle_files, "shipped_bundle_path", lambda name: tmp_path / name)
    assert main(["--elements", "Co,Cr,Fe,Ni", "--top", "3", "--model", "transformer"]) == 2
    err = capsys.readouterr().err
    assert f"no shipped 'transformer' model bundle at {tmp_path / 'transformer'}" in err


def _means(model: TaskPredictor, grain_size_um: float | None) -> np.ndarray:
    at = Condition.of("tension", 25, "wrought", grain_size_um)
    out = model.predict(MIXED, at, applicability=False)
    return out.select(f"{t.name}_mean" for t in REGRESSION_TASKS).to_numpy()


def test_grain_size_reaches_the_transformer(predictor: TaskPredictor) -> None:
    """The tiny run's transformer was trained with the grain-size token (its manifest says
    so): a stated grain size changes its inputs and so its predictions."""
    assert predictor.bundle.encoder.use_grain_size
    table = CompositionTable.from_compositions(MIXED)
    feats = featurize(table)
    ids = {d: np.concatenate([e.input_ids.ravel() for _, e in predictor._encode(
        table, feats, Condition.of("tension", 25, "wrought", d))]) for d in (1.0, 500.0, None)}
    assert all((ids[a] != ids[b]).any() for a, b in ((1.0, 500.0), (1.0, None), (500.0, None)))
    assert not np.array_equal(_means(predictor, 1.0), _means(predictor, 500.0))


def test_bundles_without_the_grain_token_ignore_the_grain_size(
    transformer_bundle: Path, tmp_path: Path
) -> None:
    """A manifest without ``transformer.condition_tokens`` (every bundle exported before the
    grain-size token) encodes temperature and route only; the shipped one lists the token."""
    old = tmp_path / "old"
    shutil.copytree(transformer_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["transformer"].pop("condition_tokens") == [
        "temperature", "processing", "grain_size"]  # fmt: skip
    (old / "manifest.json").write_text(json.dumps(manifest))
    model = load_model(old, device="cpu", precision="fp32")
    assert not model.bundle.encoder.use_grain_size
    base = _means(model, None)
    assert np.isfinite(base).all()
    assert np.array_equal(_means(model, 1.0), base)
    assert np.array_equal(_means(model, 500.0), base)
    assert load_model("transformer", device="cpu").bundle.encoder.use_grain_size
    manifest["transformer"]["condition_tokens"] = ["temperature", "grain_size"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"condition_tokens \['temperature', 'grain_size'\]"):
        load_model(old, device="cpu")
