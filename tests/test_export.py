"""ONNX export of the transformer member with optimum, precision variants, parity checks,
``--member transformer`` and ``hea-export``'s command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
import pytest
import torch

from export.cli import main as export_main
from export.condition_bundle import write_condition_bundle
from export.onnx_export import INPUT_NAMES, check_graph
from export.parity import ParityBounds, compare
from export.transformer_member import VariantOptions
from hea_screen import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import TASKS, Condition
from hea_screen.datasets.sources import sha256_file
from hea_screen.errors import BundleError, UserInputError
from hea_screen.inference.bundle import load_task_bundle, transformer_relpath
from hea_screen.inference.bundle_files import MANIFEST_FILE
from hea_screen.inference.tokens import TokenEncoder, vocabulary

pytestmark = pytest.mark.slow

PROBES = ["CoCrFeMnNi", "Al0.5CoCrFeNi", "NbMoTaW", "CoCrNi", "Al0.3CoCrFeNiTi0.2Cu0.1Mo0.1"]
CPU = "CPUExecutionProvider"


@pytest.fixture(scope="session")
def manifest(transformer_bundle: Path) -> dict:
    return json.loads((transformer_bundle / MANIFEST_FILE).read_text())


def fold_dir(run: Path, fold: int) -> Path:
    return run / "conditions" / "transformer" / "seed_0" / f"fold_{fold}"


def test_manifest_describes_the_member(
    tiny_run: Path, transformer_bundle: Path, manifest: dict
) -> None:
    assert manifest["format_version"] == 2 and manifest["member"] == "transformer"
    assert {t.name for t in TASKS} == set(manifest["tasks"])  # every task it covers
    assert {info["kind"] for info in manifest["tasks"].values()} == {"transformer"}
    config = json.loads((fold_dir(tiny_run, 0) / "model" / "config.json").read_text())
    model = manifest["transformer"]["model"]
    assert (model["hidden_size"], model["num_layers"], model["num_heads"]) == (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
    )
    assert manifest["transformer"]["max_length"] == config["max_position_embeddings"]
    assert model["parameters"] > 0
    # the networks read the grain-size token, so the tasks' coverage gives the sizes' range
    reads = ["temperature", "processing", "grain_size"]
    assert manifest["transformer"]["condition_tokens"] == config["condition_inputs"] == reads
    assert manifest["transformer"]["vocab_size"] == config["vocab_size"] == len(vocabulary())
    sizes = manifest["tasks"]["uts_tension_mpa"]["conditions"]["grain_size_um"]
    assert sizes is not None and 0 < sizes[0] < sizes[1]
    for entry in manifest["tasks"]["hardness_hv"]["folds"]:
        scalers = json.loads((fold_dir(tiny_run, entry["fold"]) / "scalers.json").read_text())
        assert entry["scaler"] == pytest.approx(scalers["hardness_hv"])
    for rel, entry in manifest["files"].items():
        assert sha256_file(transformer_bundle / rel) == entry["sha256"]
    suffixes = {p.suffix for p in transformer_bundle.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".onnx", ".md", ".csv"}
    oof = pl.read_csv(transformer_bundle / "oof_predictions.csv")
    assert set(oof["model"]) == {"transformer"} and set(oof["partition"]) == {0, 1}
    assert "multi-task transformer" in (transformer_bundle / "README.md").read_text()


def test_every_fold_variant_has_recorded_parity(manifest: dict) -> None:
    variants = manifest["transformer"]["variants"]
    folds = manifest["transformer"]["folds"]
    fp32 = variants["fp32"]
    assert fp32["written"] and [r["fold"] for r in fp32["parity"]] == list(range(folds))
    assert all(r["max_abs_error"] <= 1e-4 and r["rows"] > 0 for r in fp32["parity"])
    fp16 = variants["fp16"]
    assert all(r["max_abs_error"] <= 1e-2 for r in fp16["parity"])
    if fp16["parity"][0]["provider"] == CPU:
        assert "not measured: no CUDA" in fp16["reason"]
    # the tiny bundle is written under the relaxed int8 bound of tests/conftest.py: each
    # fold's verdict must still follow from its recorded Spearman and R² loss
    int8 = variants["int8"]
    assert int8["bounds"]["int8_min_spearman"] == -1.0
    for r in int8["parity"]:
        meets = r["spearman"] >= -1.0 and r["r2_loss"] <= int8["bounds"]["int8_max_r2_loss"]
        assert r["passed"] == meets and r["rows"] > 0
    assert fp32["fused_operators"]["Attention"] == manifest["transformer"]["model"]["num_layers"]
    assert fp32["files"] == [transformer_relpath(k) for k in range(folds)]


def test_onnx_files_have_dynamic_axes_and_match_pytorch(
    tiny_run: Path, transformer_bundle: Path, manifest: dict
) -> None:
    """Independent of export.parity: ORT on the bundle file vs the PyTorch fold network."""
    from pretrain.multitask import load_fold

    outputs = len(manifest["transformer"]["outputs"])
    rel = transformer_relpath(1)
    check_graph(transformer_bundle / rel, outputs)
    graph = onnx.load(str(transformer_bundle / rel)).graph
    assert [i.name for i in graph.input] == list(INPUT_NAMES)
    encoder = TokenEncoder.load(
        transformer_bundle / "tokenizer", use_features=True, use_conditions=True
    )
    table = CompositionTable.from_compositions(PROBES)
    at = Condition.of("tension", 25, "wrought", 20.0)  # grain_10_50
    encoded = encoder.encode(table, featurize(table), at)  # 3..8 elements: padded
    assert encoder.token_id("grain_10_50") in encoded.input_ids[0]
    session = ort.InferenceSession(str(transformer_bundle / rel), providers=[CPU])
    model, _ = load_fold(fold_dir(tiny_run, 1))
    for batch in (
        encoded.as_dict(),
        {k: v[2:3, : int(encoded.attention_mask[2].sum())] for k, v in encoded.as_dict().items()},
    ):
        with torch.no_grad():
            expected = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
        got = session.run(["logits"], batch)[0]
        assert got.shape == (len(batch["input_ids"]), outputs)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_fp16_and_int8_files_are_valid_reduced_precision_graphs(transformer_bundle: Path) -> None:
    fp16 = onnx.load(str(transformer_bundle / transformer_relpath(0, "fp16")))
    onnx.checker.check_model(fp16)
    dtypes = {init.data_type for init in fp16.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes
    assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    int8 = onnx.load(str(transformer_bundle / transformer_relpath(0, "int8")))
    ops = {n.op_type for n in int8.graph.node}
    assert {"MatMulInteger", "QAttention"} <= ops
    sizes = {
        v: (transformer_bundle / transformer_relpath(0, v)).stat().st_size
        for v in ("fp32", "fp16", "int8")
    }
    assert sizes["int8"] < sizes["fp32"] and sizes["fp16"] < sizes["fp32"]


def test_compare_applies_each_bound() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 2))
    measured = {0: (np.arange(100), ref[:100, 0] + rng.normal(scale=0.5, size=100))}
    bounds = ParityBounds()

    def check(variant: str, candidate: np.ndarray):
        return compare(variant, 0, ref, candidate, measured, CPU, bounds)

    assert check("fp32", ref + 5e-5).passed
    assert not check("fp32", ref + 2e-4).passed
    assert check("fp16", ref + 5e-3).passed
    assert not check("fp16", ref + 2e-2).passed
    assert check("int8", ref * 1.01).passed
    shuffled = ref.copy()
    shuffled[:40, 1] = rng.permutation(shuffled[:40, 1])  # the unmeasured output ranks badly
    result = check("int8", shuffled)
    assert not result.passed and result.spearman < 0.99
    biased = check("int8", ref + 0.3)
    assert biased.spearman == pytest.approx(1.0) and biased.r2_loss > 0.01 and not biased.passed


def test_variant_missing_its_bound_is_not_written(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    options = VariantOptions(variants=("fp32", "fp16"), bounds=ParityBounds(fp16_max_abs=0.0))
    written = write_condition_bundle(
        tiny_run, out, allow_dirty=True, member="transformer", variants=options
    )
    variants = written["transformer"]["variants"]
    assert variants["fp32"]["written"]
    assert not variants["fp16"]["written"]
    assert "missed its parity bound" in variants["fp16"]["reason"]
    assert variants["fp16"]["parity"][0]["max_abs_error"] > 0
    assert not list(out.rglob("*.fp16.onnx")) and not list(out.rglob("*.int8.onnx"))
    assert variants["int8"] == {"written": False, "reason": "not requested at export"}
    assert tuple(load_task_bundle(out).variants) == ("fp32",)
    assert [p.name for p in tmp_path.iterdir()] == ["strict"]  # no staging directory left


def test_refuses_existing_output_and_bad_runs(
    tiny_run: Path, transformer_bundle: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserInputError, match="exists: pass --overwrite"):
        write_condition_bundle(tiny_run, transformer_bundle, allow_dirty=True)
    with pytest.raises(UserInputError, match=r"selection\.json is missing"):
        write_condition_bundle(tmp_path, tmp_path / "x", allow_dirty=True)
    with pytest.raises(UserInputError, match=r"variants \['bf16'\]: choose among"):
        VariantOptions(variants=("bf16",))
    with pytest.raises(UserInputError, match="fp32 included"):
        VariantOptions(variants=("int8",))
    with pytest.raises(UserInputError, match="member 'trees'"):
        write_condition_bundle(tiny_run, tmp_path / "x", allow_dirty=True, member="trees")
    assert not (tmp_path / "x").exists()


def test_run_that_does_not_reproduce_its_predictions_is_refused(
    tiny_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    recorded = run / "conditions" / "transformer_seed_0.parquet"
    frame = pl.read_parquet(recorded)
    frame.with_columns(pl.col("predicted") + 100.0).write_parquet(recorded)
    with pytest.raises(UserInputError, match="does not reproduce"):
        write_condition_bundle(
            run, tmp_path / "out", allow_dirty=True, member="transformer",
            variants=VariantOptions(variants=("fp32",)),
        )
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_cli_refuses_the_removed_paper_set_flags(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for argv in (
        ["--run", str(tiny_run), "--experiment", "pretrained-features-all", "--out", "b"],
        ["--run", str(tiny_run)],
        ["--experiment", "x", "--conditions", str(tiny_run), "--out", "b"],
    ):
        assert export_main(argv) == 2
        err = capsys.readouterr().err
        assert "no longer exported" in err and "--conditions RUN" in err
    assert export_main(["--out", str(tmp_path / "b")]) == 2
    assert "give --conditions RUN and --out BUNDLE" in capsys.readouterr().err
    assert export_main(["--conditions", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "selection.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_cli_exports_the_transformer_member(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    import export.condition_bundle as writer

    monkeypatch.setattr(writer, "git_state", lambda root: (None, False))  # tests: dirty tree
    out = tmp_path / "transformer"
    argv = ["--conditions", str(tiny_run), "--member", "transformer", "--variants", "fp16",
            "--out", str(out)]
    assert export_main(argv) == 0
    printed = capsys.readouterr().out
    assert "hardness_hv: Transformer" in printed and "transformer fp16 " in printed
    bundle = load_task_bundle(out)
    assert {t.kind for t in bundle.tasks} == {"transformer"}
    assert tuple(bundle.variants) in (("fp32", "fp16"), ("fp32",))  # fp16 if within bound
    assert "int8" not in bundle.variants
    with pytest.raises(BundleError):
        load_task_bundle(out / "tokenizer")


def test_member_transformer_needs_a_trained_transformer(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "conditions").mkdir(parents=True)
    for name in ("selection.json", "data.json"):
        shutil.copyfile(tiny_run / "conditions" / name, run / "conditions" / name)
    calibration = json.loads((tiny_run / "conditions" / "calibration.json").read_text())
    calibration.pop("transformer")
    (run / "conditions" / "calibration.json").write_text(json.dumps(calibration))
    with pytest.raises(UserInputError, match="has no transformer member: train it"):
        write_condition_bundle(run, tmp_path / "out", allow_dirty=True, member="transformer")
    assert not (tmp_path / "out").exists()
