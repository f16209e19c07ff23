"""The training data: the paper's sets and the MPEA database as typed measurements."""
