"""Loaders for the MPEA database and the paper's fine-tuning sets.

Files are read from a data directory (never copied into the repository): the
``HEA_SCREEN_DATA`` environment variable if set, else ``../shared/data`` relative to the
working directory or to the repository checkout.

- MPEA: Borg et al., "Expanded dataset of mechanical properties and observed phases of
  multi-principal element alloys", Sci. Data 7 (2020) 430 (Citrine Informatics, Apache-2.0).
- Paper sets (Kamnis & Delibasis): the target column, named ``hardness`` in the files, holds
  UTS in MPa or elongation in %; it is renamed to ``uts_mpa`` or ``elongation_pct``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import polars as pl

from hea_screen.compositions.composition import parse
from hea_screen.errors import UserInputError

#: Target name -> (unit, paper file without features, paper file with features).
TARGETS: dict[str, tuple[str, str, str]] = {
    "uts_mpa": ("MPa", "LLM_UTS_No_Features.csv", "LLM_UTS_Features.csv"),
    "elongation_pct": (
        "%",
        "LLM_Elongation_No_features_Rounded_Cleaned.csv",
        "LLM_Elongation_features_Rounded_Cleaned.csv",
    ),
}

MPEA_FILE = "MPEA_dataset.csv"

#: MPEA column -> short name.
MPEA_COLUMNS: dict[str, str] = {
    "IDENTIFIER: Reference ID": "reference_id",
    "FORMULA": "formula",
    "PROPERTY: Microstructure": "microstructure",
    "PROPERTY: Processing method": "processing",
    "PROPERTY: BCC/FCC/other": "phase",
    "PROPERTY: grain size ($\\mu$m)": "grain_size_um",
    "PROPERTY: Exp. Density (g/cm$^3$)": "density_exp_g_cm3",
    "PROPERTY: Calculated Density (g/cm$^3$)": "density_calc_g_cm3",
    "PROPERTY: HV": "hardness_hv",
    "PROPERTY: Type of test": "test_type",
    "PROPERTY: Test temperature ($^\\circ$C)": "test_temperature_c",
    "PROPERTY: YS (MPa)": "ys_mpa",
    "PROPERTY: UTS (MPa)": "uts_mpa",
    "PROPERTY: Elongation (%)": "elongation_pct",
    "PROPERTY: Elongation plastic (%)": "elongation_plastic_pct",
    "PROPERTY: Exp. Young modulus (GPa)": "youngs_modulus_exp_gpa",
    "PROPERTY: Calculated Young modulus (GPa)": "youngs_modulus_calc_gpa",
    "PROPERTY: O content (wppm)": "o_wppm",
    "PROPERTY: N content (wppm)": "n_wppm",
    "PROPERTY: C content (wppm)": "c_wppm",
    "REFERENCE: doi": "doi",
    "REFERENCE: year": "year",
    "REFERENCE: title": "title",
}

MPEA_PROPERTIES = ("ys_mpa", "uts_mpa", "elongation_pct", "elongation_plastic_pct", "hardness_hv")
Dedupe = Literal["none", "first", "last", "mean", "median"]


def data_dir() -> Path:
    """The shared data directory (see module docstring); raises if it cannot be found."""
    env = os.environ.get("HEA_SCREEN_DATA")
    candidates = [Path(env)] if env else []
    candidates += [
        Path.cwd() / ".." / "shared" / "data",
        Path(__file__).resolve().parents[2] / ".." / "shared" / "data",
    ]
    for c in candidates:
        if (c / MPEA_FILE).exists():
            return c.resolve()
    raise UserInputError(
        f"data directory not found (looked in {', '.join(str(c) for c in candidates)}): "
        "set HEA_SCREEN_DATA to the folder holding MPEA_dataset.csv"
    )


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _target_check(target: str) -> None:
    if target not in TARGETS:
        raise UserInputError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")


def load_paper_dataset(
    target: str, with_features: bool = False, directory: Path | None = None
) -> pl.DataFrame:
    """One of the paper's fine-tuning sets.

    Columns: ``composition`` (text as in the file), ``canonical`` (canonical composition text),
    the target (``uts_mpa`` or ``elongation_pct``) and, with ``with_features``, the authors'
    14 feature columns prefixed ``paper_`` (for comparison only: they carry known errors).
    """
    _target_check(target)
    _, plain, featured = TARGETS[target]
    path = (directory or data_dir()) / (featured if with_features else plain)
    df = pl.read_csv(path).rename({"hardness": target})
    if with_features:
        df = df.rename({c: f"paper_{c}" for c in df.columns if c not in ("composition", target)})
    canonical = [str(parse(t)) for t in df["composition"]]
    return df.with_columns(
        pl.Series("canonical", canonical), pl.col(target).cast(pl.Float64)
    ).select("composition", "canonical", target, pl.exclude("composition", "canonical", target))


def paper_dataset_path(target: str, directory: Path | None = None) -> Path:
    """Path of the paper's composition+target file for ``target``."""
    _target_check(target)
    return (directory or data_dir()) / TARGETS[target][1]


def load_mpea(directory: Path | None = None) -> pl.DataFrame:
    """The raw MPEA database with short snake_case column names (see :data:`MPEA_COLUMNS`)."""
    path = (directory or data_dir()) / MPEA_FILE
    return pl.read_csv(path, infer_schema_length=None).rename(MPEA_COLUMNS)


def filter_mpea(
    df: pl.DataFrame,
    prop: str,
    processing: list[str] | None = None,
    test_type: list[str] | None = None,
    test_temperature_c: float | None = None,
    dedupe: Dedupe = "first",
) -> pl.DataFrame:
    """Rows of the MPEA frame with a value of ``prop``, filtered and de-duplicated.

    ``processing`` (e.g. ``["CAST"]``) and ``test_type`` (``["T", "C"]``) keep listed values;
    ``test_temperature_c`` keeps that test temperature. ``dedupe`` decides what happens to
    several rows of one composition (compared in canonical form): keep all (``none``),
    the first or last in file order, or the mean or median value. A ``canonical`` column is
    added.
    """
    if prop not in MPEA_PROPERTIES:
        raise UserInputError(
            f"unknown MPEA property {prop!r}: choose one of {', '.join(MPEA_PROPERTIES)}"
        )
    if dedupe not in ("none", "first", "last", "mean", "median"):
        raise UserInputError(
            f"unknown de-duplication policy {dedupe!r}: none, first, last, mean or median"
        )
    out = df.filter(pl.col(prop).is_not_null())
    if processing is not None:
        out = out.filter(pl.col("processing").is_in(processing))
    if test_type is not None:
        out = out.filter(pl.col("test_type").is_in(test_type))
    if test_temperature_c is not None:
        out = out.filter(pl.col("test_temperature_c") == test_temperature_c)
    out = out.with_columns(
        pl.Series("canonical", [str(parse(t)) for t in out["formula"]], dtype=pl.Utf8)
    )
    if dedupe in ("first", "last"):
        out = out.unique("canonical", keep=dedupe, maintain_order=True)
    elif dedupe in ("mean", "median"):
        agg = pl.col(prop).mean() if dedupe == "mean" else pl.col(prop).median()
        firsts = out.unique("canonical", keep="first", maintain_order=True).drop(prop)
        values = out.group_by("canonical", maintain_order=True).agg(agg)
        out = firsts.join(values, on="canonical", how="left", maintain_order="left")
    return out


def rebuild_paper_uts(mpea: pl.DataFrame | None = None) -> pl.DataFrame:
    """The paper's UTS set rebuilt from MPEA: CAST, 25 °C, tension or compression, one row per
    composition (first in file order).

    Columns ``composition``, ``canonical``, ``uts_mpa``, ``test_type``.
    """
    mpea = load_mpea() if mpea is None else mpea
    rows = filter_mpea(
        mpea, "uts_mpa", processing=["CAST"], test_type=["T", "C"], test_temperature_c=25.0
    )
    return rows.select(pl.col("formula").alias("composition"), "canonical", "uts_mpa", "test_type")


def compare_with_paper(
    rebuilt: pl.DataFrame, paper: pl.DataFrame, target: str = "uts_mpa"
) -> dict[str, int]:
    """Count rows of ``paper`` found in ``rebuilt`` (same canonical composition and value)."""
    key = ["canonical", target]
    matched = paper.select(key).join(rebuilt.select(key).unique(), on=key, how="semi")
    return {
        "paper_rows": paper.height,
        "rebuilt_rows": rebuilt.height,
        "matched_rows": matched.height,
        "rebuilt_not_in_paper": rebuilt.select(key)
        .join(paper.select(key), on=key, how="anti")
        .height,
    }
