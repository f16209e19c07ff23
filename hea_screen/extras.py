"""Optional dependencies: which modules the ``train`` extra brings, and a clear message when a
training command runs on the light install."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

#: Top-level modules of the ``train`` extra (pyproject.toml), absent from the light install.
TRAIN_EXTRA: tuple[str, ...] = (
    "torch",
    "transformers",
    "optimum",
    "onnx",
    "onnxscript",
    "safetensors",
    "sklearn",
    "skl2onnx",
    "matplotlib",
)


def missing_train_extra(command: str, modules: Iterable[str]) -> str | None:
    """Import ``modules``; if one of the ``train`` extra is missing, the message that says
    what to install (``None`` when all import). Other import errors propagate."""
    try:
        for module in modules:
            importlib.import_module(module)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        return (
            f'{command} needs the training extra: pip install "hea-screen[train]" '
            f"(missing module {err.name})"
        )
    return None
