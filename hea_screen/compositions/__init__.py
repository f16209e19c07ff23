"""Compositions and what is computed from them alone: parsing, element data, Table 1 features,
phase rules, weigh-outs."""
