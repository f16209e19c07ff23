"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrain import condition_folds
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


@pytest.fixture
def fitted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The family of every tabular fit from now on."""
    calls: list[str] = []
    real = condition_folds.fit_family

    def counted(family: str, *args: object, **kwargs: object) -> object:
        calls.append(family)
        return real(family, *args, **kwargs)

    monkeypatch.setattr(condition_folds, "fit_family", counted)
    return calls


@pytest.fixture(scope="session")
def condition_bundle(tiny_run, tmp_path_factory):
    """The condition-aware (format 2) bundle of ``tiny_run``'s ``conditions`` step."""
    from export.condition_bundle import write_condition_bundle

    out = tmp_path_factory.mktemp("condition_bundle") / "bundle"
    write_condition_bundle(tiny_run, out, allow_dirty=True)
    return out


@pytest.fixture(scope="session")
def transformer_bundle(tiny_run, tmp_path_factory):
    """The transformer-only bundle of ``tiny_run`` (``--member transformer``): every task
    on the multi-task transformer, fp32 + fp16 + int8.

    The int8 Spearman bound is relaxed here: the tiny network, trained for seconds, predicts
    nearly constant values, whose ranking int8 noise scrambles, and the tests need an int8
    variant to exercise its code path. The measured parity is still recorded in the
    manifest; the production bounds are tested in tests/test_export.py.
    """
    from export.condition_bundle import write_condition_bundle
    from export.parity import ParityBounds
    from export.transformer_member import VariantOptions

    out = tmp_path_factory.mktemp("transformer_bundle") / "bundle"
    relaxed = VariantOptions(bounds=ParityBounds(int8_min_spearman=-1.0))
    write_condition_bundle(tiny_run, out, allow_dirty=True, member="transformer",
                           variants=relaxed)
    return out
