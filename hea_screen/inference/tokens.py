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
- The grain-size token (only with ``use_grain_size=True`` as well): the mean grain size d
  (µm) of the measurement, a third condition token after the processing route::

      ... delta_chi_pauling_9 temp_0_100 proc_CAST grain_10_50 [SEP]

  d falls in one of the bins cut at :data:`GRAIN_EDGES_UM` (2, 10, 50, 200 µm; closed below,
  open above): ``grain_lt_2``, ``grain_2_10``, ``grain_10_50``, ``grain_50_200``,
  ``grain_ge_200``, and ``grain_not_stated`` where the source gives no grain size (a state of
  its own, like the tabular models' missing indicator, not a default size). Strength rises
  with d^-1/2 (Hall-Petch: E. O. Hall, Proc. Phys. Soc. B 64 (1951) 747; N. J. Petch,
  J. Iron Steel Inst. 174 (1953) 25), so the bins are spaced in log d, a factor 4-5 apart
  (d^-1/2 at the cuts: 0.71, 0.32, 0.14, 0.07 µm^-1/2): ultrafine grains below 2 µm, fine,
  medium, coarse, and cast-coarse grains of 200 µm and more. The cuts sit near the
  quintiles of MPEA's 864 stated grain sizes (0.018-2,000 µm; 180, 166, 219, 186 and 113
  measurements per bin), so every bin is trained. The six tokens follow the other condition
  tokens at the end of the vocabulary (every earlier id unchanged, so a model pre-trained or
  a bundle exported before them stays valid); a model trained without them keeps
  ``use_grain_size=False`` (a bundle's manifest says which condition tokens its networks
  read) and ignores the grain size. With the grain token a row has ``2k + 20`` tokens.

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
from hea_screen.compositions.features import FEATURE_NAMES, featurize
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

#: Cut points (µm) of the mean-grain-size bins; a bin holds ``[lower, upper)``.
GRAIN_EDGES_UM: tuple[float, ...] = (2, 10, 50, 200)

#: Token of a measurement whose grain size is not stated.
GRAIN_NOT_STATED = "grain_not_stated"

ABSOLUTE_ZERO_C = -273.15

TOKENIZER_FILE = "tokenizer.json"
BINS_FILE = "feature_bins.json"
CONFIG_FILE = "tokenizer_config.json"

#: What the condition tokens of an encoder describe, in token order: the first two always,
#: the grain size only with ``use_grain_size``.
CONDITION_INPUTS: tuple[str, ...] = ("temperature", "processing", "grain_size")

#: Per-row conditions: a test temperature array (°C), a processing route per row and (needed
#: with ``use_grain_size``) a grain size array (µm, NaN where not stated).
RowConditions = (
    tuple[Sequence[float] | np.ndarray, Sequence[object]]
    | tuple[Sequence[float] | np.ndarray, Sequence[object], Sequence[float] | np.ndarray]
)
Conditions = Condition | RowConditions


def _bin_tokens(prefix: str, edges: Sequence[float]) -> list[str]:
    """``prefix_lt_a``, ``prefix_a_b``, ..., ``prefix_ge_z``: one token per bin of ``edges``."""
    cuts = [f"{e:g}" for e in edges]
    inner = [f"{prefix}_{lo}_{hi}" for lo, hi in itertools.pairwise(cuts)]
    return [f"{prefix}_lt_{cuts[0]}", *inner, f"{prefix}_ge_{cuts[-1]}"]


def temperature_tokens() -> list[str]:
    """One token per temperature bin, coldest first (see the module docstring)."""
    return _bin_tokens("temp", TEMPERATURE_EDGES_C)


def grain_tokens() -> list[str]:
    """One token per grain-size bin, finest first, then :data:`GRAIN_NOT_STATED`."""
    return [*_bin_tokens("grain", GRAIN_EDGES_UM), GRAIN_NOT_STATED]


def processing_tokens() -> list[str]:
    """One token per processing route: ``proc_CAST``, ..."""
    return [f"proc_{p.value}" for p in Processing]


#: Tokens of the test conditions, the last entries of :func:`vocabulary`.
CONDITION_TOKENS: tuple[str, ...] = (*temperature_tokens(), *processing_tokens())

#: Tokens of the grain size, after :data:`CONDITION_TOKENS` (added later, so appended).
GRAIN_TOKENS: tuple[str, ...] = tuple(grain_tokens())


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
    """The closed vocabulary: special tokens, elements, amounts, feature bins, conditions,
    grain sizes (each later group appended, so earlier ids never move)."""
    return [
        *SPECIAL_TOKENS,
        *supported_elements(),
        *(amount_token(v) for v in AMOUNT_LEVELS_PCT),
        *(f"{name}_{b}" for name in FEATURE_NAMES for b in range(N_FEATURE_BINS)),
        *CONDITION_TOKENS,
        *GRAIN_TOKENS,
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


def with_condition_tokens(tokenizer: Tokenizer, grain_size: bool = False) -> Tokenizer:
    """``tokenizer`` if it has the condition tokens (and, with ``grain_size``, the grain-size
    tokens), else the same vocabulary extended by them.

    A tokenizer saved before those tokens existed holds a prefix of :func:`vocabulary`; the
    extension keeps every id of that prefix.
    """
    full = vocabulary() if grain_size else vocabulary()[: -len(GRAIN_TOKENS)]
    held = tokenizer.get_vocab()
    if all(tok in held for tok in (*CONDITION_TOKENS, *(GRAIN_TOKENS if grain_size else ()))):
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


def grain_bins(grain_size_um: np.ndarray) -> np.ndarray:
    """Index into :func:`grain_tokens` of each mean grain size (µm; NaN: not stated)."""
    d = np.asarray(grain_size_um, dtype=np.float64)
    stated = ~np.isnan(d)
    bad = stated & ~(np.isfinite(d) & (d > 0))
    if bad.any():
        raise UserInputError(
            f"grain size {d[bad][0]} µm: need a positive, finite size in µm (NaN: not stated)"
        )
    edges = np.asarray(GRAIN_EDGES_UM, dtype=np.float64)
    return np.where(stated, np.searchsorted(edges, d, side="right"), len(edges) + 1)


def condition_texts(conditions: Conditions, n_rows: int, grain_size: bool = False) -> list[str]:
    """Condition tokens of every row, ``temp_0_100 proc_CAST`` (with ``grain_size``:
    ``temp_0_100 proc_CAST grain_10_50``), the one encoding of conditions for training and
    screening: one :class:`Condition` for all rows, or a tuple (temperatures in °C, processing
    routes[, grain sizes in µm, NaN where not stated]) with one entry per row; the grain sizes
    are needed exactly when ``grain_size`` is set."""
    if isinstance(conditions, Condition):
        temps = np.full(n_rows, conditions.temperature_c, dtype=np.float64)
        routes: list[object] = [conditions.processing] * n_rows
        size = conditions.grain_size_um
        grains = np.full(n_rows, np.nan if size is None else size, dtype=np.float64)
    else:
        want = 3 if grain_size else 2
        if not isinstance(conditions, tuple) or len(conditions) not in (want, 3):
            raise UserInputError(
                "conditions must be a Condition or a tuple (temperatures, processing routes"
                f"{', grain sizes' if grain_size else ''}), got "
                f"{type(conditions).__name__}"
                f"{f' of {len(conditions)}' if isinstance(conditions, tuple) else ''}"
            )
        temps = np.asarray(conditions[0], dtype=np.float64).ravel()
        routes = list(conditions[1])
        grains = (
            np.asarray(conditions[2], dtype=np.float64).ravel()
            if grain_size
            else np.full(n_rows, np.nan)
        )
        if len(temps) != n_rows or len(routes) != n_rows or len(grains) != n_rows:
            raise UserInputError(
                f"conditions hold {len(temps)} temperatures and {len(routes)} processing "
                f"routes{f' and {len(grains)} grain sizes' if grain_size else ''} for {n_rows} "
                "compositions: need one of each per composition"
            )
    words = np.array(temperature_tokens(), dtype=object)[temperature_bins(temps)]
    route_word = {r: f"proc_{Processing.parse(r).value}" for r in set(routes)}
    words = words + np.array([f" {route_word[r]}" for r in routes], dtype=object)
    if grain_size:
        words = words + " " + np.array(grain_tokens(), dtype=object)[grain_bins(grains)]
    return words.tolist()


def row_conditions(rows: pl.DataFrame) -> RowConditions:
    """The conditions of measurement rows (columns ``temperature_c``, ``processing`` and
    ``grain_size_um``, null or NaN where not stated), one entry per row."""
    return (
        rows["temperature_c"].to_numpy(),
        rows["processing"].to_list(),
        rows["grain_size_um"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
    )


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
        use_grain_size: bool = False,
    ):
        if use_features and bins is None:
            raise UserInputError("a with-features encoder needs fitted feature bins")
        if use_conditions and not use_features:
            raise UserInputError("condition tokens follow the feature tokens: use_features=True")
        if use_grain_size and not use_conditions:
            raise UserInputError("the grain-size token is a condition: use_conditions=True")
        needed = GRAIN_TOKENS[0] if use_grain_size else CONDITION_TOKENS[0]
        if use_conditions and tokenizer.token_to_id(needed) is None:
            raise UserInputError(
                f"this tokenizer has no {'grain-size' if use_grain_size else 'condition'} "
                f"tokens: pass with_condition_tokens(tokenizer, grain_size={use_grain_size})"
            )
        self.tokenizer = tokenizer
        self.bins = bins
        self.use_features = use_features
        self.use_conditions = use_conditions
        self.use_grain_size = use_grain_size

    @property
    def condition_inputs(self) -> tuple[str, ...]:
        """What this encoder's condition tokens describe (a prefix of
        :data:`CONDITION_INPUTS`; empty without conditions)."""
        if not self.use_conditions:
            return ()
        return CONDITION_INPUTS if self.use_grain_size else CONDITION_INPUTS[:2]

    @classmethod
    def load(
        cls,
        directory: str | Path,
        use_features: bool = True,
        use_conditions: bool | None = None,
        use_grain_size: bool | None = None,
    ) -> TokenEncoder:
        """Load ``tokenizer.json`` (and ``feature_bins.json``) from a directory.

        ``use_conditions`` and ``use_grain_size``: ``None`` reads the flag saved in
        ``tokenizer_config.json`` (``False`` when absent); ``True`` on a directory saved before
        the condition (or grain-size) tokens existed adds them to the end of its vocabulary.
        """
        directory = Path(directory)
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        bins_path = directory / BINS_FILE
        bins = FeatureBins.from_json(bins_path.read_text()) if bins_path.exists() else None
        config_path = directory / CONFIG_FILE
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        if use_conditions is None:
            use_conditions = bool(config.get("use_conditions", False))
        if use_grain_size is None:
            use_grain_size = bool(config.get("use_grain_size", False))
        if use_conditions:
            tokenizer = with_condition_tokens(tokenizer, use_grain_size)
        return cls(tokenizer, bins, use_features, use_conditions, use_grain_size)

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
            "use_grain_size": self.use_grain_size,
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
        with ``use_conditions`` segment B ends with the condition tokens (two, three with
        ``use_grain_size``)."""
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
            cond = condition_texts(conditions, len(table), self.use_grain_size)
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
        :class:`~hea_screen.conditions.Condition` for every row, or a tuple (test temperatures
        in °C, processing routes[, grain sizes in µm]) with one entry per row
        (:func:`condition_texts`).
        """
        return self.encode_texts(self.texts(table, features, conditions))

    def encode_rows(self, rows: pl.DataFrame) -> Encoded:
        """Token ids of measurement rows, each at its own condition: columns ``canonical``
        (the composition), ``temperature_c``, ``processing`` and ``grain_size_um``
        (:func:`row_conditions`)."""
        table = CompositionTable.from_compositions(rows["canonical"].to_list())
        return self.encode(table, featurize(table), row_conditions(rows))

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
