"""Element attention maps (paper Figure 8) on a tiny randomly initialised BERT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from hea_screen import CompositionTable, featurize
from hea_screen.errors import UserInputError
from hea_screen.inference.tokens import FeatureBins, TokenEncoder, build_tokenizer
from pretrain.attention import (
    attention_map,
    group_attention,
    load_encoder_model,
    load_token_encoder,
    main,
)

TRAINING_SET = ["CoCrFeMnNi", "AlCoCrFeNi", "Al0.5CoCrCuFeNi", "HfNbTaTiZr", "CoCrNi", "MoNbTaW"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("attention")
    encoder = TokenEncoder(build_tokenizer(), FeatureBins.fit(featurize(TRAINING_SET)))
    encoder.save(root / "tokenizer")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=encoder.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        type_vocab_size=2,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(root / "model")
    return root / "model", root / "tokenizer"


def test_map_is_symmetric_per_element_with_zero_diagonal(dirs: tuple[Path, Path]) -> None:
    model_dir, tok_dir = dirs
    amap = attention_map(
        load_encoder_model(model_dir), load_token_encoder(tok_dir, True), "Ni2FeCoCrMn"
    )
    assert amap.labels == ["Co", "Cr", "Fe", "Mn", "Ni"]
    assert amap.matrix.shape == (5, 5)
    np.testing.assert_allclose(amap.matrix, amap.matrix.T)
    assert np.all(np.diag(amap.matrix) == 0)
    off = amap.matrix[~np.eye(5, dtype=bool)]
    assert np.all(off > 0) and np.all(off < 1)
    assert amap.layer == 2 and amap.n_heads == 2


def test_grouping_matches_raw_attention(dirs: tuple[Path, Path]) -> None:
    """Recompute the map for Co-Ni by hand from the model's last-layer attention."""
    model_dir, tok_dir = dirs
    model, encoder = load_encoder_model(model_dir), load_token_encoder(tok_dir, True)
    amap = attention_map(model, encoder, "CoNi", include_features=True)
    assert amap.labels == ["Co", "Ni", "features"]
    table = CompositionTable.from_compositions(["CoNi"])
    enc = encoder.encode(table, featurize(table))
    with torch.no_grad():
        out = model(
            **{k: torch.from_numpy(v) for k, v in enc.as_dict().items()}, output_attentions=True
        )
    a = out.attentions[-1][0].mean(0).double().numpy()
    # [CLS] Co %50 Ni %50 [SEP] f0..f13 [SEP]
    co, ni, feats = [1, 2], [3, 4], list(range(6, 20))
    co_ni = (a[np.ix_(co, ni)].mean() + a[np.ix_(ni, co)].mean()) / 2
    co_f = (a[np.ix_(co, feats)].mean() + a[np.ix_(feats, co)].mean()) / 2
    assert amap.matrix[0, 1] == pytest.approx(co_ni)
    assert amap.matrix[0, 2] == pytest.approx(co_f)


def test_group_attention_small_example() -> None:
    attention = np.arange(16, dtype=float).reshape(4, 4)
    out = group_attention(attention, [[0, 1], [2, 3]])
    # mean of block (0:2, 2:4) = 4.5, of block (2:4, 0:2) = 10.5
    np.testing.assert_allclose(out, [[0.0, 7.5], [7.5, 0.0]])


def test_composition_only_model(dirs: tuple[Path, Path]) -> None:
    model_dir, tok_dir = dirs
    model, encoder = load_encoder_model(model_dir), load_token_encoder(tok_dir, False)
    amap = attention_map(model, encoder, "HfNbTaTiZr")
    assert amap.labels == ["Hf", "Nb", "Ta", "Ti", "Zr"]
    m = amap.matrix
    assert m.shape == (5, 5) and np.all(np.isfinite(m))
    np.testing.assert_allclose(m, m.T)
    assert np.all(np.diag(m) == 0)
    off = m[~np.eye(5, dtype=bool)]
    assert np.all(off > 0) and off.std() > 0  # attention probabilities, not all equal
    # [CLS] Hf %20 Nb %20 Ta %20 Ti %20 Zr %20 [SEP]: each token's attention sums to 1, so
    # the 5 × 5 block means over the 10 element tokens sum to at most 10 / 4
    assert m.sum() < 10 / 4
    # every entry recomputed from the model's last-layer attention, without group_attention
    enc = encoder.encode(CompositionTable.from_compositions(["HfNbTaTiZr"]), None)
    with torch.no_grad():
        out = model(
            **{k: torch.from_numpy(v) for k, v in enc.as_dict().items()}, output_attentions=True
        )
    a = out.attentions[-1][0].mean(0).double().numpy()
    assert a.shape == (12, 12)
    for i in range(5):
        for j in range(5):
            ti, tj = [1 + 2 * i, 2 + 2 * i], [1 + 2 * j, 2 + 2 * j]
            both = (a[np.ix_(ti, tj)].mean() + a[np.ix_(tj, ti)].mean()) / 2
            assert m[i, j] == pytest.approx(0.0 if i == j else both)


def test_command_line(dirs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    model_dir, tok_dir = dirs
    out = tmp_path / "fig.png"
    argv = [
        "--model",
        str(model_dir),
        "--tokenizer",
        str(tok_dir),
        "--composition",
        "CoCrFeMnNi",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    bad = [
        "--model",
        str(model_dir),
        "--tokenizer",
        str(tok_dir),
        "--composition",
        "CoXx",
        "--out",
        str(tmp_path / "x.png"),
    ]
    assert main(bad) == 2
    assert "Xx" in capsys.readouterr().err
    assert main([*argv[:4], "--composition", "CoNi", "--out", str(out), "--layer", "5"]) == 2
    with pytest.raises(UserInputError, match=r"no config\.json"):
        load_encoder_model(tmp_path)


@pytest.mark.parametrize("marker", ["config", "experiment.json"])
def test_auto_inputs_follow_the_model(tmp_path: Path, marker: str) -> None:
    """A composition-only model needs no feature bins; auto mode finds out from the model's
    config (``use_features``) or from its fine-tuning ``experiment.json``."""
    encoder = TokenEncoder(build_tokenizer(), None, use_features=False)
    encoder.save(tmp_path / "tokenizer")
    extra = {"use_features": False} if marker == "config" else {}
    config = BertConfig(
        vocab_size=encoder.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        type_vocab_size=2,
        **extra,
    )
    model_dir = tmp_path / "pretrained-composition-all" / "fold_0" / "model"
    BertForSequenceClassification(config).save_pretrained(model_dir)
    if marker == "experiment.json":
        (model_dir.parent.parent / "experiment.json").write_text(
            json.dumps({"inputs": "composition"})
        )
    base = [
        "--model",
        str(model_dir),
        "--tokenizer",
        str(tmp_path / "tokenizer"),
        "--composition",
        "AlCoCrFeNi",
        "--out",
        str(tmp_path / "map.png"),
    ]
    assert main(base) == 0 and (tmp_path / "map.png").stat().st_size > 0
    assert main([*base, "--inputs", "features"]) == 2


@pytest.mark.slow
def test_map_of_a_fine_tuned_fold(tiny_run: Path, tmp_path: Path) -> None:
    """A real fine-tuned fold of ``hea-train`` and the run's tokenizer."""
    model_dir = tiny_run / "finetune" / "uts_mpa" / "pretrained-features-all" / "fold_0" / "model"
    out = tmp_path / "map.png"
    argv = ["--model", str(model_dir), "--tokenizer", str(tiny_run / "tokenizer"),
            "--composition", "Al0.5CoCrCuFeNi", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0 and out.stat().st_size > 5000
    amap = attention_map(
        load_encoder_model(model_dir),
        load_token_encoder(tiny_run / "tokenizer", True),
        "Al0.5CoCrCuFeNi",
    )
    assert amap.labels == ["Al", "Co", "Cr", "Cu", "Fe", "Ni"]
    np.testing.assert_allclose(amap.matrix, amap.matrix.T)
