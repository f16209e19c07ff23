"""The shared tokenizer: closed vocabulary, no [UNK], identical via transformers."""

import numpy as np
import pytest

from hea_screen import CompositionTable, featurize
from hea_screen.datasets import load_mpea, load_paper_dataset
from hea_screen.tokens import (
    AMOUNT_LEVELS_PCT,
    FeatureBins,
    TokenEncoder,
    amount_levels,
    build_tokenizer,
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
