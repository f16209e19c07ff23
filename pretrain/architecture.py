"""The BERT architecture of a run, from its :class:`~pretrain.config.ModelConfig` and
tokenizer (vocabulary size, padding id)."""

from __future__ import annotations

from typing import Any

from transformers import BertConfig

from hea_screen.inference.tokens import TokenEncoder
from pretrain.config import MAX_POSITION_EMBEDDINGS, ModelConfig


def bert_config(model: ModelConfig, encoder: TokenEncoder, **extra: Any) -> BertConfig:
    """``BertConfig`` with the model's dimensions, 64 positions and 2 token types.

    ``extra`` goes to the config as is (e.g. ``num_labels=1, problem_type="regression"``).
    """
    return BertConfig(
        vocab_size=encoder.vocab_size,
        **model.dimensions(),
        hidden_dropout_prob=model.dropout,
        attention_probs_dropout_prob=model.dropout,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        type_vocab_size=2,
        pad_token_id=encoder.token_id("[PAD]"),
        **extra,
    )
