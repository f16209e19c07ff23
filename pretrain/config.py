"""Typed configuration of a training run, read from YAML (``configs/*.yaml``).

A config file is read with ``yaml.safe_load`` and turned into frozen dataclasses; every
value is checked at this boundary, and an unknown key raises a
:class:`~hea_screen.errors.UserInputError` that names the key and the accepted ones::

    seed: 42              # cross-validation folds, train/val splits, model initialisation
    threads: 2            # torch.set_num_threads
    corpus:    {size: 35000, partitions: 8, ...}          # CorpusConfig
    model:     {size: small}                              # ModelConfig (tiny | small | base)
    pretrain:  {epochs: 8, batch_size: 64, ...}           # PretrainConfig
    finetune:  {targets: [uts_mpa, elongation_pct], experiments: [...], ...}  # FinetuneConfig
    baselines: {models: [random_forest, ...]}             # passed to pretrain.baselines
    conditions: {seeds: [0, ..., 9], ...}                   # ConditionsConfig (condition-aware run)

The resolved config (defaults filled in) is written to ``RUN/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hea_screen.datasets.sources import TARGETS
from hea_screen.errors import UserInputError
from hea_screen.inference.families import FAMILIES
from pretrain.baseline_config import BaselineConfig

#: Named BERT sizes: hidden size, layers, attention heads, feed-forward size.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "small": {
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 256,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
}

#: Tabular model families of the condition-aware run (see pretrain.tabular).
TABULAR_FAMILIES: tuple[str, ...] = FAMILIES

#: Longest token sequence a model accepts (8 elements with features need 33 tokens).
MAX_POSITION_EMBEDDINGS = 64


class ConfigError(UserInputError):
    """A configuration file or value that is invalid."""


def _positive(where: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{where} must be positive, got {value!r}")


def _fraction(where: str, value: float) -> None:
    if not 0 < value < 1:
        raise ConfigError(f"{where} must lie strictly between 0 and 1, got {value!r}")


@dataclass(frozen=True)
class CorpusConfig:
    """Pre-training corpus (see :mod:`pretrain.corpus`).

    ``size``: compositions wanted (the paper's 6K/35K/75K/150K or any); ``partitions``: Dask
    partitions per generation round; ``block_size``: candidate draws per block (a block is
    the unit of randomness, so the result does not depend on ``partitions``);
    ``max_rounds``: generation rounds before a short stratum counts as exhausted;
    ``scheduler``: Dask scheduler; ``reference``: file in the data directory whose element
    distribution the report compares against.
    """

    size: int = 35_000
    partitions: int = 8
    block_size: int = 1000
    max_rounds: int = 30
    scheduler: Literal["threads", "processes", "synchronous"] = "threads"
    reference: str = "6K.csv"

    def __post_init__(self) -> None:
        for name in ("size", "partitions", "block_size", "max_rounds"):
            _positive(f"corpus.{name}", getattr(self, name))


@dataclass(frozen=True)
class ModelConfig:
    """BERT size: a named preset, optionally with single dimensions overridden."""

    size: Literal["tiny", "small", "base"] = "small"
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    dropout: float = 0.1

    def __post_init__(self) -> None:
        dims = self.dimensions()
        for name, value in dims.items():
            _positive(f"model.{name}", value)
        if dims["hidden_size"] % dims["num_attention_heads"]:
            raise ConfigError(
                f"model.hidden_size ({dims['hidden_size']}) must be a multiple of "
                f"model.num_attention_heads ({dims['num_attention_heads']})"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must lie in [0, 1), got {self.dropout!r}")

    def dimensions(self) -> dict[str, int]:
        """The preset's dimensions with the explicit overrides applied."""
        dims = dict(MODEL_SIZES[self.size])
        for name in dims:
            value = getattr(self, name)
            if value is not None:
                dims[name] = value
        return dims


@dataclass(frozen=True)
class PretrainConfig:
    """Masked-language-model pre-training (see :mod:`pretrain.mlm`)."""

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    mlm_probability: float = 0.15
    val_fraction: float = 0.2
    split_seed: int = 42

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "learning_rate"):
            _positive(f"pretrain.{name}", getattr(self, name))
        _fraction("pretrain.mlm_probability", self.mlm_probability)
        _fraction("pretrain.val_fraction", self.val_fraction)
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"pretrain.warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class TargetSpec:
    """A fine-tuning target: one of the paper's sets by name, or any CSV.

    Without ``csv`` the name must be a paper target (``uts_mpa``, ``elongation_pct``). With
    ``csv`` (absolute, or relative to the data directory) the file needs a composition
    column (``composition_column``) and a numeric target column (``column``, default: the
    name).
    """

    name: str
    csv: str | None = None
    column: str | None = None
    composition_column: str = "composition"

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"target name {self.name!r} must be a plain folder name")
        if self.csv is None and self.name not in TARGETS:
            raise ConfigError(
                f"target {self.name!r} is not a paper set ({', '.join(TARGETS)}): "
                "give a csv path for any other target"
            )

    @classmethod
    def from_scalar(cls, value: object, where: str) -> TargetSpec:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a target name or a mapping, got {value!r}")
        return cls(name=value)


@dataclass(frozen=True)
class ExperimentConfig:
    """A fine-tuned model variant.

    ``init``: ``pretrained`` (from ``RUN/pretrained``) or ``scratch`` (same architecture,
    random weights); ``inputs``: ``features`` (feature-bin tokens in segment B) or
    ``composition`` (segment A only); ``layers``: ``all`` or the 1-based encoder layers to
    train (the others and the embeddings stay frozen; the regression head always trains).
    """

    init: Literal["pretrained", "scratch"] = "pretrained"
    inputs: Literal["features", "composition"] = "features"
    layers: Literal["all"] | list[int] = "all"

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            if not self.layers or len(set(self.layers)) != len(self.layers):
                raise ConfigError(f"experiment layers {self.layers} must be distinct, non-empty")
            if min(self.layers) < 1:
                raise ConfigError(f"experiment layers {self.layers} are 1-based (first is 1)")

    @property
    def name(self) -> str:
        """``<init>-<inputs>-<layers>``, e.g. ``scratch-composition-l3_4``."""
        layers = "all" if self.layers == "all" else "l" + "_".join(map(str, sorted(self.layers)))
        return f"{self.init}-{self.inputs}-{layers}"

    @property
    def use_features(self) -> bool:
        return self.inputs == "features"


def _default_experiments() -> list[ExperimentConfig]:
    return [
        ExperimentConfig(init, inputs)
        for inputs in ("features", "composition")
        for init in ("pretrained", "scratch")
    ]


@dataclass(frozen=True)
class FinetuneConfig:
    """Cross-validated fine-tuning (see :mod:`pretrain.finetune`).

    Early stopping: training stops after ``patience`` epochs without a better validation
    score, but never before ``min_epochs`` (during a long warm-up a model barely moves, and
    a small validation part can make the first epoch look best by chance).
    ``max_rows``: use a deterministic random subset of each dataset (for quick runs);
    ``duplicates``: ``keep`` the dataset's repeated compositions as the paper did, or
    replace them by one row with their ``mean`` value (repeats can otherwise sit on both
    sides of a fold boundary).
    """

    targets: list[TargetSpec] = field(
        default_factory=lambda: [TargetSpec("uts_mpa"), TargetSpec("elongation_pct")]
    )
    experiments: list[ExperimentConfig] = field(default_factory=_default_experiments)
    folds: int = 5
    val_fraction: float = 0.15
    epochs: int = 100
    patience: int = 15
    min_epochs: int = 0
    batch_size: int = 16
    learning_rate: float = 6e-5
    weight_decay: float = 0.02
    warmup_ratio: float = 0.1
    max_rows: int | None = None
    duplicates: Literal["keep", "mean"] = "keep"

    def __post_init__(self) -> None:
        for name in ("epochs", "patience", "batch_size", "learning_rate"):
            _positive(f"finetune.{name}", getattr(self, name))
        if self.folds < 2:
            raise ConfigError(f"finetune.folds must be at least 2, got {self.folds}")
        if not 0 <= self.min_epochs <= self.epochs:
            raise ConfigError(
                f"finetune.min_epochs ({self.min_epochs}) must lie in 0..epochs ({self.epochs})"
            )
        _fraction("finetune.val_fraction", self.val_fraction)
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"finetune.warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.max_rows is not None and self.max_rows < 10 * self.folds:
            raise ConfigError(
                f"finetune.max_rows ({self.max_rows}) must be at least 10 rows per fold"
            )
        for kind, names in (
            ("target", [t.name for t in self.targets]),
            ("experiment", [e.name for e in self.experiments]),
        ):
            if not names:
                raise ConfigError(f"finetune needs at least one {kind}")
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ConfigError(f"finetune lists the {kind} {repeated[0]!r} twice")


@dataclass(frozen=True)
class ConditionsConfig:
    """The ``conditions`` section: the condition-aware run of :mod:`pretrain.condition_run`.

    ``seeds`` of the grouped folds (one random partition into ``folds`` folds each; the first
    ``folds`` of them, as many models as the bundle ships, calibrate the intervals),
    ``val_fraction`` of training alloys for validation, tabular ``families`` with
    ``n_estimators`` trees per forest (the ``costly_families`` among them on the first
    ``costly_partitions`` partitions only, for time; every family on the cluster folds),
    the multi-task ``transformer`` on the first
    ``transformer_partitions`` partitions (settings in ``multitask``, see
    :mod:`pretrain.multitask`), ``loco_clusters`` for leave-one-cluster-out
    (``loco_transformer`` adds the transformer there), ``max_alloys`` (a random subset of
    alloys, for quick runs) and the interval ``coverage``.
    """

    seeds: list[int] = field(default_factory=lambda: list(range(10)))
    folds: int = 5
    val_fraction: float = 0.15
    families: list[str] = field(default_factory=lambda: list(TABULAR_FAMILIES))
    n_estimators: int = 100
    costly_families: list[str] = field(default_factory=list)
    costly_partitions: int = 3
    transformer: bool = True
    transformer_partitions: int = 3
    loco_clusters: int = 5
    loco_transformer: bool = False
    max_alloys: int | None = None
    coverage: float = 0.9
    multitask: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in TABULAR_FAMILIES]
        if unknown:
            raise ConfigError(
                f"conditions.families: unknown {', '.join(unknown)}; choose from "
                f"{', '.join(TABULAR_FAMILIES)}"
            )
        if len(self.seeds) < 2:
            raise ConfigError("conditions.seeds: need at least two partitions (a spread)")
        stray = [f for f in self.costly_families if f not in self.families]
        if stray:
            raise ConfigError(
                f"conditions.costly_families: {', '.join(stray)} not in conditions.families; "
                f"choose from {', '.join(self.families)}"
            )
        if self.costly_partitions < 2 or (
            self.costly_families and self.costly_partitions > len(self.seeds)
        ):
            raise ConfigError(
                f"conditions.costly_partitions {self.costly_partitions}: need 2 to "
                f"{len(self.seeds)} (at least two for a spread, at most one per seed)"
            )
        if self.transformer_partitions < 2:
            raise ConfigError("conditions.transformer_partitions must be >= 2")
        if self.folds < 2 or self.loco_clusters < 2:
            raise ConfigError("conditions.folds and conditions.loco_clusters must be >= 2")
        if not 0 < self.coverage < 1:
            raise ConfigError(f"conditions.coverage {self.coverage}: need a number in (0, 1)")
        _fraction("conditions.val_fraction", self.val_fraction)

    def partition_families(self, index: int) -> list[str]:
        """The tabular families fitted on the grouped partition ``index`` (0 for the first
        seed): ``families``, less the ``costly_families`` from ``costly_partitions`` on."""
        if index < self.costly_partitions:
            return list(self.families)
        return [f for f in self.families if f not in self.costly_families]


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run."""

    seed: int = 42
    threads: int = 2
    data_dir: str | None = None
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    baselines: dict[str, Any] | None = None
    conditions: ConditionsConfig | None = None

    def __post_init__(self) -> None:
        _positive("threads", self.threads)
        self._check_baselines()
        n_layers = self.model.dimensions()["num_hidden_layers"]
        for exp in self.finetune.experiments:
            if exp.layers != "all" and max(exp.layers) > n_layers:
                raise ConfigError(
                    f"experiment {exp.name}: layer {max(exp.layers)} does not exist; "
                    f"the {self.model.size} model has layers 1..{n_layers}"
                )

    def _check_baselines(self) -> None:
        """Validate the ``baselines`` section now."""
        if self.baselines is None:
            return
        accepted = [f.name for f in dataclasses.fields(BaselineConfig)]
        for key in self.baselines:
            if key not in accepted:
                raise ConfigError(
                    f"unknown key {key!r} in config.baselines: accepted keys are "
                    f"{', '.join(accepted)}"
                )
        BaselineConfig.from_config({"baselines": self.baselines})

    @classmethod
    def from_mapping(cls, data: object) -> TrainConfig:
        """Validate a parsed YAML document (see the module docstring)."""
        return _build(cls, data, "config")

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``yaml.safe_dump`` (the resolved config)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False)


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    return TrainConfig.from_mapping({} if data is None else data)


# --- generic mapping -> dataclass conversion with clear errors ---------------------------


def _build(cls: type, data: object, where: str) -> Any:
    if not isinstance(data, Mapping):
        from_scalar = getattr(cls, "from_scalar", None)
        if from_scalar is not None:
            return from_scalar(data, where)
        raise ConfigError(f"{where} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    accepted = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in accepted:
            raise ConfigError(
                f"unknown key {key!r} in {where}: accepted keys are {', '.join(accepted)}"
            )
    values = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    return cls(**values)


def _convert(hint: Any, value: object, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(" or ".join(errors))
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                f"{where} is {value!r}: choose one of {', '.join(map(repr, choices))}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        # YAML 1.1 reads ``5e-4`` (no dot) as a string: accept numeric text for numbers.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"no conversion for {hint!r} at {where}")
