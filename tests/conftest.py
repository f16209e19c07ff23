"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrain.cli import STEPS, main

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished training run of ``configs/tiny.yaml`` (every step but the report, which
    has its own tests), made through the ``hea-train`` command line."""
    run = tmp_path_factory.mktemp("tiny_run")
    for step in STEPS:
        if step != "report":
            assert main([step, "--config", str(TINY_CONFIG), "--out", str(run), "--quiet"]) == 0
    return run
