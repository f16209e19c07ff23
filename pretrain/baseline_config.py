"""What the classical baselines run: the models, the input modes, folds, seeds and tuning
(read from a training config's ``baselines`` section); no scikit-learn needed to validate it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hea_screen.errors import UserInputError

_TUPLE_FIELDS = {"models", "inputs", "repeat_seeds", "targets"}

#: Model key -> label used in reports.
MODEL_LABELS: dict[str, str] = {
    "gaussian_process": "Gaussian Process",
    "gaussian_process_noise": "Gaussian Process (+ noise term)",
    "random_forest": "Random Forest",
    "knn": "K-NN",
    "decision_tree": "Decision Tree",
    "gradient_boosting": "Gradient Boosting",
    "extra_trees_tuned": "ExtraTrees (tuned in training fold)",
}


#: Input mode -> suffix of the model name in outputs.
INPUT_MODES: dict[str, str] = {"features": "", "composition": "-composition"}


@dataclass(frozen=True)
class BaselineConfig:
    """What to run (see the module docstring for each field)."""

    n_folds: int = 5
    seed: int = 42
    models: tuple[str, ...] = tuple(MODEL_LABELS)
    inputs: tuple[str, ...] = tuple(INPUT_MODES)
    repeat_seeds: tuple[int, ...] = ()
    inner_folds: int = 3
    tuned_n_estimators: int = 200
    targets: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in self.models:
            if name not in MODEL_LABELS:
                raise UserInputError(
                    f"unknown baseline model {name!r}: choose from {', '.join(MODEL_LABELS)}"
                )
        for mode in self.inputs:
            if mode not in INPUT_MODES:
                raise UserInputError(
                    f"unknown baseline input mode {mode!r}: choose from {', '.join(INPUT_MODES)}"
                )
        if not self.models or not self.inputs:
            raise UserInputError("baselines need at least one model and one input mode")
        if self.n_folds < 2 or self.inner_folds < 2:
            raise UserInputError(
                f"n_folds ({self.n_folds}) and inner_folds ({self.inner_folds}) must be at least 2"
            )
        if self.tuned_n_estimators < 1:
            raise UserInputError(
                f"tuned_n_estimators must be positive, got {self.tuned_n_estimators}"
            )

    @classmethod
    def from_config(cls, config: object | None) -> BaselineConfig:
        """Read the fields from a :class:`BaselineConfig`, a mapping or an object (module doc).

        With a training config (:class:`pretrain.config.TrainConfig`), the fold count and the
        targets follow ``finetune.folds`` and ``finetune.targets``, and the seed the run's
        ``seed``, so the baselines are scored on the fine-tuning folds; keys of the
        ``baselines`` section override them.
        """
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        values: dict[str, Any] = {}
        finetune = _get(config, "finetune")
        if finetune is not None:
            if _get(finetune, "folds") is not None:
                values["n_folds"] = _get(finetune, "folds")
            targets = _get(finetune, "targets")
            if targets:
                values["targets"] = [t if isinstance(t, str) else _get(t, "name") for t in targets]
        section = _get(config, "baselines")
        for f in fields(cls):
            for source in (section, config):
                value = _get(source, f.name) if source is not None else None
                if value is not None and (source is section or f.name not in values):
                    values[f.name] = value
                    break
        return cls(**{k: tuple(v) if k in _TUPLE_FIELDS else v for k, v in values.items()})


def _get(obj: object, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)
