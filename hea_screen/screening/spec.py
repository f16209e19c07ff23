"""Screening specifications: a candidate space, a ranking and run options, from YAML or flags.

A spec file (``candidates/*.yaml``) reads::

    name: cantor
    description: free text
    space:
      elements: [Co, Cr, Fe, Mn, Ni, Al, Cu, Ti]   # the palette
      require: [Co, Cr, Fe, Ni]                    # present in every candidate (optional)
      min_elements: 4                              # elements per alloy
      max_elements: 6
      step: 0.05                                   # fraction grid (1/step whole), or "1/20"
      min_fraction: 0.05                           # every element present, at least
      max_fraction: 0.35                           # every element, at most
      bounds: {Al: [0, 0.2]}                       # per-element [low, high] fractions
      families: [equimolar, non_equimolar]         # either or both
      sample: 100000                               # optional: stratified random sample
      seed: 0
    condition:                                     # what the predicted values mean
      test: tension                                # tension | compression
      temperature: 25                              # test temperature, °C
      processing: cast                             # cast | wrought | anneal | powder | other
      grain_size_um: 20                            # optional: mean grain size, µm
    ranking:
      objective: weighted                          # uts | ys | elongation | hardness |
                                                   # weighted | pareto
      weights: {uts: 0.5, elongation: 0.5}         # strength (UTS), ductility
      risk: safe                                   # mean | safe | explore
      kappa: 1.0
      top: 200
    run:
      partition_size: 8192                         # candidates per Dask partition
      ingot_mass_g: 50                             # for the weigh-out masses

Every key but ``space.elements`` is optional (defaults in :data:`DEFAULTS`). Unknown keys,
wrong types and unreadable files raise :class:`~hea_screen.errors.SpaceError` naming the
file, the key and what is accepted. The command line builds the same :class:`ScreenSpec`
from flags with the parsers below.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from hea_screen.compositions.weighing import DEFAULT_INGOT_MASS_G, check_ingot_mass
from hea_screen.conditions import Condition
from hea_screen.errors import SpaceError, UserInputError
from hea_screen.screening.ranking import MAX_COUNT, Ranking
from hea_screen.screening.space import Candidates, CandidateSpace, SampledSpace

#: Defaults shared by the command line and spec files.
DEFAULTS: dict[str, Any] = {
    "min_elements": 3,
    "step": "0.05",
    "min_fraction": "0",
    "max_fraction": "0.5",
    "objective": "weighted",
    "risk": "mean",
    "kappa": 1.0,
    "weights": (0.5, 0.5),
    "top": 100,
    "seed": 0,
    "ingot_mass_g": DEFAULT_INGOT_MASS_G,
}

FAMILIES: tuple[str, ...] = ("equimolar", "non_equimolar")

#: Longest number text and largest decimal exponent accepted for a fraction.
MAX_NUMBER_CHARS = 40
MAX_EXPONENT = 30

_NUMBER = re.compile(r"[+-]?(?:\d+/\d+|(?:\d+\.?\d*|\.\d+)(?:[eE](?P<exp>[+-]?\d+))?)")

_SECTIONS: dict[str, tuple[str, ...]] = {
    "": ("name", "description", "space", "condition", "ranking", "run"),
    "space": (
        "elements",
        "require",
        "min_elements",
        "max_elements",
        "step",
        "min_fraction",
        "max_fraction",
        "bounds",
        "families",
        "sample",
        "seed",
    ),
    "condition": ("test", "temperature", "processing", "grain_size_um"),
    "ranking": ("objective", "weights", "risk", "kappa", "top"),
    "run": ("partition_size", "ingot_mass_g"),
}


@dataclass(frozen=True)
class ScreenSpec:
    """Everything a screening run needs besides the model and the machines.

    ``sample``: screen a stratified random sample of this many candidates instead of the
    whole space (``None``: all). ``partition_size``: candidates per Dask partition
    (``None``: chosen by the engine). ``ingot_mass_g``: ingot mass in grams for weigh-outs.
    """

    name: str
    space: CandidateSpace
    ranking: Ranking
    sample: int | None = None
    seed: int = 0
    partition_size: int | None = None
    ingot_mass_g: float = DEFAULT_INGOT_MASS_G
    description: str = ""

    def __post_init__(self) -> None:
        for what, value in (("sample", self.sample), ("partition size", self.partition_size)):
            if value is not None and (not isinstance(value, int) or not 1 <= value <= MAX_COUNT):
                raise UserInputError(
                    f"{what} {value!r}: need a whole number from 1 to {MAX_COUNT:,}"
                )
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise UserInputError(f"seed {self.seed!r}: need a whole number from 0 to 2**63 - 1")
        check_ingot_mass(self.ingot_mass_g)

    def candidates(self) -> Candidates:
        """The space, or the sample of it when ``sample`` is set."""
        if self.sample is None:
            return self.space
        return SampledSpace(self.space, self.sample, self.seed)

    def fingerprint(self) -> str:
        """SHA-256 of what determines the partial results (candidates and ranking)."""
        text = json.dumps(
            {"candidates": self.candidates().fingerprint(), "ranking": self.ranking.describe()},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------- value parsers
def parse_elements(value: str | Iterable[str], what: str = "elements") -> tuple[str, ...]:
    """``"Co,Cr,Fe"`` or a list of symbols -> sorted symbols; a symbol given twice is refused."""
    if not isinstance(value, (str, list, tuple)):
        raise SpaceError(f"{what}: expected element symbols such as Co, Cr, Fe; got {value!r:.80}")
    items = value.replace(" ", ",").split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(x, str) for x in items):
        raise SpaceError(f"{what}: expected element symbols such as Co, Cr, Fe; got {value!r:.80}")
    symbols = [x.strip() for x in items if x.strip()]
    if not symbols:
        raise SpaceError(f"{what}: no element given; name at least one, e.g. Co,Cr,Fe,Ni")
    twice = sorted({x for x in symbols if symbols.count(x) > 1})
    if twice:
        raise SpaceError(f"{what}: {', '.join(twice)} given more than once; name each element once")
    return tuple(sorted(symbols))


def parse_fraction(value: object, what: str) -> Fraction:
    """A fraction from a number or text (``0.05``, ``"1/20"``), exactly.

    The text is checked before it is converted (at most :data:`MAX_NUMBER_CHARS` characters,
    exponents within ±:data:`MAX_EXPONENT`), so that no input costs more than microseconds.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SpaceError(f"{what}: expected a number such as 0.05 or 1/20, got {value!r:.80}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpaceError(f"{what}: expected a finite number, got {value!r}")
    text = str(value).strip()
    match = _NUMBER.fullmatch(text) if len(text) <= MAX_NUMBER_CHARS else None
    if match is None or abs(int(match["exp"] or 0)) > MAX_EXPONENT:
        raise SpaceError(
            f"{what}: expected a number such as 0.05 or 1/20 (at most {MAX_NUMBER_CHARS} "
            f"characters, exponent within ±{MAX_EXPONENT}), got {value!r:.80}"
        )
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise SpaceError(f"{what}: expected a number such as 0.05 or 1/20, got {value!r}") from None


def parse_bounds(items: Iterable[str]) -> dict[str, tuple[Fraction, Fraction]]:
    """``["Al:0-0.2", "Ti:0.05-0.1,Cu:0-0.1"]`` -> ``{el: (low, high)}`` fractions."""
    out: dict[str, tuple[Fraction, Fraction]] = {}
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            el, sep, rng = part.strip().partition(":")
            low, dash, high = rng.partition("-")
            if not sep or not dash or not el:
                raise SpaceError(
                    f"bounds {part!r}: expected ELEMENT:LOW-HIGH in atomic fractions, e.g. Al:0-0.2"
                )
            out[el] = (
                parse_fraction(low, f"lower bound of {el}"),
                parse_fraction(high, f"upper bound of {el}"),
            )
    return out


def parse_weights(value: str | Mapping[str, object] | Sequence[object]) -> tuple[float, float]:
    """``"0.7,0.3"``, ``"uts=0.7,elongation=0.3"`` or a mapping -> ``(w_uts, w_elong)``."""
    names = ("uts", "elongation")
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        value = dict(p.split("=", 1) for p in parts) if all("=" in p for p in parts) else parts
    if isinstance(value, Mapping):
        unknown = set(value) - set(names)
        if unknown:
            raise UserInputError(
                f"weights for {', '.join(sorted(map(str, unknown)))}: only uts and "
                "elongation can be weighted"
            )
        value = [value.get(n, 0.0) for n in names]
    if not isinstance(value, Sequence) or len(value) != 2:
        raise UserInputError(
            f"weights {value!r:.80}: give two numbers (UTS, elongation), e.g. 0.7,0.3"
        )
    try:
        w = tuple(float(x) for x in value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise UserInputError(f"weights {value!r:.80}: expected numbers, e.g. 0.7,0.3") from None
    if not all(x >= 0 for x in w):  # also refuses NaN
        raise UserInputError(f"weights {value!r:.80}: weights must be >= 0, e.g. 0.7,0.3")
    return w[0], w[1]


def parse_condition(
    test: object = None,
    temperature: object = None,
    processing: object = None,
    grain_size_um: object = None,
) -> Condition:
    """A :class:`Condition` from user values; ``None`` takes the default (tension, 25 °C,
    cast, grain size not stated). The temperature and grain size are read defensively (at
    most 40 characters, finite; °C and µm)."""
    default = Condition()
    if isinstance(temperature, str) and len(temperature) > MAX_NUMBER_CHARS:
        raise UserInputError(f"temperature {temperature[:MAX_NUMBER_CHARS]!r}...: too long")
    if isinstance(grain_size_um, str) and len(grain_size_um) > MAX_NUMBER_CHARS:
        raise UserInputError(f"grain size {grain_size_um[:MAX_NUMBER_CHARS]!r}...: too long")
    return Condition.of(
        default.test_type if test is None else test,
        default.temperature_c if temperature is None else temperature,
        default.processing if processing is None else processing,
        grain_size_um,
    )


def parse_families(value: Iterable[str]) -> tuple[bool, bool]:
    """``["equimolar", "non_equimolar"]`` (either or both) -> (equimolar, non_equimolar)."""
    if not isinstance(value, (str, list, tuple)):
        raise SpaceError(f"families {value!r:.80}: choose one or both of {', '.join(FAMILIES)}")
    chosen = list(value) if not isinstance(value, str) else [value]
    bad = [f for f in chosen if f not in FAMILIES]
    if bad or not chosen:
        raise SpaceError(f"families {chosen!r}: choose one or both of {', '.join(FAMILIES)}")
    return "equimolar" in chosen, "non_equimolar" in chosen


def build_space(
    elements: tuple[str, ...],
    *,
    min_elements: int | None = None,
    max_elements: int | None = None,
    step: object = None,
    min_fraction: object = None,
    max_fraction: object = None,
    bounds: Mapping[str, tuple[Fraction, Fraction]] | None = None,
    require: tuple[str, ...] = (),
    equimolar: bool = True,
    non_equimolar: bool = True,
) -> CandidateSpace:
    """A :class:`CandidateSpace` with :data:`DEFAULTS` for every option left ``None``.

    ``max_elements`` defaults to (and is capped at) the palette size.
    """
    lo = DEFAULTS["min_elements"] if min_elements is None else min_elements
    hi = len(elements) if max_elements is None else min(max_elements, len(elements))
    if min_elements is None:
        lo = min(lo, hi)
    elif lo > len(elements):
        hi = lo  # reported as an empty space (more elements asked for than the palette has)
    return CandidateSpace(
        elements,
        lo,
        hi,
        parse_fraction(DEFAULTS["step"] if step is None else step, "step"),
        dict(bounds or {}),
        parse_fraction(
            DEFAULTS["min_fraction"] if min_fraction is None else min_fraction, "min_fraction"
        ),
        parse_fraction(
            DEFAULTS["max_fraction"] if max_fraction is None else max_fraction, "max_fraction"
        ),
        tuple(sorted(require)),
        equimolar,
        non_equimolar,
    )


# --------------------------------------------------------------------- YAML files
#: Largest spec file read (bytes) and deepest nesting of its YAML collections.
MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_DEPTH = 32


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases, with a nesting limit, and refusing
    a key given twice in one mapping.

    Aliases let a few lines expand into gigabytes (an "alias bomb") and deep nesting
    exhausts the Python stack; a spec needs neither, so both are refused while the
    document is composed, before anything is built. PyYAML keeps the last of two equal keys
    silently (two ``space:`` sections: the second wins); here the second is an error.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {_short(key)} given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not accepted", event.start_mark
            )
        if self.depth >= MAX_SPEC_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_SPEC_DEPTH} levels", event.start_mark
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_spec(path: str | Path) -> ScreenSpec:
    """Read and validate a spec file; errors name the file and the offending key.

    Files over :data:`MAX_SPEC_BYTES`, YAML anchors and aliases, and nesting deeper than
    :data:`MAX_SPEC_DEPTH` are refused (see :class:`SpecLoader`).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpaceError(f"cannot read spec {str(path)!r}: {reason}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpaceError(
            f"spec {str(path)!r} is larger than {MAX_SPEC_BYTES:,} bytes: a spec is a few lines"
        )
    try:
        data = yaml.load(text, Loader=SpecLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpaceError(f"spec {str(path)!r} is not valid YAML{where}: {problem}") from None
    except (ValueError, IndexError, TypeError, OverflowError) as exc:
        # PyYAML's constructors fail so on e.g. an empty "!!float" or a 5,000-digit integer
        raise SpaceError(
            f"spec {str(path)!r} holds a value that cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    try:
        return spec_from_dict(data, default_name=path.stem)
    except UserInputError as exc:
        raise SpaceError(f"spec {str(path)!r}: {exc}") from None


def spec_from_dict(data: object, default_name: str = "screen") -> ScreenSpec:
    """Build a :class:`ScreenSpec` from the parsed YAML mapping."""
    top = _section(data, "")
    space = _section(top.get("space"), "space")
    ranking = _section(top.get("ranking", {}), "ranking")
    condition = _section(top.get("condition", {}), "condition")
    run = _section(top.get("run", {}), "run")
    if "elements" not in space:
        raise SpaceError("space.elements is missing: list the palette, e.g. [Co, Cr, Fe, Ni]")
    equimolar, non_equimolar = parse_families(space.get("families", FAMILIES))
    bounds = {}
    raw_bounds = space.get("bounds") or {}
    if not isinstance(raw_bounds, Mapping):
        raise SpaceError("space.bounds: expected a mapping such as {Al: [0, 0.2]}")
    for el, pair in raw_bounds.items():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpaceError(f"space.bounds.{el}: expected [low, high], e.g. [0, 0.2]")
        bounds[str(el)] = (
            parse_fraction(pair[0], f"space.bounds.{el} low"),
            parse_fraction(pair[1], f"space.bounds.{el} high"),
        )
    cand = build_space(
        parse_elements(space["elements"], "space.elements"),
        min_elements=_int(space, "min_elements", "space"),
        max_elements=_int(space, "max_elements", "space"),
        step=space.get("step"),
        min_fraction=space.get("min_fraction"),
        max_fraction=space.get("max_fraction"),
        bounds=bounds,
        require=parse_elements(space["require"], "space.require") if space.get("require") else (),
        equimolar=equimolar,
        non_equimolar=non_equimolar,
    )
    weights = ranking.get("weights", DEFAULTS["weights"])
    rank = Ranking(
        objective=str(ranking.get("objective", DEFAULTS["objective"])),
        risk=str(ranking.get("risk", DEFAULTS["risk"])),
        kappa=_float(ranking, "kappa", "ranking", DEFAULTS["kappa"]),
        weights=parse_weights(weights),
        top=ranking.get("top", DEFAULTS["top"]),
        condition=parse_condition(
            condition.get("test"),
            condition.get("temperature"),
            condition.get("processing"),
            condition.get("grain_size_um"),
        ),
    )
    name = top.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise SpaceError(f"name: expected a text, got {name!r}")
    return ScreenSpec(
        name=name,
        space=cand,
        ranking=rank,
        sample=_int(space, "sample", "space"),
        seed=_int(space, "seed", "space") or DEFAULTS["seed"],
        partition_size=_int(run, "partition_size", "run"),
        ingot_mass_g=_float(run, "ingot_mass_g", "run", DEFAULTS["ingot_mass_g"]),
        description=str(top.get("description", "")),
    )


def _section(value: object, name: str) -> dict[str, Any]:
    label = name or "the spec"
    if value is None and name == "space":
        raise SpaceError("the spec has no 'space' section: it needs at least space.elements")
    if not isinstance(value, Mapping):
        raise SpaceError(f"{label}: expected a mapping of keys, got {type(value).__name__}")
    unknown = [k for k in value if k not in _SECTIONS[name]]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise SpaceError(
            f"unknown key {_short(unknown[0])}{more} in {label}: accepted keys are "
            f"{', '.join(_SECTIONS[name])}"
        )
    return dict(value)


def _short(key: object, limit: int = 24) -> str:
    """A key of the file for a message: quoted, cut to ``limit`` characters (a spec that is
    some other file, say a secrets file, is not echoed)."""
    text = str(key)
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _int(section: Mapping[str, Any], key: str, name: str) -> int | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpaceError(f"{name}.{key}: expected a whole number, got {value!r}")
    return value


def _float(section: Mapping[str, Any], key: str, name: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpaceError(f"{name}.{key}: expected a number, got {value!r}")
    return float(value)
