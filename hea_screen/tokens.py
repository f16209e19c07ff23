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

The tokenizer is built with the ``tokenizers`` library (WordLevel model) and saved as
``tokenizer.json`` with the config files that let ``transformers.AutoTokenizer`` load the
directory offline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from hea_screen.composition import SCALE
from hea_screen.elements import supported_elements
from hea_screen.errors import UserInputError
from hea_screen.features import FEATURE_NAMES
from hea_screen.table import CompositionTable

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

TOKENIZER_FILE = "tokenizer.json"
BINS_FILE = "feature_bins.json"


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
    """The closed vocabulary: special tokens, elements, amounts, feature bins."""
    return [
        *SPECIAL_TOKENS,
        *supported_elements(),
        *(amount_token(v) for v in AMOUNT_LEVELS_PCT),
        *(f"{name}_{b}" for name in FEATURE_NAMES for b in range(N_FEATURE_BINS)),
    ]


def build_tokenizer() -> Tokenizer:
    """A WordLevel ``tokenizers.Tokenizer`` over :func:`vocabulary` with BERT pair templates."""
    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tok


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

    def __init__(self, tokenizer: Tokenizer, bins: FeatureBins | None, use_features: bool = True):
        if use_features and bins is None:
            raise UserInputError("a with-features encoder needs fitted feature bins")
        self.tokenizer = tokenizer
        self.bins = bins
        self.use_features = use_features

    @classmethod
    def load(cls, directory: str | Path, use_features: bool = True) -> TokenEncoder:
        """Load ``tokenizer.json`` (and ``feature_bins.json``) from a directory."""
        directory = Path(directory)
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        bins_path = directory / BINS_FILE
        bins = FeatureBins.from_json(bins_path.read_text()) if bins_path.exists() else None
        return cls(tokenizer, bins, use_features=use_features)

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
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 64, **special}
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
        (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
        written += [directory / "tokenizer_config.json", directory / "special_tokens_map.json"]
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
        self, table: CompositionTable, features: pl.DataFrame | None
    ) -> list[str] | list[tuple[str, str]]:
        """Inputs for ``Tokenizer.encode_batch``: single texts or (composition, features) pairs."""
        comp = self.composition_texts(table)
        if not self.use_features:
            return comp
        if features is None or features.height != len(table):
            raise UserInputError("with-features encoding needs one feature row per composition")
        return list(zip(comp, self.feature_texts(features)))

    def encode(self, table: CompositionTable, features: pl.DataFrame | None) -> Encoded:
        """Token ids for every row, padded to the longest row in this batch."""
        return self.encode_texts(self.texts(table, features))

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
