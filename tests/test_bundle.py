"""Bundle verification: every file hashed, tampering and incompleteness refused by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hea_screen import load_model
from hea_screen.bundle import MANIFEST_FILE, load_bundle, onnx_relpath
from hea_screen.errors import BundleError

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
