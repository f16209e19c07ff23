"""The typed vocabulary of measurements: properties, test types, processing routes, tasks.

A strength is not a number of an alloy but of a *measurement*: (property, test type, test
temperature, processing route). In the MPEA database (Borg et al., Sci. Data 7 (2020) 430)
two thirds of the "UTS" values of the paper's set are compressive fracture strengths, and
three quarters of its "elongations" are compressive strains, so a model that pools them
mostly learns to tell tension from compression. This module names every such quantity once;
training, the model bundle and the screen all read these names from here.

- :class:`TestType`: ``tension`` (MPEA ``T``) or ``compression`` (MPEA ``C``).
- :class:`Processing`: the MPEA processing routes ``CAST``, ``WROUGHT``, ``ANNEAL``,
  ``POWDER``, ``OTHER`` (a missing route is read as ``OTHER``).
- :class:`Task`: one predicted quantity, a property at a test type, with its unit, e.g.
  ``uts_tension_mpa`` (tensile ultimate strength, MPa) or ``fracture_strain_compression_pct``
  (compressive strain at fracture, %). A compressive value never trains or fills a tensile
  task: they are different tasks.
- :class:`Condition`: test type, test temperature (°C), processing route and, optionally, the
  mean grain size (µm) of a measurement: the model inputs beside the composition.

Grain size is the thermo-mechanical state MPEA records (its ``grain size (μm)`` column, given
for about half of the tensile rows). Strength rises with finer grains by the Hall-Petch
relation σ = σ0 + k·d^-1/2 (E. O. Hall, Proc. Phys. Soc. B 64 (1951) 747; N. J. Petch,
J. Iron Steel Inst. 174 (1953) 25); within MPEA's alloys k ≈ 230-240 MPa·µm^½ for tensile UTS
and YS. A condition without a grain size means "state not stated" (the models' missing
indicator), never a default size. Measured microstructure (phases present) is an outcome of
the alloy and its processing, not an input, and is not part of a condition.

Vickers hardness (HV, kgf/mm²) is read as a room-temperature (25 °C) measurement of the
processed alloy whatever mechanical test shares its MPEA row; the phase label (BCC, FCC,
other) is a classification task of the processed alloy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from hea_screen.errors import UserInputError


class TestType(str, Enum):
    """Loading direction of a mechanical test."""

    __test__ = False  # not a pytest test class

    TENSION = "tension"
    COMPRESSION = "compression"

    @property
    def mpea_code(self) -> str:
        """The code MPEA uses: ``T`` or ``C``."""
        return "T" if self is TestType.TENSION else "C"

    @classmethod
    def parse(cls, value: object) -> TestType:
        """A test type from ``tension``/``compression`` (or MPEA's ``T``/``C``)."""
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower()
        for member in cls:
            if text in (member.value, member.mpea_code.lower()):
                return member
        raise UserInputError(f"unknown test type {value!r}: choose tension or compression (T or C)")


class Processing(str, Enum):
    """Processing route of the measured alloy (MPEA's five classes)."""

    CAST = "CAST"
    WROUGHT = "WROUGHT"
    ANNEAL = "ANNEAL"
    POWDER = "POWDER"
    OTHER = "OTHER"

    @classmethod
    def parse(cls, value: object) -> Processing:
        """A route from its name, case-insensitive (``cast``, ``as-cast`` -> ``CAST``)."""
        if isinstance(value, cls):
            return value
        text = str(value).strip().upper().replace("AS-", "").replace("AS_", "")
        try:
            return cls(text)
        except ValueError:
            raise UserInputError(
                f"unknown processing route {value!r}: choose one of "
                f"{', '.join(p.value.lower() for p in cls)}"
            ) from None


class Kind(str, Enum):
    """Regression (a value in a unit) or classification (a label)."""

    REGRESSION = "regression"
    CLASSIFICATION = "classification"


@dataclass(frozen=True)
class Task:
    """One predicted quantity.

    ``name`` is the column stem everywhere (``uts_tension_mpa`` gives ``uts_tension_mpa_mean``);
    ``mpea_column`` is where MPEA holds the value; ``test_type`` is ``None`` for hardness and
    phase; ``label`` is for people.
    """

    name: str
    property: str
    test_type: TestType | None
    unit: str
    mpea_column: str
    label: str
    kind: Kind = Kind.REGRESSION

    @property
    def is_regression(self) -> bool:
        return self.kind is Kind.REGRESSION

    @property
    def finer_grains_stronger(self) -> bool:
        """Whether the quantity rises with finer grains (Hall-Petch: strength and hardness;
        Hall, Proc. Phys. Soc. B 64 (1951) 747; Petch, J. Iron Steel Inst. 174 (1953) 25);
        ductility has no such rule."""
        return self.property in ("uts", "ys", "hardness")


UTS_T = Task("uts_tension_mpa", "uts", TestType.TENSION, "MPa", "uts_mpa", "tensile UTS (MPa)")
UTS_C = Task(
    "uts_compression_mpa",
    "uts",
    TestType.COMPRESSION,
    "MPa",
    "uts_mpa",
    "compressive fracture strength (MPa)",
)
YS_T = Task(
    "ys_tension_mpa", "ys", TestType.TENSION, "MPa", "ys_mpa", "tensile yield strength (MPa)"
)
YS_C = Task(
    "ys_compression_mpa",
    "ys",
    TestType.COMPRESSION,
    "MPa",
    "ys_mpa",
    "compressive yield strength (MPa)",
)
ELONG_T = Task(
    "elongation_tension_pct",
    "elongation",
    TestType.TENSION,
    "%",
    "elongation_pct",
    "tensile elongation at fracture (%)",
)
STRAIN_C = Task(
    "fracture_strain_compression_pct",
    "elongation",
    TestType.COMPRESSION,
    "%",
    "elongation_pct",
    "compressive strain at fracture (%)",
)
HARDNESS = Task("hardness_hv", "hardness", None, "HV", "hardness_hv", "Vickers hardness (HV)")
PHASE = Task("phase", "phase", None, "", "phase", "phase (BCC/FCC/other)", Kind.CLASSIFICATION)

#: Every task, in the order of model outputs.
TASKS: tuple[Task, ...] = (UTS_T, UTS_C, YS_T, YS_C, ELONG_T, STRAIN_C, HARDNESS, PHASE)
REGRESSION_TASKS: tuple[Task, ...] = tuple(t for t in TASKS if t.is_regression)
TASKS_BY_NAME: dict[str, Task] = {t.name: t for t in TASKS}

#: Phase classes, in the order of the phase head's outputs.
PHASES: tuple[str, ...] = ("BCC", "FCC", "other")

#: Properties a user can rank on, with the task each means at a test type.
PROPERTIES: tuple[str, ...] = ("uts", "ys", "elongation", "hardness")

#: Test temperature of room-temperature tests and of every hardness value (°C).
ROOM_TEMPERATURE_C = 25.0

#: Largest grain size (µm) accepted at all: 10 mm, coarser than any polycrystalline test
#: specimen's grains (MPEA's largest is 2,000 µm). A model may accept a narrower range: its
#: training data's (:class:`hea_screen.inference.bundle.Coverage`).
MAX_GRAIN_SIZE_UM = 10_000.0


#: Test-temperature bands (°C, lower bound inclusive) within which two tests count as made at
#: the same temperature when the nearest measured alloy is looked up: cryogenic (liquid
#: nitrogen, -196 °C), room, warm (below 600 °C) and hot.
TEMPERATURE_BANDS: tuple[tuple[str, float], ...] = (
    ("cryogenic", -math.inf),
    ("room", -50.0),
    ("warm", 100.0),
    ("hot", 600.0),
)


def temperature_band(temperature_c: float) -> str:
    """The :data:`TEMPERATURE_BANDS` name of a test temperature (°C)."""
    return [name for name, low in TEMPERATURE_BANDS if temperature_c >= low][-1]


def check_grain_size(value: object) -> float | None:
    """A mean grain size in µm, checked: ``None`` (not stated) or a finite number in
    (0, :data:`MAX_GRAIN_SIZE_UM`]; anything else is a :class:`UserInputError` naming it."""
    if value is None:
        return None
    accepted = f"a grain size in µm, more than 0 and at most {MAX_GRAIN_SIZE_UM:,.0f}"
    if isinstance(value, bool):
        raise UserInputError(f"grain size {value!r}: need {accepted}")
    try:
        size = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserInputError(f"grain size {value!r} is not a number: need {accepted}") from None
    if not math.isfinite(size) or not 0 < size <= MAX_GRAIN_SIZE_UM:
        raise UserInputError(f"grain size {value!r} µm: need {accepted}")
    return size


def task(name: str) -> Task:
    """The task called ``name``; a clear error lists the known ones."""
    try:
        return TASKS_BY_NAME[name]
    except KeyError:
        raise UserInputError(
            f"unknown property {name!r}: this project predicts {', '.join(TASKS_BY_NAME)}"
        ) from None


def task_for(prop: str, test_type: TestType) -> Task:
    """The task of a property (``uts``, ``ys``, ``elongation``, ``hardness``) at a test type."""
    if prop not in PROPERTIES:
        raise UserInputError(f"unknown property {prop!r}: choose one of {', '.join(PROPERTIES)}")
    if prop == "hardness":
        return HARDNESS
    return next(t for t in REGRESSION_TASKS if t.property == prop and t.test_type is test_type)


@dataclass(frozen=True)
class Condition:
    """Where a measurement was made: test type, test temperature (°C), processing route and
    mean grain size (µm, ``None`` when not stated).

    The default is the screen's: tension at 25 °C, as-cast, grain size not stated.
    """

    test_type: TestType = TestType.TENSION
    temperature_c: float = ROOM_TEMPERATURE_C
    processing: Processing = Processing.CAST
    grain_size_um: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "grain_size_um", check_grain_size(self.grain_size_um))
        t = self.temperature_c
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise UserInputError(f"test temperature {t!r}: need a finite number in °C")
        if t < -273.15:
            raise UserInputError(f"test temperature {t} °C is below absolute zero")

    @classmethod
    def of(
        cls,
        test_type: object = TestType.TENSION,
        temperature_c: object = ROOM_TEMPERATURE_C,
        processing: object = Processing.CAST,
        grain_size_um: object = None,
    ) -> Condition:
        """A condition from user values (names or enum members), checked."""
        try:
            temperature = float(temperature_c)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UserInputError(
                f"test temperature {temperature_c!r} is not a number (°C)"
            ) from None
        return cls(
            TestType.parse(test_type),
            temperature,
            Processing.parse(processing),
            check_grain_size(grain_size_um),
        )

    @property
    def measured_key(self) -> str:
        """``ROUTE|band``: the processing route and temperature band a measured alloy must
        share with this condition to be its nearest measured alloy."""
        return f"{self.processing.value}|{temperature_band(self.temperature_c)}"

    def describe(self) -> dict[str, object]:
        """JSON-ready: ``{"test_type": "tension", "temperature_c": 25.0, "processing": "CAST",
        "grain_size_um": None}``."""
        return {
            "test_type": self.test_type.value,
            "temperature_c": self.temperature_c,
            "processing": self.processing.value,
            "grain_size_um": self.grain_size_um,
        }

    def __str__(self) -> str:
        grain = "" if self.grain_size_um is None else f", grain size {self.grain_size_um:g} µm"
        return (
            f"{self.test_type.value}, {self.temperature_c:g} °C, "
            f"{self.processing.value.lower()}{grain}"
        )
