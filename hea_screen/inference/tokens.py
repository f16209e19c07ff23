"""Composition -> text -> token ids: the one tokenizer shared by training and screening.

A composition and its features become a BERT sentence pair::

    [CLS] Co %20 Cr %20 Fe %20 Mn %20 Ni %20 [SEP] vec_17 delta_chi_9 ... delta_chi_pauling_9 [SEP]
          '----------- segment A (type 0) -----------'   '---- segment B (type 1), 14 tokens ----'

How numbers are tokenized, and why:

- Amounts are atomic percentages, not the molar coefficients of the input text, so every
  notation of the same alloy (``CoCrFeNi``, ``Co25Cr25Fe25Ni25``, ``Co2Cr2Fe2Ni2``) gives the
  same tokens. Each amount is snapped (nearest in log space) to one of
  :data:`AMOUNT_LEVELS_PCT`: 0.1-0.9 at.% in steps of 0.1, 1-2 in steps of 0.25, 2-10 in
  steps of 0.5, then whole percents up to 100. The vocabulary is closed (120 amount
  tokens), so any amount encodes without ``[UNK]``; the resolution (at most about 10 %
  relative, 5 % around 20 at.%) is ample because the exact amounts also reach the model
  through the features.
- Each of the 14 features is binned into :data:`N_FEATURE_BINS` quantile bins, one token
  per bin per feature (``vec_0`` ... ``vec_31``). The bin edges are fitted on compositions
  only (the pre-training corpus plus the MPEA formulas; never on targets) and travel with
  the tokenizer as ``feature_bins.json``. Pre-training then learns to predict masked
  feature bins from the composition and vice versa, and fine-tuning sees the features as
  real inputs (the paper's release computed them and never fed them to the model).
- Element tokens cover every element with property data, so any composition the
  featurizer accepts tokenizes without ``[UNK]``.
- Condition tokens (only with ``use_conditions=True``, for the condition-aware multi-task
  model): the test temperature and the processing route of a measurement, two tokens that
  follow the feature tokens in segment B::

      ... delta_chi_pauling_9 temp_0_100 proc_CAST [SEP]

  The temperature (°C) falls in one of the bins cut at :data:`TEMPERATURE_EDGES_C`
  (-200, 0, 100, 200, 400, 600, 800, 1000, 1200), each bin closed below and open above:
  ``temp_lt_-200`` (below -200 °C), ``temp_-200_0``, ``temp_0_100`` (room temperature,
  25 °C, and every test up to 100 °C), ``temp_100_200``, ``temp_200_400``, ...,
  ``temp_1000_1200``, ``temp_ge_1200`` (1200 °C and above). The processing route is one of
  ``proc_CAST``, ``proc_WROUGHT``, ``proc_ANNEAL``, ``proc_POWDER``, ``proc_OTHER``
  (:class:`~hea_screen.conditions.Processing`). These tokens are appended at the *end* of the
  vocabulary, so every earlier token keeps its id and a model pre-trained before they
  existed stays valid after ``resize_token_embeddings``; a tokenizer directory saved before
  them is upgraded on :meth:`TokenEncoder.load` with ``use_conditions=True``. With
  conditions a row with k elements has ``2k + 19`` tokens (``2k + 17`` without).

The tokenizer is built with the ``tokenizers`` library (WordLevel model) and saved as
``tokenizer.json`` with the config files that let ``transformers.AutoTokenizer`` load the
directory offline.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from hea_screen.compositions.composition import SCALE
from hea_screen.compositions.elements import supported_elements
from hea_screen.compositions.features import FEATURE_NAMES
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import Condition, Processing
from hea_screen.errors import UserInputError

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

#: Atomic-percent levels an amount is snapped to.
AMOUNT_LEVELS_PCT: np.ndarray = np.unique(
    np.round(
        np.concatenate(
            [
                np.arange(1, 10) / 10,  # 0.1 .. 0.9
                np.arange(4, 8) / 4,  # 1 .. 1.75
                np.arange(4, 21) / 2,  # 2 .. 10
                np.arange(11, 101, dtype=float),  # 11 .. 100
            ]
        ),
        2,
    )
)

#: Quantile bins per feature.
N_FEATURE_BINS = 32

#: Cut points (°C) of the test-temperature bins; a bin holds ``[lower, upper)``.
TEMPERATURE_EDGES_C: tuple[float, ...] = (-200, 0, 100, 200, 400, 600, 800, 1000, 1200)

ABSOLUTE_ZERO_C = -273.15

TOKENIZER_FILE = "tokenizer.json"
BINS_FILE = "feature_bins.json"
CONFIG_FILE = "tokenizer_config.json"

#: Per-row conditions: a test temperature array (°C) and a processing route per row.
RowConditions = tuple[Sequence[float] | np.ndarray, Sequence[object]]
Conditions = Condition | RowConditions


def temperature_tokens() -> list[str]:
    """One token per temperature bin, coldest first (see the module docstring)."""
    edges = [f"{e:g}" for e in TEMPERATURE_EDGES_C]
    inner = [f"temp_{lo}_{hi}" for lo, hi in itertools.pairwise(edges)]
    return [f"temp_lt_{edges[0]}", *inner, f"temp_ge_{edges[-1]}"]


def processing_tokens() -> list[str]:
    """One token per processing route: ``proc_CAST``, ..."""
    return [f"proc_{p.value}" for p in Processing]


#: Tokens of the test conditions, the last entries of :func:`vocabulary`.
CONDITION_TOKENS: tuple[str, ...] = (*temperature_tokens(), *processing_tokens())


def amount_token(level_pct: float) -> str:
    """Token text of an atomic-percent level: ``%20``, ``%0.5``, ``%1.25``."""
    return "%" + f"{level_pct:g}"


def amount_levels(micro: np.ndarray) -> np.ndarray:
    """Index into :data:`AMOUNT_LEVELS_PCT` of the nearest level (log space) for each amount."""
    pct = np.clip(micro.astype(np.float64) * (100.0 / SCALE), AMOUNT_LEVELS_PCT[0], 100.0)
    log_levels = np.log(AMOUNT_LEVELS_PCT)
    mids = (log_levels[1:] + log_levels[:-1]) / 2
    return np.searchsorted(mids, np.log(pct), side="right")


def vocabulary() -> list[str]:
    """The closed vocabulary: special tokens, elements, amounts, feature bins, conditions."""
    return [
        *SPECIAL_TOKENS,
        *supported_elements(),
        *(amount_token(v) for v in AMOUNT_LEVELS_PCT),
        *(f"{name}_{b}" for name in FEATURE_NAMES for b in range(N_FEATURE_BINS)),
        *CONDITION_TOKENS,
    ]


def build_tokenizer(tokens: Sequence[str] | None = None) -> Tokenizer:
    """A WordLevel ``tokenizers.Tokenizer`` over ``tokens`` (default :func:`vocabulary`) with
    BERT pair templates."""
    vocab = {tok: i for i, tok in enumerate(vocabulary() if tokens is None else tokens)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tok


def with_condition_tokens(tokenizer: Tokenizer) -> Tokenizer:
    """``tokenizer`` if it has the condition tokens, else the same vocabulary extended by them.

    A tokenizer saved before the condition tokens existed holds a prefix of
    :func:`vocabulary`; the extension keeps every id of that prefix.
    """
    full = vocabulary()
    held = tokenizer.get_vocab()
    if all(tok in held for tok in CONDITION_TOKENS):
        return tokenizer
    if held != {tok: i for i, tok in enumerate(full[: len(held)])}:
        raise UserInputError(
            "this tokenizer's vocabulary is not a prefix of this version's vocabulary; "
            "cannot add the condition tokens to it (rebuild the tokenizer)"
        )
    return build_tokenizer(full)


def temperature_bins(temperature_c: np.ndarray) -> np.ndarray:
    """Index into :func:`temperature_tokens` of each test temperature (°C)."""
    t = np.asarray(temperature_c, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        bad = t[~np.isfinite(t)][0]
        raise UserInputError(f"test temperature {bad} °C: need finite temperatures in °C")
    if np.any(t < ABSOLUTE_ZERO_C):
        raise UserInputError(f"test temperature {t.min()} °C is below absolute zero (-273.15 °C)")
    return np.searchsorted(np.asarray(TEMPERATURE_EDGES_C, dtype=np.float64), t, side="right")


def condition_texts(conditions: Conditions, n_rows: int) -> list[str]:
    """Condition tokens of every row, ``temp_0_100 proc_CAST``: one :class:`Condition` for all
    rows, or a pair (temperatures in °C, processing routes) with one entry per row."""
    if isinstance(conditions, Condition):
        temps = np.full(n_rows, conditions.temperature_c, dtype=np.float64)
        routes: list[object] = [conditions.processing] * n_rows
    else:
        try:
            temps_in, routes_in = conditions
        except (TypeError, ValueError):
            raise UserInputError(
                f"conditions must be a Condition or a pair (temperatures, processing routes), "
                f"got {type(conditions).__name__}"
            ) from None
        temps, routes = np.asarray(temps_in, dtype=np.float64).ravel(), list(routes_in)
        if len(temps) != n_rows or len(routes) != n_rows:
            raise UserInputError(
                f"conditions hold {len(temps)} temperatures and {len(routes)} processing "
                f"routes for {n_rows} compositions: need one of each per composition"
            )
    temp_words = np.array(temperature_tokens(), dtype=object)[temperature_bins(temps)]
    route_word = {r: f"proc_{Processing.parse(r).value}" for r in set(routes)}
    return [f"{t} {route_word[r]}" for t, r in zip(temp_words, routes)]


@dataclass(frozen=True)
class FeatureBins:
    """Quantile bin edges per feature: ``edges[name]`` holds ``N_FEATURE_BINS - 1`` cut points."""

    edges: dict[str, list[float]]

    @classmethod
    def fit(cls, features: pl.DataFrame, n_bins: int = N_FEATURE_BINS) -> FeatureBins:
        """Fit quantile edges on a frame with the :data:`FEATURE_NAMES` columns."""
        qs = np.linspace(0, 1, n_bins + 1)[1:-1]
        return cls(
            {name: np.quantile(features[name].to_numpy(), qs).tolist() for name in FEATURE_NAMES}
        )

    def digitize(self, features: pl.DataFrame) -> np.ndarray:
        """Bin index (0 .. N-1) of every feature value, shape (rows, 14)."""
        out = np.empty((features.height, len(FEATURE_NAMES)), dtype=np.int64)
        for j, name in enumerate(FEATURE_NAMES):
            values = features[name].to_numpy()
            if not np.all(np.isfinite(values)):
                raise UserInputError(f"feature {name} has non-finite values; cannot tokenize")
            out[:, j] = np.searchsorted(np.asarray(self.edges[name]), values, side="right")
        return out

    def to_json(self) -> str:
        return json.dumps(
            {"n_bins": N_FEATURE_BINS, "features": list(FEATURE_NAMES), "edges": self.edges},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureBins:
        data = json.loads(text)
        if data.get("features") != list(FEATURE_NAMES) or data.get("n_bins") != N_FEATURE_BINS:
            raise UserInputError("feature_bins.json does not match this version's features")
        return cls({k: list(map(float, v)) for k, v in data["edges"].items()})


@dataclass
class Encoded:
    """Token ids of a batch, padded to the longest row of the batch (never to a fixed 512)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


class TokenEncoder:
    """Turns compositions (and their features) into BERT inputs with the shared tokenizer."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        bins: FeatureBins | None,
        use_features: bool = True,
        use_conditions: bool = False,
    ):
        if use_features and bins is None:
            raise UserInputError("a with-features encoder needs fitted feature bins")
        if use_conditions and not use_features:
            raise UserInputError("condition tokens follow the feature tokens: use_features=True")
        if use_conditions and tokenizer.token_to_id(CONDITION_TOKENS[0]) is None:
            raise UserInputError(
                "this tokenizer has no condition tokens: pass with_condition_tokens(tokenizer)"
            )
        self.tokenizer = tokenizer
        self.bins = bins
        self.use_features = use_features
        self.use_conditions = use_conditions

    @classmethod
    def load(
        cls, directory: str | Path, use_features: bool = True, use_conditions: bool | None = None
    ) -> TokenEncoder:
        """Load ``tokenizer.json`` (and ``feature_bins.json``) from a directory.

        ``use_conditions``: ``None`` reads the flag saved in ``tokenizer_config.json``
        (``False`` when absent); ``True`` on a directory saved before the condition tokens
        existed adds them to the end of its vocabulary.
        """
        directory = Path(directory)
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        bins_path = directory / BINS_FILE
        bins = FeatureBins.from_json(bins_path.read_text()) if bins_path.exists() else None
        if use_conditions is None:
            config_path = directory / CONFIG_FILE
            config = json.loads(config_path.read_text()) if config_path.exists() else {}
            use_conditions = bool(config.get("use_conditions", False))
        if use_conditions:
            tokenizer = with_condition_tokens(tokenizer)
        return cls(tokenizer, bins, use_features=use_features, use_conditions=use_conditions)

    def save(self, directory: str | Path) -> list[Path]:
        """Write ``tokenizer.json``, ``feature_bins.json`` and the configs AutoTokenizer reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / TOKENIZER_FILE))
        written = [directory / TOKENIZER_FILE]
        special = {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 64,
            **special,
            "use_conditions": self.use_conditions,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
        written += [directory / CONFIG_FILE, directory / "special_tokens_map.json"]
        if self.bins is not None:
            (directory / BINS_FILE).write_text(self.bins.to_json())
            written.append(directory / BINS_FILE)
        return written

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def token_id(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    def composition_texts(self, table: CompositionTable) -> list[str]:
        """Segment A text of every row: ``Co %20 Cr %20 ...`` (sorted elements, at.% tokens)."""
        levels = amount_levels(table.micro)
        words = np.array([amount_token(v) for v in AMOUNT_LEVELS_PCT], dtype=object)
        frame = pl.DataFrame(
            {el: words[levels[:, j]].tolist() for j, el in enumerate(table.elements)}
            | {f"_m{j}": table.micro[:, j] for j in range(len(table.elements))}
        )
        parts = [
            pl.when(pl.col(f"_m{j}") > 0).then(pl.lit(el + " ") + pl.col(el)).otherwise(None)
            for j, el in enumerate(table.elements)
        ]
        return (
            frame.select(pl.concat_str(parts, separator=" ", ignore_nulls=True))
            .to_series()
            .to_list()
        )

    def feature_texts(self, features: pl.DataFrame) -> list[str]:
        """Segment B text of every row: ``vec_17 delta_chi_9 ...`` (one token per feature)."""
        assert self.bins is not None
        bins = self.bins.digitize(features)
        cols = {name: bins[:, j] for j, name in enumerate(FEATURE_NAMES)}
        parts = [pl.lit(f"{name}_") + pl.col(name).cast(pl.Utf8) for name in FEATURE_NAMES]
        return pl.DataFrame(cols).select(pl.concat_str(parts, separator=" ")).to_series().to_list()

    def texts(
        self,
        table: CompositionTable,
        features: pl.DataFrame | None,
        conditions: Conditions | None = None,
    ) -> list[str] | list[tuple[str, str]]:
        """Inputs for ``Tokenizer.encode_batch``: single texts or (composition, features) pairs;
        with ``use_conditions`` segment B ends with the two condition tokens."""
        if self.use_conditions != (conditions is not None):
            raise UserInputError(
                "conditions are needed exactly when the encoder has use_conditions=True "
                f"(it has use_conditions={self.use_conditions}, conditions "
                f"{'given' if conditions is not None else 'missing'})"
            )
        comp = self.composition_texts(table)
        if not self.use_features:
            return comp
        if features is None or features.height != len(table):
            raise UserInputError("with-features encoding needs one feature row per composition")
        segment_b = self.feature_texts(features)
        if conditions is not None:
            cond = condition_texts(conditions, len(table))
            segment_b = [f"{f} {c}" for f, c in zip(segment_b, cond)]
        return list(zip(comp, segment_b))

    def encode(
        self,
        table: CompositionTable,
        features: pl.DataFrame | None,
        conditions: Conditions | None = None,
    ) -> Encoded:
        """Token ids for every row, padded to the longest row in this batch.

        ``conditions`` (only and always with ``use_conditions``): one
        :class:`~hea_screen.conditions.Condition` for every row, or a pair (test temperatures
        in °C, processing routes) with one entry per row.
        """
        return self.encode_texts(self.texts(table, features, conditions))

    def encode_texts(self, texts: Sequence[str] | Sequence[tuple[str, str]]) -> Encoded:
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max((len(e.ids) for e in encodings), default=0)
        n = len(encodings)
        ids = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for r, e in enumerate(encodings):
            k = len(e.ids)
            ids[r, :k] = e.ids
            types[r, :k] = e.type_ids
            mask[r, :k] = 1
        unk = self.token_id("[UNK]")
        if (ids == unk).any():
            r = int(np.flatnonzero((ids == unk).any(axis=1))[0])
            raise UserInputError(f"token outside the vocabulary in {texts[r]!r}")
        return Encoded(ids, mask, types)
