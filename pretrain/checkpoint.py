"""Resumable training state without pickle: weights and optimizer moments as safetensors,
counters and hyper-parameters as JSON.

A checkpoint directory holds ``weights.safetensors`` (the model's tensors; shared, tied
tensors stored once by ``safetensors.torch.save_model``),
``optimizer.safetensors`` (every tensor of the optimizer state, keyed
``<param index>/<name>``), ``optimizer.json`` (the parameter groups) and ``state.json``
(whatever the training loop needs to continue: epoch, step, history, best score).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from pretrain.run_dir import atomic_directory

WEIGHTS = "weights.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_GROUPS = "optimizer.json"
STATE = "state.json"


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Write a checkpoint directory atomically (it replaces ``path`` when complete)."""
    opt = optimizer.state_dict()
    tensors = {
        f"{index}/{name}": value.detach().cpu().contiguous()
        if torch.is_tensor(value)
        else torch.tensor(value)
        for index, entries in opt["state"].items()
        for name, value in entries.items()
    }
    with atomic_directory(path) as tmp:
        save_model(model, str(tmp / WEIGHTS))
        save_file(tensors, str(tmp / OPTIMIZER_TENSORS))
        (tmp / OPTIMIZER_GROUPS).write_text(json.dumps(opt["param_groups"]))
        (tmp / STATE).write_text(json.dumps(state, indent=1))
    return Path(path)


def load_checkpoint(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model weights and optimizer state in place; return the loop state."""
    path = Path(path)
    load_model(model, str(path / WEIGHTS), strict=True)
    device = next(model.parameters()).device
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path / OPTIMIZER_TENSORS)).items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    groups = json.loads((path / OPTIMIZER_GROUPS).read_text())
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return json.loads((path / STATE).read_text())
