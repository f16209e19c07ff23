"""The architecture holds: parts import downwards only, no import circles, small modules.

The layers are import-linter contracts in ``pyproject.toml`` (``[tool.importlinter]``):
``hea_screen.cli > planning > screening > inference > datasets > compositions >
conditions | output | extras > errors``, and ``export > pretrain > hea_screen``.
docs/architecture.md shows them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hea_screen", "pretrain", "export")
MAX_LINES = 600
MAX_TOP_MODULES = 12


def test_layer_contracts_are_kept() -> None:
    # in a child process: import-linter configures logging (disabling existing loggers)
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_import_circles() -> None:
    graph = grimp.build_graph(*PACKAGES)
    circles = sorted(
        m
        for m in graph.modules
        if graph.find_upstream_modules(m) & graph.find_downstream_modules(m)
    )
    assert not circles, f"modules in import circles: {circles}"


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
    }
    large = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not large, f"modules over {MAX_LINES} lines: {large}"


def test_few_modules_directly_under_the_package() -> None:
    top = sorted(p.name for p in (ROOT / "hea_screen").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top
