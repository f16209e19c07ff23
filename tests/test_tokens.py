"""The shared tokenizer: closed vocabulary, no [UNK], identical via transformers."""

import re

import numpy as np
import pytest

from hea_screen import CompositionTable, featurize
from hea_screen.conditions import Condition, Processing
from hea_screen.datasets.sources import load_mpea, load_paper_dataset
from hea_screen.errors import UserInputError
from hea_screen.inference.tokens import (
    AMOUNT_LEVELS_PCT,
    CONDITION_TOKENS,
    GRAIN_TOKENS,
    FeatureBins,
    TokenEncoder,
    amount_levels,
    build_tokenizer,
    grain_bins,
    grain_tokens,
    temperature_bins,
    temperature_tokens,
    vocabulary,
)


@pytest.fixture(scope="module")
def encoder() -> TokenEncoder:
    texts = load_mpea()["formula"].unique().sort().to_list()
    return TokenEncoder(build_tokenizer(), FeatureBins.fit(featurize(texts)))


def test_layout_and_types(encoder: TokenEncoder) -> None:
    table = CompositionTable.from_compositions(["CoCrFeMnNi"])
    enc = encoder.encode(table, featurize(table))
    tokens = [encoder.tokenizer.id_to_token(i) for i in enc.input_ids[0]]
    assert tokens[:12] == [
        "[CLS]",
        "Co",
        "%20",
        "Cr",
        "%20",
        "Fe",
        "%20",
        "Mn",
        "%20",
        "Ni",
        "%20",
        "[SEP]",
    ]
    assert tokens[12].startswith("vec_") and tokens[-2].startswith("delta_chi_pauling_")
    assert len(tokens) == 2 * 5 + 17
    assert enc.token_type_ids[0].tolist() == [0] * 12 + [1] * 15


def test_same_tokens_for_every_notation(encoder: TokenEncoder) -> None:
    table = CompositionTable.from_compositions(["CoCrFeNi", "Co25Cr25Fe25Ni25", "Ni2Fe2Cr2Co2"])
    ids = encoder.encode(table, featurize(table)).input_ids
    assert (ids == ids[0]).all()


def test_no_unk_on_datasets(encoder: TokenEncoder) -> None:
    texts = load_mpea()["formula"].unique().to_list()
    texts += load_paper_dataset("elongation_pct")["composition"].to_list()
    table = CompositionTable.from_compositions(texts)
    enc = encoder.encode(table, featurize(table))
    assert not (enc.input_ids == encoder.token_id("[UNK]")).any()
    comp_only = TokenEncoder(encoder.tokenizer, None, use_features=False).encode(table, None)
    assert comp_only.input_ids.shape[1] == 2 * max(np.count_nonzero(table.micro, axis=1)) + 2


def test_amount_levels() -> None:
    micro = np.array([[200_000, 1_000, 1, 1_000_000, 12_600]])
    assert AMOUNT_LEVELS_PCT[amount_levels(micro)][0].tolist() == [20.0, 0.1, 0.1, 100.0, 1.25]
    assert len(AMOUNT_LEVELS_PCT) == len(set(AMOUNT_LEVELS_PCT))


def test_save_load_and_transformers_agree(encoder: TokenEncoder, tmp_path) -> None:
    encoder.save(tmp_path)
    again = TokenEncoder.load(tmp_path)
    table = CompositionTable.from_compositions(["Al0.3CoCrFeNi", "HfNbTaTiZr"])
    feats = featurize(table)
    a, b = encoder.encode(table, feats), again.encode(table, feats)
    assert (a.input_ids == b.input_ids).all()
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    comp, feat = encoder.texts(table, feats)[0]
    assert hf(comp, feat)["input_ids"] == a.input_ids[0][a.attention_mask[0] == 1].tolist()
    assert hf.mask_token == "[MASK]" and hf.pad_token_id == 0


#: Tokens before the condition tokens (the format-1 bundles' tokenizers) and before the
#: grain-size tokens (the shipped transformer bundle's, exported without them).
N_PLAIN, N_BEFORE_GRAIN = 608, 623


def test_condition_tokens_extend_the_vocabulary_at_its_end() -> None:
    assert tuple(vocabulary()[N_PLAIN:]) == (*CONDITION_TOKENS, *GRAIN_TOKENS)
    assert len(set(CONDITION_TOKENS)) == len(CONDITION_TOKENS) == 10 + 5
    assert GRAIN_TOKENS == ("grain_lt_2", "grain_2_10", "grain_10_50", "grain_50_200",
                            "grain_ge_200", "grain_not_stated")  # fmt: skip
    # the format-1 bundles' tokenizers hold 608 tokens: every one keeps its id
    before = vocabulary()[:N_PLAIN]
    assert before[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert before[-1] == "delta_chi_pauling_31"
    assert len(vocabulary()) == N_BEFORE_GRAIN + len(GRAIN_TOKENS)


def test_shipped_transformer_vocabulary_is_this_versions() -> None:
    """The shipped transformer bundle carries the grain-size tokens after the 623 it had
    before them (whose ids never move)."""
    from hea_screen.inference.bundle_files import shipped_bundle_path

    shipped = TokenEncoder.load(shipped_bundle_path("transformer") / "tokenizer")
    assert shipped.use_conditions and shipped.use_grain_size  # loaded as saved
    assert shipped.tokenizer.get_vocab() == {t: i for i, t in enumerate(vocabulary())}
    assert len(vocabulary()) == 623 + 6


@pytest.mark.parametrize(
    ("microns", "token"),
    [(0.018, "grain_lt_2"), (1.99, "grain_lt_2"), (2, "grain_2_10"), (9.9, "grain_2_10"),
     (10, "grain_10_50"), (50, "grain_50_200"), (199, "grain_50_200"), (200, "grain_ge_200"),
     (2000, "grain_ge_200"), (np.nan, "grain_not_stated")],
)  # fmt: skip
def test_grain_bins(microns: float, token: str) -> None:
    assert grain_tokens()[int(grain_bins(np.array([microns]))[0])] == token


@pytest.mark.parametrize(
    ("celsius", "token"),
    [(-268.8, "temp_lt_-200"), (-200, "temp_-200_0"), (-0.5, "temp_-200_0"), (0, "temp_0_100"),
     (25, "temp_0_100"), (99.9, "temp_0_100"), (100, "temp_100_200"), (700, "temp_600_800"),
     (1199, "temp_1000_1200"), (1200, "temp_ge_1200"), (1600, "temp_ge_1200")],
)  # fmt: skip
def test_temperature_bins(celsius: float, token: str) -> None:
    assert temperature_tokens()[int(temperature_bins(np.array([celsius]))[0])] == token


@pytest.fixture(scope="module")
def cond_encoder(encoder: TokenEncoder) -> TokenEncoder:
    return TokenEncoder(encoder.tokenizer, encoder.bins, use_features=True, use_conditions=True)


def test_condition_layout_and_types(cond_encoder: TokenEncoder) -> None:
    table = CompositionTable.from_compositions(["CoCrFeMnNi"])
    enc = cond_encoder.encode(table, featurize(table), Condition())
    tokens = [cond_encoder.tokenizer.id_to_token(i) for i in enc.input_ids[0]]
    assert len(tokens) == 2 * 5 + 19
    assert tokens[-4].startswith("delta_chi_pauling_")
    assert tokens[-3:] == ["temp_0_100", "proc_CAST", "[SEP]"]
    assert enc.token_type_ids[0].tolist() == [0] * 12 + [1] * 17
    plain = TokenEncoder(cond_encoder.tokenizer, cond_encoder.bins).encode(table, featurize(table))
    assert plain.input_ids[0].tolist() == [t for i, t in enumerate(enc.input_ids[0]) if i not in
                                           (len(tokens) - 3, len(tokens) - 2)]  # fmt: skip


def test_row_conditions_and_length_buckets(cond_encoder: TokenEncoder) -> None:
    texts = ["CoCrFeMnNi", "HfNbTaTiZr", "CoCrNi", "AlCoCrFeNi", "NbMoTaW"]
    table = CompositionTable.from_compositions(texts)
    temps = np.array([25.0, 1200.0, -196.0, 600.0, 25.0])
    routes = ["CAST", Processing.ANNEAL, "wrought", "powder", "as-cast"]
    enc = cond_encoder.encode(table, featurize(table), (temps, routes))
    k = np.count_nonzero(table.micro, axis=1)
    lengths = enc.attention_mask.sum(axis=1)
    assert (lengths == 2 * k + 19).all()
    last = [enc.input_ids[r, lengths[r] - 3 : lengths[r] - 1] for r in range(len(texts))]
    words = [[cond_encoder.tokenizer.id_to_token(int(i)) for i in pair] for pair in last]
    assert words == [["temp_0_100", "proc_CAST"], ["temp_ge_1200", "proc_ANNEAL"],
                     ["temp_-200_0", "proc_WROUGHT"], ["temp_600_800", "proc_POWDER"],
                     ["temp_0_100", "proc_CAST"]]  # fmt: skip


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        (None, "use_conditions"),
        ((np.array([25.0]), ["CAST", "CAST"]), "1 temperatures and 2 processing routes"),
        ((np.array([25.0, np.nan]), ["CAST", "CAST"]), "nan"),
        ((np.array([25.0, -300.0]), ["CAST", "CAST"]), "-300"),
        ((np.array([25.0, 25.0]), ["CAST", "forged"]), "'forged'"),
        ("hot", "Condition or a tuple"),
    ],
)
def test_bad_conditions_are_named(cond_encoder: TokenEncoder, conditions, message: str) -> None:
    table = CompositionTable.from_compositions(["CoCrFeMnNi", "CoCrNi"])
    with pytest.raises(UserInputError, match=re.escape(message)):
        cond_encoder.encode(table, featurize(table), conditions)


def test_conditions_need_a_condition_encoder(encoder: TokenEncoder) -> None:
    table = CompositionTable.from_compositions(["CoCrFeMnNi"])
    with pytest.raises(UserInputError, match="use_conditions=False"):
        encoder.encode(table, featurize(table), Condition())
    with pytest.raises(UserInputError, match="use_features"):
        TokenEncoder(encoder.tokenizer, None, use_features=False, use_conditions=True)


def test_condition_flag_saved_and_old_directories_upgraded(
    cond_encoder: TokenEncoder, tmp_path
) -> None:
    cond_encoder.save(tmp_path / "new")
    loaded = TokenEncoder.load(tmp_path / "new")
    assert loaded.use_conditions and TokenEncoder.load(tmp_path / "new", use_conditions=False)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "new"))
    assert hf.convert_tokens_to_ids("proc_CAST") == cond_encoder.token_id("proc_CAST")

    old_tokens = vocabulary()[:N_PLAIN]
    TokenEncoder(build_tokenizer(old_tokens), cond_encoder.bins).save(tmp_path / "old")
    assert not TokenEncoder.load(tmp_path / "old").use_conditions
    upgraded = TokenEncoder.load(tmp_path / "old", use_conditions=True)
    assert upgraded.vocab_size == N_BEFORE_GRAIN  # the grain-size tokens only when asked for
    assert all(upgraded.token_id(t) == i for i, t in enumerate(old_tokens))
    table = CompositionTable.from_compositions(["Al0.3CoCrFeNi"])
    feats = featurize(table)
    cond = Condition.of("tension", 700, "anneal")
    a, b = upgraded.encode(table, feats, cond), cond_encoder.encode(table, feats, cond)
    assert (a.input_ids == b.input_ids).all()
    with pytest.raises(UserInputError, match="condition tokens"):
        TokenEncoder(build_tokenizer(old_tokens), cond_encoder.bins, use_conditions=True)


@pytest.fixture(scope="module")
def grain_encoder(encoder: TokenEncoder) -> TokenEncoder:
    return TokenEncoder(encoder.tokenizer, encoder.bins, True, True, use_grain_size=True)


def test_grain_size_token_follows_the_route(
    cond_encoder: TokenEncoder, grain_encoder: TokenEncoder
) -> None:
    table = CompositionTable.from_compositions(["CoCrFeMnNi"])
    feats = featurize(table)
    fine = grain_encoder.encode(table, feats, Condition.of("tension", 25, "wrought", 20))
    unstated = grain_encoder.encode(table, feats, Condition.of("tension", 25, "wrought"))
    tokens = [grain_encoder.tokenizer.id_to_token(i) for i in fine.input_ids[0]]
    assert len(tokens) == 2 * 5 + 20
    assert tokens[-4:] == ["temp_0_100", "proc_WROUGHT", "grain_10_50", "[SEP]"]
    assert fine.token_type_ids[0].tolist() == [0] * 12 + [1] * 18
    # the grain size changes exactly one id; without the grain token it changes none
    changed = np.flatnonzero(fine.input_ids[0] != unstated.input_ids[0]).tolist()
    assert changed == [len(tokens) - 2]
    assert grain_encoder.tokenizer.id_to_token(int(unstated.input_ids[0, -2])) == "grain_not_stated"
    old = [cond_encoder.encode(table, feats, Condition.of("tension", 25, "wrought", d)).input_ids
           for d in (20, None)]  # fmt: skip
    assert (old[0] == old[1]).all()
    assert old[0][0].tolist() == np.delete(fine.input_ids[0], -2).tolist()
    assert grain_encoder.condition_inputs == ("temperature", "processing", "grain_size")
    assert cond_encoder.condition_inputs == ("temperature", "processing")


def test_row_grain_sizes(grain_encoder: TokenEncoder) -> None:
    table = CompositionTable.from_compositions(["CoCrFeMnNi", "CoCrNi", "NbMoTaW"])
    conditions = (np.full(3, 25.0), ["cast"] * 3, np.array([0.5, np.nan, 250.0]))
    enc = grain_encoder.encode(table, featurize(table), conditions)
    lengths = enc.attention_mask.sum(axis=1)
    words = [grain_encoder.tokenizer.id_to_token(int(enc.input_ids[r, n - 2]))
             for r, n in enumerate(lengths)]  # fmt: skip
    assert words == ["grain_lt_2", "grain_not_stated", "grain_ge_200"]


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ((np.full(2, 25.0), ["CAST", "CAST"]), "grain sizes), got tuple of 2"),
        ((np.full(2, 25.0), ["CAST", "CAST"], np.array([5.0])), "and 1 grain sizes for 2"),
        ((np.full(2, 25.0), ["CAST", "CAST"], np.array([5.0, -1.0])), "grain size -1.0 µm"),
        ((np.full(2, 25.0), ["CAST", "CAST"], np.array([5.0, np.inf])), "grain size inf µm"),
    ],
)
def test_bad_grain_sizes_are_named(grain_encoder: TokenEncoder, conditions, message) -> None:
    table = CompositionTable.from_compositions(["CoCrFeMnNi", "CoCrNi"])
    with pytest.raises(UserInputError, match=re.escape(message)):
        grain_encoder.encode(table, featurize(table), conditions)


def test_grain_flag_saved_and_pre_grain_directories_upgraded(
    cond_encoder: TokenEncoder, grain_encoder: TokenEncoder, tmp_path
) -> None:
    grain_encoder.save(tmp_path / "new")
    assert TokenEncoder.load(tmp_path / "new").use_grain_size
    pre_grain = vocabulary()[:N_BEFORE_GRAIN]
    TokenEncoder(build_tokenizer(pre_grain), cond_encoder.bins, True, True).save(tmp_path / "old")
    assert not TokenEncoder.load(tmp_path / "old").use_grain_size
    upgraded = TokenEncoder.load(tmp_path / "old", use_grain_size=True)
    assert upgraded.vocab_size == len(vocabulary())
    assert all(upgraded.token_id(t) == i for i, t in enumerate(pre_grain))
    with pytest.raises(UserInputError, match="no grain-size tokens"):
        TokenEncoder(build_tokenizer(pre_grain), cond_encoder.bins, True, True, True)
    with pytest.raises(UserInputError, match="use_conditions=True"):
        TokenEncoder(cond_encoder.tokenizer, cond_encoder.bins, True, False, True)
