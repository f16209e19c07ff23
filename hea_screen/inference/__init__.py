"""Models: model inputs (design matrix, tokens), applicability, the model bundle and its
predictor."""
