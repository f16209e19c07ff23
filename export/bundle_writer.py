"""Write a model bundle from a training run directory (layout in docs/architecture.md).

For every target and fold of one experiment, :func:`write_bundle` loads the fine-tuned
PyTorch model, checks that it reproduces the run's own ``predictions.csv`` (so the
tokenizer, feature mode and scaler are read right), exports it with optimum, builds the
requested variants (:mod:`export.variants`), and measures each against PyTorch on the
fold's test rows (:mod:`export.parity`). A variant is written only if every fold of every
target meets its bound; the manifest records the parity of every variant and why any
was left out. The bundle is assembled in a temporary directory beside ``out`` and renamed
into place, so a reader never sees half a bundle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import hea_screen
from export.onnx_export import (
    ModelSize,
    check_graph,
    export_onnx,
    graph_opset,
    load_fold_model,
    model_size,
)
from export.parity import (
    CUDA,
    FoldParity,
    ParityBounds,
    compare,
    onnx_outputs,
    parity_provider,
    torch_outputs,
)
from export.variants import make_fp16, make_int8, optimize_fp32
from hea_screen.compositions.features import featurize
from hea_screen.compositions.table import CompositionTable
from hea_screen.datasets.sources import TARGETS, sha256_file
from hea_screen.errors import UserInputError
from hea_screen.inference.paper_bundle import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    README_FILE,
    TOKENIZER_DIR,
    TRAINING_SET_FILE,
    VARIANTS,
    load_bundle,
    onnx_relpath,
)
from hea_screen.inference.tokens import TokenEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    """What to write: which variants, under which parity bounds, and whether to replace ``out``."""

    variants: tuple[str, ...] = VARIANTS
    bounds: ParityBounds = field(default_factory=ParityBounds)
    opset: int | None = None
    overwrite: bool = False
    targets: tuple[str, ...] | None = None
    command: str = ""


def write_bundle(
    run_dir: str | Path, experiment: str, out: str | Path, options: ExportOptions | None = None
) -> dict[str, Any]:
    """Export ``experiment`` of ``run_dir`` into the bundle ``out``; return the manifest."""
    options = options or ExportOptions()
    run, out = Path(run_dir), Path(out)
    unknown = [v for v in options.variants if v not in VARIANTS]
    if unknown or not options.variants:
        raise UserInputError(
            f"unknown variant(s) {unknown or '(none given)'}: choose from {', '.join(VARIANTS)}"
        )
    targets = find_targets(run, experiment)
    if options.targets is not None:
        missing = [t for t in options.targets if t not in targets]
        if missing or not options.targets:
            raise UserInputError(
                f"target(s) {missing or '(none given)'} not in experiment {experiment!r}: "
                f"it has {', '.join(targets)}"
            )
        targets = {t: targets[t] for t in options.targets}
    if out.exists() and not options.overwrite:
        raise UserInputError(f"{out} already exists: choose another --out or pass --overwrite")
    use_features = experiment_uses_features(experiment)
    encoder = TokenEncoder.load(run / TOKENIZER_DIR, use_features=use_features)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        manifest = _build(run, experiment, targets, encoder, staging, options)
        _install(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    load_bundle(out)  # the bundle just written must verify
    return manifest


def find_targets(run: Path, experiment: str) -> dict[str, list[Path]]:
    """``{target: [fold dirs]}`` of ``experiment`` in ``run``; raises naming what exists."""
    finetune = run / "finetune"
    if not finetune.is_dir():
        raise UserInputError(f"{run} is not a training run directory ({finetune} is missing)")
    found: dict[str, list[Path]] = {}
    for target in TARGETS:
        folds = sorted(
            (finetune / target / experiment).glob("fold_*"), key=lambda p: int(p.name.split("_")[1])
        )
        if folds:
            found[target] = folds
    if not found:
        available = sorted({p.parent.name for p in finetune.glob("*/*/fold_*")})
        raise UserInputError(
            f"experiment {experiment!r} has no fold models in {finetune}; "
            f"available: {', '.join(available) or 'none'}"
        )
    return found


def experiment_uses_features(experiment: str) -> bool:
    """Whether an experiment reads features: yes for ``*-features-*``, no for ``*-composition-*``"""
    parts = experiment.split("-")
    if ("features" in parts) == ("composition" in parts):
        raise UserInputError(
            f"experiment {experiment!r} does not say its input mode: its name must contain "
            "'-features-' or '-composition-' (e.g. pretrained-features-all)"
        )
    return "features" in parts


def _build(
    run: Path,
    experiment: str,
    targets: dict[str, list[Path]],
    encoder: TokenEncoder,
    staging: Path,
    options: ExportOptions,
) -> dict[str, Any]:
    produced = ("fp32", *(v for v in ("fp16", "int8") if v in options.variants))
    parity: dict[str, dict[str, list[FoldParity]]] = {v: {t: [] for t in targets} for v in produced}
    target_info: dict[str, Any] = {}
    training_set: dict[str, Any] = {}
    sizes: set[ModelSize] = set()
    opsets: set[int] = set()
    fusions: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hea-export-") as work_dir:
        work = Path(work_dir)
        for target, fold_dirs in targets.items():
            dataset = _read_dataset(run, target)
            table = CompositionTable.from_compositions(dataset["composition"].to_list())
            features = featurize(table) if encoder.use_features else None
            y = dataset[target].to_numpy().astype(np.float64)
            folds = []
            for fold_dir in fold_dirs:
                fold = int(fold_dir.name.split("_")[1])
                scaler = _read_json(fold_dir / "scaler.json")
                test = np.asarray(_read_json(fold_dir / "split.json")["test"], dtype=np.int64)
                encoded = encoder.encode(
                    table.take(test), None if features is None else features[test]
                )
                model = load_fold_model(fold_dir / "model")
                size = model_size(model)
                if size.vocab_size != encoder.vocab_size:
                    raise UserInputError(
                        f"{fold_dir / 'model'} has vocabulary {size.vocab_size}, "
                        f"{run / TOKENIZER_DIR} has {encoder.vocab_size}"
                    )
                sizes.add(size)
                reference = torch_outputs(model, encoded)
                _check_run_predictions(
                    fold_dir, test, reference * scaler["std"] + scaler["mean"], scaler["std"]
                )
                raw = export_onnx(model, work / target / f"fold_{fold}.raw.onnx", options.opset)
                opsets.add(graph_opset(raw))
                paths = {v: work / onnx_relpath(target, fold, v) for v in produced}
                fusions["fp32"] = optimize_fp32(raw, paths["fp32"], size)
                if "int8" in paths:
                    fusions["int8"] = make_int8(paths["fp32"], paths["int8"])
                if "fp16" in paths:
                    fusions["fp16"] = make_fp16(raw, paths["fp16"], size)
                y_std = (y[test] - scaler["mean"]) / scaler["std"]
                for variant, path in paths.items():
                    check_graph(path)
                    provider = parity_provider(variant)
                    candidate = onnx_outputs(str(path), encoded, provider)
                    result = compare(
                        variant, fold, reference, candidate, y_std, provider, options.bounds
                    )
                    log.info("%s %s fold %d: %s", target, variant, fold, result.reason)
                    parity[variant][target].append(result)
                folds.append(
                    {
                        "fold": fold,
                        "scaler": {"mean": float(scaler["mean"]), "std": float(scaler["std"])},
                    }
                )
            target_info[target] = {
                "unit": TARGETS[target][0],
                "folds": folds,
                "training_data": _training_data(run, target),
                "cv_metrics": _cv_metrics(run, experiment, target),
            }
            training_set[target] = _training_rows(table, y)
        if len(sizes) != 1:
            raise UserInputError(
                f"fold models of {experiment!r} differ in size: {sorted(map(str, sizes))}"
            )
        variants = _decide(parity, options, fusions)
        for target, info in target_info.items():
            for entry in info["folds"]:
                entry["files"] = {}
                for variant in VARIANTS:
                    if variants.get(variant, {}).get("written"):
                        rel = onnx_relpath(target, entry["fold"], variant)
                        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(work / rel, staging / rel)
                        entry["files"][variant] = rel
    _copy_tokenizer(run / TOKENIZER_DIR, staging / TOKENIZER_DIR)
    (staging / TRAINING_SET_FILE).write_text(
        json.dumps({"targets": training_set}, indent=1), encoding="utf-8"
    )
    (size,) = sizes
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": {"hea_screen": hea_screen.__version__, "git_commit": _git_commit()},
        "run": {
            "path": str(run.resolve()),
            "experiment": experiment,
            "config_sha256": sha256_file(run / "config.yaml")
            if (run / "config.yaml").is_file()
            else None,
            "command": options.command,
        },
        "use_features": encoder.use_features,
        "tokenizer": {"dir": TOKENIZER_DIR, "vocab_size": encoder.vocab_size},
        "model": {**size.as_json(), "opset": max(opsets)},
        "targets": target_info,
        "variants": variants,
        "training_set": TRAINING_SET_FILE,
    }
    (staging / README_FILE).write_text(readme(manifest), encoding="utf-8")
    manifest["files"] = {
        p.relative_to(staging).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(staging.rglob("*"))
        if p.is_file()
    }
    manifest = _finite_json(manifest)
    (staging / MANIFEST_FILE).write_text(
        json.dumps(manifest, indent=1, allow_nan=False), encoding="utf-8"
    )
    return manifest


def _finite_json(value: Any) -> Any:
    """``value`` with every non-finite float as ``None``: readers refuse NaN and Infinity
    (not JSON), so an unbounded parity bound (``inf``) or an undefined measure (``nan``) is
    written as ``null``."""
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _decide(
    parity: dict[str, dict[str, list[FoldParity]]], options: ExportOptions, fusions: dict[str, Any]
) -> dict[str, Any]:
    """Per variant: written or not, why, the bounds and every fold's parity."""
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        if variant not in parity:
            out[variant] = {"written": False, "reason": "not requested at export"}
            continue
        failed = [
            f"{t} fold {r.fold}: {r.reason}"
            for t, rs in parity[variant].items()
            for r in rs
            if not r.passed
        ]
        if variant == "fp32" and failed:
            raise RuntimeError("fp32 ONNX export disagrees with PyTorch: " + "; ".join(failed))
        if failed:
            reason = "missed its parity bound: " + "; ".join(failed)
        elif variant not in options.variants:
            reason = "passed parity but not requested for this bundle (--variants)"
        else:
            reason = "passed parity on every fold"
        if variant == "fp16" and any(
            r.provider != CUDA for rs in parity[variant].values() for r in rs
        ):
            reason += (
                "; measured on the CPU provider, where ONNX Runtime runs fp16 nodes through "
                "casts to fp32 "
                "(fp16 arithmetic on CUDA not measured: no CUDA)"
            )
        out[variant] = {
            "written": not failed and variant in options.variants,
            "reason": reason,
            "runs_on": {
                "fp32": ["CPUExecutionProvider", "CUDAExecutionProvider"],
                "fp16": ["CUDAExecutionProvider"],
                "int8": ["CPUExecutionProvider"],
            }[variant],
            "fused_operators": fusions.get(variant, {}),
            "bounds": options.bounds.as_json(),
            "parity": {t: [r.as_json() for r in rs] for t, rs in parity[variant].items()},
        }
        if failed:
            log.warning("%s not written: %s", variant, reason)
    return out


def _read_dataset(run: Path, target: str) -> pl.DataFrame:
    path = run / "finetune" / target / "dataset.csv"
    if not path.is_file():
        raise UserInputError(f"{path} is missing: the run has no dataset for {target}")
    frame = pl.read_csv(path)
    if not {"composition", target} <= set(frame.columns):
        raise UserInputError(f"{path} needs columns composition and {target}, has {frame.columns}")
    return frame


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserInputError(f"{path} is missing from the run directory")
    return json.loads(path.read_text(encoding="utf-8"))


def _check_run_predictions(
    fold_dir: Path, test: np.ndarray, ours: np.ndarray, scale: float
) -> None:
    """The PyTorch model, fed by our tokenizer, must reproduce the run's test-fold predictions."""
    path = fold_dir / "predictions.csv"
    if not path.is_file():
        raise UserInputError(f"{path} is missing from the run directory")
    saved = pl.read_csv(path).sort("row")
    order = np.argsort(test)
    if not np.array_equal(saved["row"].to_numpy(), test[order]):
        raise UserInputError(f"{path} rows differ from the test rows of {fold_dir / 'split.json'}")
    gap = float(np.max(np.abs(saved["y_pred"].to_numpy() - ours[order])))
    if gap > 1e-3 * scale:
        raise UserInputError(
            f"{fold_dir / 'model'} does not reproduce {path} (max difference {gap:.4g}): "
            "the tokenizer, "
            "feature mode or scaler of the run is not what the export reads"
        )


def _training_data(run: Path, target: str) -> dict[str, Any]:
    info = _read_json(run / "finetune" / target / "dataset.json")
    return {**info, "dataset_csv_sha256": sha256_file(run / "finetune" / target / "dataset.csv")}


def _cv_metrics(run: Path, experiment: str, target: str) -> dict[str, Any]:
    """Honest-protocol CV metrics (standardized targets) of the experiment: per fold and summary."""
    path = run / "cv_results.csv"
    if not path.is_file():
        raise UserInputError(f"{path} is missing from the run directory")
    rows = (
        pl.read_csv(path)
        .filter(
            (pl.col("experiment") == experiment)
            & (pl.col("target") == target)
            & (pl.col("protocol") == "honest")
        )
        .sort("fold")
    )
    if rows.is_empty():
        raise UserInputError(f"{path} has no honest-protocol rows for {experiment} / {target}")
    metrics = ("mse", "mae", "r2")
    return {
        "protocol": "honest",
        "scale": "standardized targets",
        "folds": rows.select("fold", *metrics).to_dicts(),
        "mean": {m: float(rows[m].mean()) for m in metrics},
        "std": {m: float(rows[m].std()) if rows.height > 1 else 0.0 for m in metrics},
    }


def _training_rows(table: CompositionTable, y: np.ndarray) -> dict[str, Any]:
    """Unique canonical training compositions with the mean (and count) of their measured values."""
    frame = pl.DataFrame({"composition": table.canonical_texts(), "value": y})
    grouped = frame.group_by("composition", maintain_order=True).agg(
        pl.col("value").mean(), pl.len().alias("n")
    )
    return {
        "compositions": grouped["composition"].to_list(),
        "values": grouped["value"].to_list(),
        "n_measurements": grouped["n"].to_list(),
    }


def _copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for path in sorted(src.iterdir()):
        if path.is_file():
            shutil.copyfile(path, dst / path.name)


def _install(staging: Path, out: Path) -> None:
    """Rename the finished bundle into place (replacing an old one only after it is complete)."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old)


def _git_commit() -> str | None:
    """Commit of the checkout this code runs from, if it is a git checkout with commits."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def readme(manifest: dict[str, Any]) -> str:
    """The bundle's README: what it predicts, how well, which variants, how it was built."""
    model = manifest["model"]
    lines = [
        "# hea-screen model bundle",
        "",
        f"Experiment `{manifest['run']['experiment']}` "
        f"({'composition + feature' if manifest['use_features'] else 'composition-only'} tokens); "
        f"BERT hidden {model['hidden_size']}, {model['num_layers']} layers, "
        f"{model['num_heads']} heads, "
        f"{model['parameters']:,} parameters per fold model; created {manifest['created']} "
        f"by hea-screen {manifest['code_version']['hea_screen']}"
        + (
            f" (commit {manifest['code_version']['git_commit'][:12]})"
            if manifest["code_version"]["git_commit"]
            else ""
        )
        + ".",
        "",
        "## Cross-validation",
        "",
        "Honest protocol: model selection on a validation part of each training fold.",
        "",
        "| target | unit | folds | R² mean ± std | MSE mean | MAE mean | training data SHA-256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, info in manifest["targets"].items():
        cv = info["cv_metrics"]
        lines.append(
            f"| {name} | {info['unit']} | {len(info['folds'])} "
            f"| {cv['mean']['r2']:.3f} ± {cv['std']['r2']:.3f} "
            f"| {cv['mean']['mse']:.3f} | {cv['mean']['mae']:.3f} "
            f"| `{info['training_data']['sha256'][:16]}…` |"
        )
    lines += ["", "Metrics are on standardized targets, as in the paper.", "", "## Variants", ""]
    lines += ["| variant | written | worst fold parity | note |", "|---|---|---|---|"]
    for variant, info in manifest["variants"].items():
        results = [r for rs in info.get("parity", {}).values() for r in rs]
        if not results:
            worst = "—"
        elif variant == "int8":
            worst = (
                f"Spearman ≥ {min(r['spearman'] for r in results):.4f}, "
                f"R² loss ≤ {max(r['r2_loss'] for r in results):.4f}"
            )
        else:
            worst = f"max abs error {max(r['max_abs_error'] for r in results):.2e}"
        lines.append(
            f"| {variant} | {'yes' if info['written'] else 'no'} | {worst} | {info['reason']} |"
        )
    lines += [
        "",
        "## Rebuild",
        "",
        f"    {manifest['run']['command'] or 'hea-export --run RUN --experiment EXP --out BUNDLE'}",
        "",
    ]
    lines += ["Load with `hea_screen.load_model(path)`; see docs/inference.md.", ""]
    return "\n".join(lines)
