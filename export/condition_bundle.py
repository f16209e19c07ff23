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
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl

import hea_screen
from export.bundle_writer import _install
from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.conditions import PHASE, PHASES, TASKS_BY_NAME
from hea_screen.datasets.sources import MPEA_FILE, sha256_file
from hea_screen.datasets.sources import data_dir as hea_screen_data_dir
from hea_screen.errors import UserInputError
from hea_screen.inference.bundle import (
    FORMAT_VERSION,
    OOF_FILE,
    TABULAR,
    TRANSFORMER_OUTPUTS,
    task_relpath,
    transformer_relpath,
)
from hea_screen.inference.bundle import TRANSFORMER as TRANSFORMER_KIND
from hea_screen.inference.design import DESIGN_COLUMNS
from hea_screen.inference.paper_bundle import (
    MANIFEST_FILE,
    README_FILE,
    TOKENIZER_DIR,
    TRAINING_SET_FILE,
)
from pretrain.condition_data import OUT_DIR, TRANSFORMER
from pretrain.condition_folds import onnx_predict
from pretrain.tabular import LABELS

#: Largest difference allowed between a shipped fold model and the run's recorded prediction.
REPRODUCE_RTOL = 1e-5


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


def _coverage(frame: pl.DataFrame, task: str) -> dict[str, Any]:
    rows = frame.filter(pl.col("task") == task)
    return {
        "temperature_c": [float(rows["temperature_c"].min()), float(rows["temperature_c"].max())],
        "processing": sorted(rows["processing"].unique().to_list()),
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
) -> dict[str, Any]:
    """Build the bundle (see module docstring); returns its manifest."""
    cond = run / OUT_DIR
    selection = _read_json(cond / "selection.json")
    calibration = _read_json(cond / "calibration.json")
    data_info = _read_json(cond / "data.json")
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
        if any(c["model"] == TRANSFORMER for c in selection.values()):
            shared = _write_transformer(run, cond / TRANSFORMER / f"seed_{first}", staging,
                                        config.folds)
            recorded = pl.read_parquet(cond / f"transformer_seed_{first}.parquet")
        for name, choice in selection.items():
            model = choice["model"]
            if model == TRANSFORMER:
                assert shared is not None
                folds = _transformer_task(staging, shared, data, recorded, name)
                tasks[name] = _task_info(name, choice, TRANSFORMER_KIND, folds, data, summary,
                                         calibration, training)
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
            tasks[name] = _task_info(name, choice, TABULAR, folds, data, summary, calibration,
                                     training)
        (staging / TRAINING_SET_FILE).write_text(json.dumps({"targets": training}))
        oof.filter(pl.col("seed").is_in(config.seeds)).drop("canonical").write_csv(
            staging / OOF_FILE
        )
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": "condition-aware",
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
                "grouped_by": "canonical composition",
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
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _install(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _task_info(
    name: str,
    choice: dict[str, Any],
    kind: str,
    folds: list[dict[str, Any]],
    data: Any,
    summary: pl.DataFrame,
    calibration: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """A task's manifest entry (and, for regression tasks, its training rows)."""
    task = TASKS_BY_NAME[name]
    model = choice["model"]
    info: dict[str, Any] = {
        "label": task.label,
        "unit": task.unit,
        "property": task.property,
        "test_type": task.test_type.value if task.test_type else None,
        "model": model,
        "model_label": LABELS.get(model, model),
        "kind": kind,
        "folds": folds,
        "conditions": _coverage(data.frame, name),
        "selection": choice,
        "cv": _cv_table(summary, name),
    }
    if task is not PHASE:
        info["calibration"] = calibration[model][name]
        rows = data.frame.filter(pl.col("task") == name)
        grouped = rows.group_by("canonical", maintain_order=True).agg(
            pl.col("value").mean(), pl.len().alias("n")
        )
        training[name] = {
            "compositions": grouped["canonical"].to_list(),
            "values": grouped["value"].to_list(),
            "n_measurements": grouped["n"].to_list(),
        }
    return info


def _write_transformer(run: Path, src: Path, staging: Path, n_folds: int) -> dict[str, Any]:
    """Export the first seed's transformer fold networks and the tokenizer they read."""
    from export.onnx_export import export_multitask_fold
    from pretrain.multitask import OUTPUT_TASKS, SCALERS_FILE, load_encoder

    if tuple(OUTPUT_TASKS) != TRANSFORMER_OUTPUTS:
        raise UserInputError("the multi-task model's outputs differ from the bundle layout")
    encoder = load_encoder(run / "tokenizer")
    encoder.save(staging / TOKENIZER_DIR)
    scalers = []
    for fold in range(n_folds):
        fold_dir = src / f"fold_{fold}"
        if not (fold_dir / SCALERS_FILE).is_file():
            raise UserInputError(f"{fold_dir} holds no transformer fold: rerun the conditions step")
        path = staging / transformer_relpath(fold)
        path.parent.mkdir(parents=True, exist_ok=True)
        export_multitask_fold(fold_dir, path)
        scalers.append(json.loads((fold_dir / SCALERS_FILE).read_text()))
    info = {"vocab_size": encoder.vocab_size, "outputs": list(TRANSFORMER_OUTPUTS),
            "folds": n_folds}
    return {"encoder": encoder, "scalers": scalers, "info": info}


def _transformer_task(
    staging: Path, shared: dict[str, Any], data: Any, recorded: pl.DataFrame, name: str
) -> list[dict[str, Any]]:
    """Fold entries of a task shipped with the transformer, each checked to reproduce the
    run's out-of-fold predictions with ONNX Runtime."""
    encoder = shared["encoder"]
    mine = recorded.filter(pl.col("task") == name)
    folds = []
    for fold, scaler in enumerate(shared["scalers"]):
        part = mine.filter(pl.col("fold") == fold)
        rows = data.frame[part["row"].to_numpy()]
        table = CompositionTable.from_compositions(rows["canonical"].to_list())
        feed = encoder.encode(
            table, featurize(table),
            (rows["temperature_c"].to_numpy(), rows["processing"].to_list()),
        ).as_dict()
        rel = transformer_relpath(fold)
        session = ort.InferenceSession(str(staging / rel), providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], feed)[0]
        expected = part["predicted"].to_numpy()
        entry: dict[str, Any] = {"fold": fold, "file": rel}
        if name == PHASE.name:
            j = TRANSFORMER_OUTPUTS.index(f"{PHASE.name}_{PHASES[0]}")
            got = np.argmax(logits[:, j : j + len(PHASES)], axis=1)
            agree = float(np.mean(got == expected)) if len(got) else 1.0
            ok = agree >= 0.99
        else:
            mean, std = scaler[name]["mean"], scaler[name]["std"]
            got = logits[:, TRANSFORMER_OUTPUTS.index(name)] * std + mean
            ok = bool(np.allclose(got, expected, rtol=1e-3, atol=1e-3 * std))
            entry["scaler"] = {"mean": mean, "std": std}
        if not ok:
            raise UserInputError(
                f"{name} fold {fold}: the exported transformer does not reproduce the run's "
                "out-of-fold predictions"
            )
        folds.append(entry)
    return folds


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
        "Rebuild: " + (manifest["command"] or "hea-export --conditions RUN --out BUNDLE"),
        "",
    ]
    return "\n".join(lines)
