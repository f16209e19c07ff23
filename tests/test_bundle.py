"""Bundle verification: every file hashed, tampering and incompleteness refused by name."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hea_screen import load_model
from hea_screen.conditions import TASKS
from hea_screen.errors import BundleError
from hea_screen.inference.bundle import load_task_bundle, task_relpath, transformer_relpath
from hea_screen.inference.bundle_files import MANIFEST_FILE, default_bundle_path

pytestmark = pytest.mark.slow


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(bundle, dst)
    return dst


@pytest.fixture
def copy(condition_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run's bundle (tabular members)."""
    return copy_of(condition_bundle, tmp_path)


@pytest.fixture
def tcopy(transformer_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run's transformer bundle (tokenizer, fp32/fp16/int8 networks)."""
    return copy_of(transformer_bundle, tmp_path)


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_intact_bundles_verify(condition_bundle: Path, transformer_bundle: Path) -> None:
    bundle = load_task_bundle(condition_bundle)
    assert {t.task.name for t in bundle.tasks} == {t.name for t in TASKS}
    assert all(len(t.files) >= 2 for t in bundle.tasks)
    transformer = load_task_bundle(transformer_bundle)
    assert transformer.encoder is not None and transformer.max_length >= 40
    assert tuple(transformer.variants) == ("fp32", "fp16", "int8")


def test_altered_byte_is_refused_naming_the_file(tcopy: Path) -> None:
    target = tcopy / transformer_relpath(0, "int8")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"fold_0\.int8\.onnx.*SHA-256"):
        load_task_bundle(tcopy)
    with pytest.raises(BundleError, match=r"fold_0\.int8\.onnx"):
        load_model(tcopy, precision="fp32")  # refused even though fp32 does not use that file


def test_truncated_file_is_refused(tcopy: Path) -> None:
    target = tcopy / "tokenizer" / "tokenizer.json"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"tokenizer\.json has 100 bytes.*truncated"):
        load_task_bundle(tcopy)


def test_missing_file_is_refused(copy: Path) -> None:
    (copy / "training_set.json").unlink()
    with pytest.raises(BundleError, match=r"training_set\.json is missing"):
        load_task_bundle(copy)


def test_unlisted_file_is_refused(copy: Path) -> None:
    (copy / "hardness_hv" / "extra.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match=r"extra\.onnx is not listed"):
        load_task_bundle(copy)


def test_manifest_that_lies_is_refused(copy: Path) -> None:
    def drop_file_entry(m: dict) -> None:
        del m["files"][task_relpath("hardness_hv", 1)]

    edit_manifest(copy, drop_file_entry)
    with pytest.raises(BundleError, match=r"fold_1\.onnx is not listed"):
        load_task_bundle(copy)


def test_paths_outside_the_bundle_are_refused(copy: Path) -> None:
    edit_manifest(copy, lambda m: m["files"].update({"../escape.txt": {"sha256": "0", "bytes": 1}}))
    with pytest.raises(BundleError, match=r"\.\./escape\.txt.*inside the bundle"):
        load_task_bundle(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m.update(format_version=1), "format 1 are no longer read.*--conditions"),
        (lambda m: m.pop("tasks"), "lacks a valid 'tasks'"),
        (lambda m: m.pop("files"), "lacks a valid 'files'"),
    ],
)
def test_bad_manifest_content_is_refused(copy: Path, change, message: str) -> None:
    edit_manifest(copy, change)
    # The manifest is not itself hashed: its content is checked field by field.
    with pytest.raises(BundleError, match=message):
        load_task_bundle(copy)


def scaler(task: str, fold: int, **values) -> Callable[[dict], None]:
    return lambda m: m["tasks"][task]["folds"][fold]["scaler"].update(values)


def variant(name: str, **values) -> Callable[[dict], None]:
    return lambda m: m["transformer"]["variants"][name].update(values)


def swap_tasks(m: dict) -> None:
    hardness, uts = m["tasks"]["hardness_hv"]["folds"], m["tasks"]["uts_tension_mpa"]["folds"]
    for a, b in zip(hardness, uts):
        a["file"], b["file"] = b["file"], a["file"]


def renumber(m: dict) -> None:
    for entry in m["tasks"]["hardness_hv"]["folds"]:
        entry["fold"] += 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            swap_tasks,
            r"task uts_tension_mpa fold 0 points at 'hardness_hv/fold_0\.onnx'; "
            r"expected 'uts_tension_mpa/fold_0\.onnx'",
        ),
        (renumber, r"task hardness_hv fold 0 points at 'hardness_hv/fold_0\.onnx'"),
        (
            lambda m: m["tasks"]["hardness_hv"]["folds"][1].update(fold=True),
            r"task hardness_hv fold 1 lacks a valid 'fold'",
        ),
        (lambda m: m["tasks"]["hardness_hv"].update(kind="pickle"), "kind 'pickle'"),
        (lambda m: m["tasks"].update(uts_mpa=m["tasks"]["hardness_hv"]), "unknown task 'uts_mpa'"),
        (lambda m: m["tasks"]["hardness_hv"].update(folds=[]), "hardness_hv has no fold models"),
        (lambda m: m.update(interval=1.5), r"interval 1\.5 must lie in \(0, 1\)"),
    ],
)
def test_every_tabular_manifest_value_is_checked(copy: Path, change, message: str) -> None:
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match=message):
        load_task_bundle(copy)
    with pytest.raises(BundleError, match=message):
        load_model(copy, device="cpu")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (scaler("hardness_hv", 0, mean=99999.0), r"hardness_hv fold 0 scaler .*does not fit"),
        (scaler("hardness_hv", 1, mean=float("nan")), "holds NaN"),
        (scaler("uts_tension_mpa", 1, std=float("inf")), "holds Infinity"),
        (scaler("uts_tension_mpa", 0, std=1e999), "holds Infinity"),
        (scaler("hardness_hv", 2, std=1e6), r"hardness_hv fold 2 scaler \(mean .*std 1e\+06\)"),
        (scaler("hardness_hv", 0, std=0.0), r"hardness_hv fold 0 scaler"),
        (scaler("hardness_hv", 1, mean="500"), r"hardness_hv fold 1 scaler lacks a valid 'mean'"),
        (
            variant("fp16", files=[transformer_relpath(0, "fp16")] * 3),
            r"transformer variant fp16 lists files .*expected",
        ),
        (
            variant("int8", written=False),
            r"lists 'transformer/fold_0\.int8\.onnx'.*which no model uses",
        ),
        (
            lambda m: m["transformer"]["variants"].update(bf16={"written": False}),
            r"transformer variant\(s\) \['bf16'\]",
        ),
        (variant("fp32", written=False), "fp32 variant is not written"),
        (lambda m: m["transformer"].pop("max_length"), "transformer lacks a valid 'max_length'"),
        (
            lambda m: m["transformer"].update(outputs=m["transformer"]["outputs"][::-1]),
            "transformer outputs must be",
        ),
    ],
)
def test_every_transformer_manifest_value_is_checked(tcopy: Path, change, message: str) -> None:
    edit_manifest(tcopy, change)
    with pytest.raises(BundleError, match=message):
        load_task_bundle(tcopy)
    with pytest.raises(BundleError, match=message):
        load_model(tcopy, device="cpu")


def test_repeated_manifest_key_is_refused(copy: Path) -> None:
    path = copy / MANIFEST_FILE
    text = path.read_text()
    path.write_text(
        text.replace('"format_version": 2,', '"format_version": 2, "format_version": 2,')
    )
    with pytest.raises(BundleError, match="repeats the key 'format_version'"):
        load_task_bundle(copy)


def rewrite(bundle: Path, rel: str, content: str) -> None:
    """Replace a file and record its new hash and size, as a careful tamperer would."""
    (bundle / rel).write_text(content)
    data = (bundle / rel).read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    edit_manifest(bundle, lambda m: m["files"].update({rel: entry}))


@pytest.mark.parametrize(
    ("rel", "content", "message"),
    [
        (
            "tokenizer/tokenizer.json",
            "{}",
            r"tokenizer\.json is not a tokenizers tokenizer \(Model missing",
        ),
        (
            "tokenizer/feature_bins.json",
            "{}",
            r"feature_bins\.json is malformed: it must hold n_bins",
        ),
        (
            "tokenizer/feature_bins.json",
            '{"n_bins": 32, "features": ["vec"], "edges": {}}',
            r"feature_bins\.json is malformed",
        ),
        ("training_set.json", "{}", r"training_set\.json: .*malformed \(KeyError\('targets'\)\)"),
        ("training_set.json", "[1, 2]", r"training_set\.json: .*malformed"),
        (
            "training_set.json",
            '{"targets": {"hardness_hv": {"compositions": ["CoCrNi"], "values": [NaN]}}}',
            r"training_set\.json: .*malformed .*NaN",
        ),
        (
            "training_set.json",
            '{"targets": {"hardness_hv": {"compositions": ["CoCrXx"], "values": [1.0]}}}',
            r"training_set\.json: .*bad composition: .*Xx",
        ),
        (
            "training_set.json",
            '{"targets": {"hardness_hv": {"compositions": ["CoCrNi", "FeNi"], '
            '"values": [400, 600]}}}',
            r"training_set\.json has no measured values of 'uts_tension_mpa'",
        ),
    ],
)
def test_malformed_files_with_matching_hash_are_refused(
    tcopy: Path, rel: str, content: str, message: str
) -> None:
    rewrite(tcopy, rel, content)
    with pytest.raises(BundleError, match=message):
        load_task_bundle(tcopy)


@pytest.mark.parametrize(
    "rel", [MANIFEST_FILE, "tokenizer/special_tokens_map.json", "transformer", "training_set.json"]
)
def test_symlinks_are_refused(tcopy: Path, tmp_path: Path, rel: str) -> None:
    """Even a symlink to an identical copy: its target could be swapped after the check."""
    outside = tmp_path / "outside" / rel
    outside.parent.mkdir(parents=True)
    (tcopy / rel).rename(outside)
    (tcopy / rel).symlink_to(outside, target_is_directory=outside.is_dir())
    with pytest.raises(BundleError, match=f"{rel} is a symlink"):
        load_task_bundle(tcopy)


def test_identity_is_the_manifest_sha256(condition_bundle: Path) -> None:
    digest = hashlib.sha256((condition_bundle / MANIFEST_FILE).read_bytes()).hexdigest()
    assert load_task_bundle(condition_bundle).sha256 == digest
    assert load_task_bundle(condition_bundle, sha256=digest[:12]).sha256 == digest
    with pytest.raises(BundleError, match=f"{digest}, not the pinned {'f' * 16}"):
        load_task_bundle(condition_bundle, sha256="f" * 16)


def test_shipped_bundle_passes_every_check() -> None:
    """The shipped bundle is condition-aware (format 2) and predicts every task."""
    bundle = load_task_bundle(default_bundle_path())
    assert {t.task.name for t in bundle.tasks} == {t.name for t in TASKS}


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        load_task_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_task_bundle(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_task_bundle(tmp_path)


def test_light_install_loads_and_predicts_without_training_libraries(
    transformer_bundle: Path,
) -> None:
    """The screening path imports neither torch, transformers nor optimum, and works offline."""
    code = (
        "import sys, hea_screen\n"
        f"p = hea_screen.load_model({str(transformer_bundle)!r}, device='cpu')\n"
        "out = p.predict(['CoCrFeMnNi', 'Al0.5CoCrFeNi'])\n"
        "assert out.height == 2 and p.precision == 'int8'\n"
        "heavy = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd())}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


def test_import_of_hea_screen_does_not_load_onnxruntime() -> None:
    code = "import sys, hea_screen; assert 'onnxruntime' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
