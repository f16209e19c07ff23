"""Seeds derived from the run seed, so every fold and epoch has its own reproducible stream
whatever ran before it (a resumed run continues exactly as an uninterrupted one)."""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 32-bit seed from integer keys, e.g. ``derive_seed(run_seed, fold, epoch)``."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])
