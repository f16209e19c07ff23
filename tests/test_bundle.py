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
from hea_screen.inference.bundle import load_task_bundle
from hea_screen.inference.paper_bundle import (
    MANIFEST_FILE,
    default_bundle_path,
    load_bundle,
    onnx_relpath,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_intact_bundle_verifies(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert bundle.use_features and bundle.max_length >= 20
    assert all(len(t.folds) >= 2 for t in bundle.targets)


def test_altered_byte_is_refused_naming_the_file(copy: Path) -> None:
    target = copy / onnx_relpath("uts_mpa", 0, "int8")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"fold_0\.int8\.onnx.*SHA-256"):
        load_bundle(copy)
    with pytest.raises(BundleError, match=r"fold_0\.int8\.onnx"):
        load_model(copy, precision="fp32")  # refused even though fp32 does not use that file


def test_truncated_file_is_refused(copy: Path) -> None:
    target = copy / "tokenizer" / "tokenizer.json"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"tokenizer\.json has 100 bytes.*truncated"):
        load_bundle(copy)


def test_missing_file_is_refused(copy: Path) -> None:
    (copy / "training_set.json").unlink()
    with pytest.raises(BundleError, match=r"training_set\.json is missing"):
        load_bundle(copy)


def test_unlisted_file_is_refused(copy: Path) -> None:
    (copy / "uts_mpa" / "extra.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match=r"extra\.onnx is not listed"):
        load_bundle(copy)


def test_manifest_that_lies_is_refused(copy: Path) -> None:
    def drop_file_entry(m: dict) -> None:
        del m["files"][onnx_relpath("uts_mpa", 1, "fp32")]

    edit_manifest(copy, drop_file_entry)
    with pytest.raises(BundleError, match=r"fold_1\.fp32\.onnx is not listed"):
        load_bundle(copy)


def test_paths_outside_the_bundle_are_refused(copy: Path) -> None:
    edit_manifest(copy, lambda m: m["files"].update({"../escape.txt": {"sha256": "0", "bytes": 1}}))
    with pytest.raises(BundleError, match=r"\.\./escape\.txt.*inside the bundle"):
        load_bundle(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m.pop("targets"), "lacks 'targets'"),
        (lambda m: m["targets"]["uts_mpa"]["folds"][0]["scaler"].update(std=0.0), "std 0.0"),
    ],
)
def test_bad_manifest_content_is_refused(copy: Path, change, message: str) -> None:
    edit_manifest(copy, change)
    # The manifest is not itself hashed: its content is checked field by field.
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


def swap_targets(m: dict) -> None:
    uts, elong = m["targets"]["uts_mpa"]["folds"], m["targets"]["elongation_pct"]["folds"]
    for a, b in zip(uts, elong):
        a["files"], b["files"] = b["files"], a["files"]


def renumber(m: dict) -> None:
    for entry in m["targets"]["elongation_pct"]["folds"]:
        entry["fold"] += 1
        entry["files"] = {
            v: onnx_relpath("elongation_pct", entry["fold"], v) for v in entry["files"]
        }


def scaler(target: str, fold: int, **values) -> Callable[[dict], None]:
    return lambda m: m["targets"][target]["folds"][fold]["scaler"].update(values)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            scaler("uts_mpa", 0, mean=99999.0),
            r"scaler of uts_mpa fold 0 \(mean 99999, .*does not fit",
        ),
        (scaler("uts_mpa", 2, mean=float("nan")), "holds NaN"),
        (scaler("elongation_pct", 1, std=float("inf")), "holds Infinity"),
        (scaler("uts_mpa", 0, std=1e999), "holds Infinity"),
        (
            scaler("elongation_pct", 3, std=1e6),
            r"elongation_pct fold 3 .*std 1e\+06.*std be > 0 and at most 58\.9",
        ),
        (scaler("uts_mpa", 1, mean="1600"), r"uts_mpa folds\[1\] \(fold 1\) scaler mean is '1600'"),
        (
            swap_targets,
            r"manifest\.json: the fp32 file of uts_mpa fold 0 is "
            r"'elongation_pct/fold_0\.fp32\.onnx', it must be 'uts_mpa/fold_0\.fp32\.onnx'",
        ),
        (
            lambda m: m["targets"]["uts_mpa"]["folds"][1].update(
                files=m["targets"]["uts_mpa"]["folds"][0]["files"]
            ),
            r"'uts_mpa/fold_0\.fp32\.onnx' is the model of both uts_mpa fold 0 fp32 and "
            r"uts_mpa fold 1 fp32",
        ),
        (
            lambda m: m["targets"]["uts_mpa"]["folds"][1]["files"].update(
                fp32=onnx_relpath("uts_mpa", 0, "fp32")
            ),
            "is the model of both",
        ),
        (renumber, r"'elongation_pct' has folds \[1, 2, 3, 4, 5\]; .* numbered 0\.\.4, each once"),
        (
            lambda m: m["targets"]["uts_mpa"]["folds"][1].update(fold=True),
            r"'fold' as a whole number, got True",
        ),
        (
            lambda m: m["targets"]["uts_mpa"]["folds"][4]["files"].pop("int8"),
            r"uts_mpa fold 4 has no file for variant\(s\) int8",
        ),
        (
            lambda m: m["targets"]["uts_mpa"]["folds"].pop(4),
            r"lists 'uts_mpa/fold_4\.fp16\.onnx', .* which no fold uses",
        ),
    ],
)
def test_every_manifest_value_is_checked(copy: Path, change, message: str) -> None:
    edit_manifest(copy, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)
    with pytest.raises(BundleError, match=message):
        load_model(copy, device="cpu")


def test_repeated_manifest_key_is_refused(copy: Path) -> None:
    path = copy / MANIFEST_FILE
    text = path.read_text()
    path.write_text(
        text.replace('"format_version": 1,', '"format_version": 1, "format_version": 1,')
    )
    with pytest.raises(BundleError, match="repeats the key 'format_version'"):
        load_bundle(copy)


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
        ("training_set.json", "{}", r"training_set\.json is malformed \(KeyError\('targets'\)\)"),
        ("training_set.json", "[1, 2]", r"training_set\.json is malformed"),
        (
            "training_set.json",
            '{"targets": {"uts_mpa": {"compositions": ["CoCrNi"], "values": [NaN]}}}',
            r"training_set\.json is malformed .*NaN",
        ),
        (
            "training_set.json",
            '{"targets": {"uts_mpa": {"compositions": ["CoCrXx"], "values": [1.0]}}}',
            r"training_set\.json holds a bad composition: .*Xx",
        ),
        (
            "training_set.json",
            '{"targets": {"uts_mpa": {"compositions": ["CoCrNi", "FeNi"], "values": [400, 4000]}}}',
            r"training_set\.json has no measured values of 'elongation_pct'",
        ),
    ],
)
def test_malformed_files_with_matching_hash_are_refused(
    copy: Path, rel: str, content: str, message: str
) -> None:
    rewrite(copy, rel, content)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


@pytest.mark.parametrize(
    "rel", [MANIFEST_FILE, "tokenizer/special_tokens_map.json", "uts_mpa", "training_set.json"]
)
def test_symlinks_are_refused(copy: Path, tmp_path: Path, rel: str) -> None:
    """Even a symlink to an identical copy: its target could be swapped after the check."""
    outside = tmp_path / "outside" / rel
    outside.parent.mkdir(parents=True)
    (copy / rel).rename(outside)
    (copy / rel).symlink_to(outside, target_is_directory=outside.is_dir())
    with pytest.raises(BundleError, match=f"{rel} is a symlink"):
        load_bundle(copy)


def test_identity_is_the_manifest_sha256(tiny_bundle: Path) -> None:
    digest = hashlib.sha256((tiny_bundle / MANIFEST_FILE).read_bytes()).hexdigest()
    assert load_bundle(tiny_bundle).sha256 == digest
    assert load_bundle(tiny_bundle, sha256=digest[:12]).sha256 == digest
    with pytest.raises(BundleError, match=f"{digest}, not the pinned {'f' * 16}"):
        load_bundle(tiny_bundle, sha256="f" * 16)


def test_shipped_bundle_passes_every_check() -> None:
    """The shipped bundle is condition-aware (format 2) and predicts every task."""
    bundle = load_task_bundle(default_bundle_path())
    assert {t.task.name for t in bundle.tasks} == {t.name for t in TASKS}
    with pytest.raises(BundleError, match="format_version 2; this hea-screen reads version 1"):
        load_bundle(default_bundle_path())


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_light_install_loads_and_predicts_without_training_libraries(tiny_bundle: Path) -> None:
    """The screening path imports neither torch, transformers nor optimum, and works offline."""
    code = (
        "import sys, hea_screen\n"
        f"p = hea_screen.load_model({str(tiny_bundle)!r}, device='cpu')\n"
        "out = p.predict(['CoCrFeMnNi', 'Al0.5CoCrFeNi'])\n"
        "assert out.height == 2\n"
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
