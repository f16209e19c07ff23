"""hea-screen: rank high-entropy alloy candidates by predicted UTS and elongation.

Data flow: compositions -> features -> tokens -> predictions -> ranking.
"""

from hea_screen.composition import Composition, parse
from hea_screen.errors import CompositionError, ElementDataError, UserInputError
from hea_screen.features import FEATURE_NAMES, FEATURE_UNITS, featurize
from hea_screen.table import CompositionTable

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
    "parse",
]
