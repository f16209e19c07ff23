"""Element-to-element attention maps, as in the paper's Figure 8.

For one composition and a pre-trained or fine-tuned model directory (``save_pretrained``
of any BERT model; the encoder is loaded as ``BertModel`` with eager attention):

1. encode the composition with the run's tokenizer
(:class:`~hea_screen.inference.tokens.TokenEncoder`,
   features included unless the model is composition-only: ``--inputs auto`` follows
   :func:`model_uses_features`),
2. take the attention probabilities of the last layer (or ``layer``) and average them over
   the heads,
3. group tokens per element: an element token together with its amount token (``Co``,
   ``%20``) forms the group of Co; the average attention between two groups is the mean
   over their token pairs. The 14 feature tokens are one ``features`` group, shown only
   with ``include_features`` (the paper's map shows elements only; features as one group
   keeps the map about the alloy's elements while still saying how much they draw on the
   feature summary); ``[CLS]`` and ``[SEP]`` belong to no group,
4. symmetrize ((A + Aᵀ) / 2) and set the diagonal (self-attention) to zero; the heatmap
   masks it.

Command line::

    python -m pretrain.attention --model RUN/finetune/uts_mpa/<experiment>/fold_0/model \\
        --tokenizer RUN/tokenizer --composition "CoCrFeMnNi" --out attention.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import BertModel

from hea_screen.compositions.composition import parse
from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import UserInputError
from hea_screen.inference.tokens import TOKENIZER_FILE, TokenEncoder
from pretrain.figures import plot_attention

log = logging.getLogger(__name__)

FEATURES_GROUP = "features"


@dataclass(frozen=True)
class AttentionMap:
    """Symmetric group-to-group attention with a zero diagonal."""

    composition: str
    labels: list[str]
    matrix: np.ndarray
    layer: int
    n_heads: int


def load_encoder_model(model_dir: str | Path) -> BertModel:
    """The BERT encoder of a saved model (MLM, regression or bare), with eager attention."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserInputError(f"{model_dir} is not a saved model directory (no config.json)")
    model = BertModel.from_pretrained(
        model_dir, attn_implementation="eager", add_pooling_layer=False
    )
    return model.eval()


def model_uses_features(model_dir: str | Path, model: BertModel) -> bool:
    """Whether a model was trained with feature tokens.

    Read from ``use_features`` in its config, else from the ``inputs`` of the
    ``experiment.json`` of a fine-tuned fold (``<experiment>/fold_<k>/model``); otherwise
    assumed (pre-trained models see features).
    """
    flag = getattr(model.config, "use_features", None)
    if flag is not None:
        return bool(flag)
    experiment = Path(model_dir).resolve().parent.parent / "experiment.json"
    if experiment.is_file():
        inputs = json.loads(experiment.read_text()).get("inputs")
        if inputs in ("features", "composition"):
            return inputs == "features"
    return True


def load_token_encoder(tokenizer_dir: str | Path, use_features: bool) -> TokenEncoder:
    """The run's tokenizer; raises a user error when the directory lacks it."""
    tokenizer_dir = Path(tokenizer_dir)
    if not (tokenizer_dir / TOKENIZER_FILE).is_file():
        raise UserInputError(
            f"{tokenizer_dir} holds no {TOKENIZER_FILE}: pass the run's tokenizer/"
        )
    encoder = TokenEncoder.load(tokenizer_dir, use_features=use_features)
    if use_features and encoder.bins is None:
        raise UserInputError(
            f"{tokenizer_dir} has no feature_bins.json: pass --inputs composition for a "
            "composition-only model"
        )
    return encoder


def token_groups(
    tokens: Sequence[str], type_ids: Sequence[int], elements: Sequence[str]
) -> list[list[int]]:
    """Token positions of each element (element + amount token), then of the feature tokens."""
    groups: list[list[int]] = []
    features: list[int] = []
    element_set = set(elements)
    for i, (tok, typ) in enumerate(zip(tokens, type_ids)):
        if tok in ("[CLS]", "[SEP]", "[PAD]"):
            continue
        if typ == 1:
            features.append(i)
        elif tok in element_set:
            groups.append([i])
        elif groups and tok.startswith("%"):
            groups[-1].append(i)
        else:
            raise ValueError(f"unexpected token {tok!r} at position {i} in {list(tokens)}")
    if [tokens[g[0]] for g in groups] != list(elements):
        raise ValueError(f"element tokens {[tokens[g[0]] for g in groups]} do not match {elements}")
    return [*groups, features] if features else groups


def group_attention(attention: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Mean attention between token groups, symmetrized, with a zero diagonal."""
    n = len(groups)
    out = np.zeros((n, n), dtype=np.float64)
    for a, ga in enumerate(groups):
        for b, gb in enumerate(groups):
            out[a, b] = attention[np.ix_(ga, gb)].mean()
    out = (out + out.T) / 2
    np.fill_diagonal(out, 0.0)
    return out


def attention_map(
    model: BertModel,
    encoder: TokenEncoder,
    composition: str,
    layer: int = -1,
    include_features: bool = False,
) -> AttentionMap:
    """Head-averaged attention of ``layer`` (default: last) grouped per element."""
    if encoder.vocab_size > model.config.vocab_size:
        raise UserInputError(
            f"tokenizer has {encoder.vocab_size} tokens but the model only "
            f"{model.config.vocab_size}: pass the tokenizer/ of the run that trained this model"
        )
    comp = parse(composition)
    table = CompositionTable.from_compositions([comp])
    features = featurize(table) if encoder.use_features else None
    enc = encoder.encode(table, features)
    n_layers = model.config.num_hidden_layers
    if not -n_layers <= layer < n_layers:
        raise UserInputError(f"layer {layer} out of range: the model has {n_layers} layers")
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(enc.input_ids),
            attention_mask=torch.from_numpy(enc.attention_mask),
            token_type_ids=torch.from_numpy(enc.token_type_ids),
            output_attentions=True,
        )
    attn = out.attentions[layer][0]  # (heads, seq, seq)
    mean = attn.mean(dim=0).double().numpy()
    tokens = [encoder.tokenizer.id_to_token(int(i)) for i in enc.input_ids[0]]
    groups = token_groups(tokens, enc.token_type_ids[0].tolist(), comp.elements)
    labels = list(comp.elements)
    if encoder.use_features:
        if include_features:
            labels.append(FEATURES_GROUP)
        else:
            groups = groups[:-1]
    percent = " ".join(f"{el}{m / 10_000:.3g}" for el, m in zip(comp.elements, comp.micro))
    return AttentionMap(
        composition=f"{composition} ({percent}, at.%)",
        labels=labels,
        matrix=group_attention(mean, groups),
        layer=layer % n_layers + 1,
        n_heads=int(attn.shape[0]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.attention", description="Element attention map (paper Figure 8)."
    )
    parser.add_argument("--model", type=Path, required=True, help="saved model directory")
    parser.add_argument("--tokenizer", type=Path, required=True, help="the run's tokenizer/ dir")
    parser.add_argument("--composition", required=True, help='e.g. "CoCrFeMnNi"')
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--layer", type=int, default=-1, help="layer index (default: last)")
    parser.add_argument(
        "--inputs",
        choices=("auto", "features", "composition"),
        default="auto",
        help="what the model was trained on (auto: config.json's use_features, else features)",
    )
    parser.add_argument(
        "--features-group", action="store_true", help="add the feature tokens as one group"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model = load_encoder_model(args.model)
        use_features = (
            model_uses_features(args.model, model)
            if args.inputs == "auto"
            else args.inputs == "features"
        )
        encoder = load_token_encoder(args.tokenizer, use_features=use_features)
        amap = attention_map(model, encoder, args.composition, args.layer, args.features_group)
        plot_attention(
            amap.matrix, amap.labels, amap.composition, amap.layer, amap.n_heads, args.out
        )
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
