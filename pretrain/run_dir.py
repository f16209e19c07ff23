"""Paths of a training run directory (the layout of ``docs/architecture.md``) and the
atomic creation of its sub-directories.

A step's output directory (``tokenizer/``, ``pretrained/``, ``fold_<k>/``) is built under a
temporary name beside its final place and renamed when complete, so a directory that
exists is finished: an interrupted run resumes by skipping what exists.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """The files and folders of one training run under ``root``."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus.parquet"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def pretrained(self) -> Path:
        return self.root / "pretrained"

    @property
    def pretrain_checkpoints(self) -> Path:
        """Trainer checkpoints while pre-training runs (removed when it is done)."""
        return self.root / "pretrain_checkpoints"

    @property
    def finetune(self) -> Path:
        return self.root / "finetune"

    @property
    def cv_results(self) -> Path:
        return self.root / "cv_results.csv"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def target_dir(self, target: str) -> Path:
        return self.finetune / target

    def dataset_csv(self, target: str) -> Path:
        return self.target_dir(target) / "dataset.csv"

    def dataset_json(self, target: str) -> Path:
        return self.target_dir(target) / "dataset.json"

    def experiment_dir(self, target: str, experiment: str) -> Path:
        return self.target_dir(target) / experiment

    def fold_dir(self, target: str, experiment: str, fold: int) -> Path:
        return self.experiment_dir(target, experiment) / f"fold_{fold}"


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished directory is an ordinary one
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
