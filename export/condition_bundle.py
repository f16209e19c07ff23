"""Write a condition-aware bundle (format 2) from a run's ``conditions/`` results.

``hea-export --conditions RUN --out BUNDLE`` takes, per task, the model that validation
selected (``RUN/conditions/selection.json``; the test folds never take part), copies its fold
models of the first seed (``RUN/conditions/models/<model>/<task>/fold_<k>.onnx``), checks
that they reproduce that seed's out-of-fold predictions on their held-out rows, and writes
``manifest.json`` (conformal factors and measured coverage, the conditions each task's data
cover, the CV table of every model), ``README.md``, ``training_set.json`` and
``oof_predictions.csv``. The bundle is built beside ``out`` and renamed into place. Its
manifest records the commit of the code that wrote it, and refuses a dirty tree unless
``allow_dirty`` (tests) is set, so a shipped bundle always names a committed tree.

Where a task ships the multi-task transformer, its fold networks and their precision
variants (fp32, fp16, int8, each checked against PyTorch) come from
:mod:`export.transformer_member`. ``member="transformer"`` (``hea-export --member
transformer``) writes a bundle of the transformer alone: every task it covers ships with it,
whatever validation picked (``selection`` in the manifest still says what it picked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import hea_screen
from export.transformer_member import VariantOptions, transformer_task, write_transformer
from hea_screen.conditions import PHASE, PHASES, TASKS_BY_NAME, temperature_band
from hea_screen.datasets.sources import MPEA_FILE, sha256_file
from hea_screen.datasets.sources import data_dir as hea_screen_data_dir
from hea_screen.errors import UserInputError
from hea_screen.inference.bundle import (
    FORMAT_VERSION,
    OOF_FILE,
    TABULAR,
    task_relpath,
)
from hea_screen.inference.bundle import TRANSFORMER as TRANSFORMER_KIND
from hea_screen.inference.bundle_files import MANIFEST_FILE, README_FILE, TRAINING_SET_FILE
from hea_screen.inference.design import DESIGN_COLUMNS
from pretrain.condition_data import OUT_DIR, TRANSFORMER
from pretrain.condition_folds import onnx_predict
from pretrain.tabular import LABELS

#: Largest difference allowed between a shipped fold model and the run's recorded prediction.
REPRODUCE_RTOL = 1e-5

#: What a bundle holds: each task's validated pick, or the transformer alone.
MEMBERS: tuple[str, ...] = ("all", TRANSFORMER)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserInputError(f"{path} is missing: run `hea-train conditions` first")
    return json.loads(path.read_text(encoding="utf-8"))


def git_state(root: Path) -> tuple[str | None, bool]:
    """(HEAD commit, whether tracked files differ from it) of the checkout at ``root``."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, False


def _coverage(frame: pl.DataFrame, task: str, reads_grain_size: bool) -> dict[str, Any]:
    """Conditions the task's training rows cover; the grain-size range only where its model
    reads one (tabular members) and the rows state some."""
    rows = frame.filter(pl.col("task") == task)
    sizes = rows["grain_size_um"].drop_nulls()
    return {
        "temperature_c": [float(rows["temperature_c"].min()), float(rows["temperature_c"].max())],
        "processing": sorted(rows["processing"].unique().to_list()),
        "grain_size_um": (
            [float(sizes.min()), float(sizes.max())] if reads_grain_size and len(sizes) else None
        ),
    }


def _cv_table(summary: pl.DataFrame, task: str) -> dict[str, Any]:
    """Every model's metrics on the grouped folds at 25 °C and on cluster folds."""
    out: dict[str, Any] = {}
    for row in summary.filter(pl.col("task") == task).iter_rows(named=True):
        key = f"{row['protocol']}_{row['slice']}"
        metrics = {
            k: v
            for k, v in row.items()
            if k not in ("protocol", "model", "task", "slice")
            and v is not None
            and not (isinstance(v, float) and not np.isfinite(v))
        }
        out.setdefault(row["model"], {})[key] = metrics
    return out


def _check_reproduces(
    blob: bytes, x: np.ndarray, recorded: np.ndarray, task: str, fold: int
) -> None:
    classify = task == PHASE.name
    out = onnx_predict(blob, x, classify)
    got = np.argmax(out, axis=1).astype(float) if classify else out
    if not np.allclose(got, recorded, rtol=REPRODUCE_RTOL, atol=1e-6):
        worst = float(np.max(np.abs(got - recorded)))
        raise UserInputError(
            f"{task} fold {fold}: the ONNX model does not reproduce the run's out-of-fold "
            f"predictions (max difference {worst:.3g}); rerun `hea-train conditions`"
        )


def write_condition_bundle(
    run: Path,
    out: Path,
    *,
    overwrite: bool = False,
    allow_dirty: bool = False,
    command: str = "",
    member: str = "all",
    variants: VariantOptions | None = None,
) -> dict[str, Any]:
    """Build the bundle (see module docstring); returns its manifest. ``member``: ``"all"``
    (each task's validated pick) or ``"transformer"`` (the transformer for every task it
    covers); ``variants``: the transformer's precision variants and parity bounds."""
    if member not in MEMBERS:
        raise UserInputError(f"member {member!r}: choose one of {', '.join(MEMBERS)}")
    variants = variants or VariantOptions()
    cond = run / OUT_DIR
    selection = _read_json(cond / "selection.json")
    calibration = _read_json(cond / "calibration.json")
    data_info = _read_json(cond / "data.json")
    shipped = {name: choice["model"] for name, choice in selection.items()}
    if member == TRANSFORMER:
        covered = calibration.get(TRANSFORMER, {})
        shipped = {n: TRANSFORMER for n in selection if n == PHASE.name or n in covered}
        if not covered:
            raise UserInputError(
                f"{cond} has no transformer member: train it (conditions: transformer: true) "
                "before exporting --member transformer"
            )
    if out.exists() and not overwrite:
        raise UserInputError(f"{out} exists: pass --overwrite to replace it")
    repo = Path(__file__).resolve().parents[1]
    commit, dirty = git_state(repo)
    if dirty and not allow_dirty:
        raise UserInputError(
            f"the checkout at {repo} has uncommitted changes: commit them first, so the "
            "manifest names the tree that built the bundle"
        )
    from pretrain.condition_data import load_data
    from pretrain.condition_eval import summarize
    from pretrain.config import ConditionsConfig

    config = ConditionsConfig(**data_info["config"])
    data_dir = hea_screen_data_dir()
    if sha256_file(data_dir / MPEA_FILE) != data_info["sha256"]:
        raise UserInputError(f"{data_dir / MPEA_FILE} differs from the file the run used")
    data = load_data(data_dir, config, seed=int(data_info.get("seed", 42)))
    first = config.seeds[0]
    records = pl.read_parquet(cond / f"seed_{first}.parquet")
    summary = summarize(pl.read_csv(cond / "metrics.csv", infer_schema_length=None))
    oof = pl.read_csv(cond / "oof_predictions.csv")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tasks: dict[str, Any] = {}
    training: dict[str, Any] = {}
    try:
        shared = None
        if TRANSFORMER in shipped.values():
            recorded = pl.read_parquet(cond / f"transformer_seed_{first}.parquet")
            shared = write_transformer(run, cond / TRANSFORMER / f"seed_{first}", staging,
                                       config.folds, data, recorded, variants)
        for name, model in shipped.items():
            choice = selection[name]
            if model == TRANSFORMER:
                assert shared is not None
                folds = transformer_task(staging, shared, data, recorded, name)
                tasks[name] = _task_info(name, model, choice, TRANSFORMER_KIND, folds, data,
                                         summary, calibration, training,
                                         reads_grain_size=shared["encoder"].use_grain_size)
                continue
            mine = records.filter(pl.col("model") == model, pl.col("task") == name)
            present = sorted(mine["fold"].unique().to_list())
            if present != list(range(config.folds)):
                raise UserInputError(
                    f"{name}: the run has fold models for folds {present} of {config.folds} "
                    "(a fold had too few rows of this task); use more data or fewer folds"
                )
            folds = []
            for fold in present:
                src = cond / "models" / model / name / f"fold_{fold}.onnx"
                blob = src.read_bytes()
                part = mine.filter(pl.col("fold") == fold)
                _check_reproduces(
                    blob, data.x[part["row"].to_numpy()], part["predicted"].to_numpy(), name, fold
                )
                rel = task_relpath(name, fold)
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).write_bytes(blob)
                folds.append({"fold": fold, "file": rel})
            tasks[name] = _task_info(name, model, choice, TABULAR, folds, data, summary,
                                     calibration, training, reads_grain_size=True)
            if name in calibration.get(model, {}):  # regression: the settings update refits with
                tasks[name]["refit"] = {
                    "n_estimators": config.n_estimators,
                    "monotonic": TASKS_BY_NAME[name].finer_grains_stronger,
                    "params": [
                        json.loads(mine.filter(pl.col("fold") == k)["params"][0]) for k in present
                    ],
                }
        (staging / TRAINING_SET_FILE).write_text(json.dumps({"targets": training}))
        if member == TRANSFORMER:
            oof = _transformer_oof(cond, config, data, shipped, calibration)
        oof.drop("canonical").write_csv(staging / OOF_FILE)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": "condition-aware",
            "member": member,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code_version": {
                "hea_screen": hea_screen.__version__,
                "git_commit": commit,
                "dirty": dirty,
            },
            "command": command,
            "training_data": {
                "file": MPEA_FILE,
                "sha256": data_info["sha256"],
                "rows": data_info["rows"],
                "alloys": data_info["alloys"],
            },
            "protocol": {
                "folds": config.folds,
                "seeds": config.seeds,
                "grouped_by": "composition (alloys within L1 0.02 share a group)",
                "loco_clusters": config.loco_clusters,
                "shipped_seed": first,
            },
            "interval": config.coverage,
            "design_columns": list(DESIGN_COLUMNS),
            "phases": list(PHASES),
            "tasks": tasks,
        }
        if shared is not None:
            manifest["transformer"] = shared["info"]
        files = {}
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                rel = path.relative_to(staging).as_posix()
                files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        manifest["files"] = files
        (staging / README_FILE).write_text(readme(manifest), encoding="utf-8")
        manifest["files"][README_FILE] = {
            "sha256": sha256_file(staging / README_FILE),
            "bytes": (staging / README_FILE).stat().st_size,
        }
        manifest = finite_json(manifest)
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=1, allow_nan=False), encoding="utf-8"
        )
        install(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def install(staging: Path, out: Path) -> None:
    """Rename the finished bundle into place (replacing an old one only after it is complete)."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old)


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float as ``None``: readers refuse NaN and Infinity
    (not JSON), so an unbounded parity bound (``inf``) or an undefined measure (``nan``) is
    written as ``null``."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _transformer_oof(
    cond: Path, config: Any, data: Any, shipped: dict[str, str], calibration: Any
) -> pl.DataFrame:
    """The transformer's out-of-fold predictions, every partition it ran on, in the run's OOF
    layout."""
    from pretrain.condition_calibration import neighbourhood
    from pretrain.condition_eval import oof_table, with_spread

    ran = config.seeds[: config.transformer_partitions]
    seeds_frame = pl.concat([pl.read_parquet(cond / f"transformer_seed_{s}.parquet") for s in ran])
    spread = with_spread(seeds_frame, data.frame, config.folds)
    return oof_table(spread, data.frame, {n: {"model": m} for n, m in shipped.items()},
                     calibration, neighbourhood(data.frame, data.fractions).condition_distance)


def _task_info(
    name: str,
    model: str,
    choice: dict[str, Any],
    kind: str,
    folds: list[dict[str, Any]],
    data: Any,
    summary: pl.DataFrame,
    calibration: dict[str, Any],
    training: dict[str, Any],
    reads_grain_size: bool,
) -> dict[str, Any]:
    """A task's manifest entry (and, for regression tasks, its training rows);
    ``reads_grain_size``: whether its model reads the grain size (its coverage then gives
    the stated sizes' range)."""
    task = TASKS_BY_NAME[name]
    info: dict[str, Any] = {
        "label": task.label,
        "unit": task.unit,
        "property": task.property,
        "test_type": task.test_type.value if task.test_type else None,
        "model": model,
        "model_label": LABELS.get(model, model),
        "kind": kind,
        "folds": folds,
        "conditions": _coverage(data.frame, name, reads_grain_size),
        "selection": choice,
        "cv": _cv_table(summary, name),
    }
    if task is not PHASE:
        info["calibration"] = calibration[model][name]
        rows = data.frame.filter(pl.col("task") == name).with_columns(
            pl.format(
                "{}|{}",
                "processing",
                pl.col("temperature_c").map_elements(temperature_band, return_dtype=pl.Utf8),
            ).alias("key")
        )
        grouped = rows.group_by("canonical", maintain_order=True).agg(
            pl.col("value").mean(), pl.len().alias("n")
        )
        at = rows.group_by("canonical", "key", maintain_order=True).agg(pl.col("value").mean())
        measured_at: dict[str, dict[str, float]] = {}
        for canonical, key, value in at.iter_rows():
            measured_at.setdefault(canonical, {})[key] = value
        training[name] = {
            "compositions": grouped["canonical"].to_list(),
            "values": grouped["value"].to_list(),
            "n_measurements": grouped["n"].to_list(),
            "measured_at": [measured_at[c] for c in grouped["canonical"]],
        }
    return info


def _num(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def readme(manifest: dict[str, Any]) -> str:
    """The bundle's README: the shipped model per task and how every model scored."""
    code = manifest["code_version"]
    lines = [
        "# hea-screen condition-aware model bundle",
        "",
        f"One model per task, trained on the MPEA database ({manifest['training_data']['rows']} "
        f"measurements of {manifest['training_data']['alloys']} alloys, SHA-256 "
        f"`{manifest['training_data']['sha256'][:16]}…`), built {manifest['created']} from "
        f"commit `{(code['git_commit'] or 'unknown')[:12]}`.",
        "",
        f"Protocol: {manifest['protocol']['folds']} folds grouped by canonical composition, "
        f"seeds {manifest['protocol']['seeds']}; the model of each task was chosen on the "
        "validation part of the training folds, never on a test fold. Metrics below are on "
        "the held-out alloys at 25 °C, mean over seeds.",
        "",
        *(
            ["Every task below ships the multi-task transformer (`hea-export --member "
             "transformer`), whatever validation picked (`selection` in manifest.json).", ""]
            if manifest.get("member") == TRANSFORMER
            else []
        ),
        "| task | shipped model | R² | MAE | Spearman ρ | top-decile recall | 90 % interval "
        "coverage | best other model (R²) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, info in manifest["tasks"].items():
        cv = info["cv"]
        mine = cv.get(info["model"], {}).get("grouped_25C", {})
        if name == PHASE.name:
            lines.append(
                f"| `{name}` | {info['model_label']} | accuracy "
                f"{_num(mine.get('accuracy'))} | | | | | |"
            )
            continue
        others = [
            (m, v.get("grouped_25C", {}).get("r2"))
            for m, v in cv.items()
            if m != info["model"] and v.get("grouped_25C", {}).get("r2") is not None
        ]
        best = max(others, key=lambda o: o[1], default=(None, None))
        lines.append(
            f"| `{name}` ({info['unit']}) | {info['model_label']} | {_num(mine.get('r2'))} | "
            f"{_num(mine.get('mae'), 1)} | {_num(mine.get('spearman'))} | "
            f"{_num(mine.get('top_decile_recall'))} | "
            f"{_num(info['calibration']['coverage'])} | {best[0]} ({_num(best[1])}) |"
        )
    lines += [
        "",
        "Each task's training data cover a range of test temperatures and processing routes "
        "(`conditions` in manifest.json); hea-screen refuses to rank on a task outside them.",
        "`oof_predictions.csv` holds every out-of-fold prediction of the shipped models.",
        "",
        *_variant_lines(manifest.get("transformer", {}).get("variants", {})),
        "Rebuild: " + (manifest["command"] or "hea-export --conditions RUN --out BUNDLE"),
        "",
    ]
    return "\n".join(lines)


def _variant_lines(variants: dict[str, Any]) -> list[str]:
    """The transformer's precision variants: written or not, worst fold parity, why."""
    if not variants:
        return []
    lines = ["## Transformer precision variants (parity against PyTorch)", "",
             "| variant | written | worst fold | note |", "|---|---|---|---|"]
    for variant, info in variants.items():
        results = info.get("parity", [])
        if variant == "int8":
            worst = (
                f"Spearman {_num(min((r['spearman'] or 0.0 for r in results), default=None), 4)}"
                f", R² loss {_num(max((r['r2_loss'] or 0.0 for r in results), default=None), 4)}"
            )
        else:
            worst = f"max abs {max((r['max_abs_error'] for r in results), default=0.0):.2e}"
        lines.append(
            f"| {variant} | {'yes' if info['written'] else 'no'} | {worst} | {info['reason']} |"
        )
    return [*lines, ""]
