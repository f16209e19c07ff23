"""hea-screen: rank high-entropy alloy candidates by predicted strength and ductility at a
stated test condition (see :mod:`hea_screen.conditions`).

Data flow: compositions -> features -> tokens -> predictions -> ranking.
"""

from hea_screen.compositions.composition import Composition, parse
from hea_screen.compositions.features import FEATURE_NAMES, FEATURE_UNITS, featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.errors import CompositionError, ElementDataError, UserInputError

__version__ = "0.1.0"

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_UNITS",
    "Composition",
    "CompositionError",
    "CompositionTable",
    "ElementDataError",
    "UserInputError",
    "__version__",
    "featurize",
    "load_model",
    "parse",
]


def __getattr__(name: str) -> object:
    """``load_model`` is imported on first use, so ``import hea_screen`` skips ONNX Runtime."""
    if name == "load_model":
        from hea_screen.inference.predictor import load_model

        return load_model
    raise AttributeError(f"module 'hea_screen' has no attribute {name!r}")
