"""``hea-export``: turn one experiment of a training run into a model bundle.

    hea-export --conditions RUN --out BUNDLE            # condition-aware bundle (format 2)
    hea-export --run RUN --experiment pretrained-features-all --out BUNDLE \\
        [--variants fp32 int8 fp16] [--targets uts_mpa elongation_pct]   # paper reproduction

The shipped default bundle is rebuilt with (see docs/inference.md)::

    hea-export --conditions runs/small --out hea_screen/models/default --overwrite
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from hea_screen.datasets.sources import TARGETS
from hea_screen.errors import UserInputError
from hea_screen.extras import missing_train_extra
from hea_screen.inference.paper_bundle import VARIANTS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hea-export", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--conditions",
        type=Path,
        metavar="RUN",
        help="write the condition-aware bundle of RUN/conditions (the shipped kind)",
    )
    p.add_argument("--run", type=Path, help="training run directory (docs/architecture.md)")
    p.add_argument(
        "--experiment", help="paper-set experiment to export, e.g. pretrained-features-all"
    )
    p.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=VARIANTS,
        metavar="VARIANT",
        help=f"variants to write, among {', '.join(VARIANTS)} (default: all); "
        "each must pass its parity bound",
    )
    p.add_argument(
        "--targets",
        nargs="+",
        default=None,
        choices=TARGETS,
        metavar="TARGET",
        help=f"targets to export, among {', '.join(TARGETS)} "
        "(default: every target the experiment has)",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: optimum's choice)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("-v", "--verbose", action="store_true", help="log each fold's parity")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hea-export``; without the ``train`` extra, says what to install (exit 2)."""
    message = missing_train_extra("hea-export", ("export.bundle_writer",))
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        return 2
    return _run(argv)


def _run(argv: list[str] | None) -> int:
    from export.bundle_writer import ExportOptions, write_bundle

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("export").setLevel(logging.INFO)
    command = "hea-export " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.conditions is not None:
        return _conditions(args, command)
    if args.run is None or args.experiment is None:
        print(
            "hea-export: error: give --conditions RUN, or --run RUN --experiment EXP",
            file=sys.stderr,
        )
        return 2
    options = ExportOptions(
        variants=tuple(dict.fromkeys(args.variants)),
        opset=args.opset,
        overwrite=args.overwrite,
        targets=None if args.targets is None else tuple(dict.fromkeys(args.targets)),
        command=command,
    )
    try:
        manifest = write_bundle(args.run, args.experiment, args.out, options)
    except UserInputError as exc:
        print(f"hea-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    for variant, info in manifest["variants"].items():
        print(f"  {variant:5s} {'written' if info['written'] else 'not written'}: {info['reason']}")
    for name, info in manifest["targets"].items():
        cv = info["cv_metrics"]["mean"]
        print(f"  {name}: {len(info['folds'])} folds, honest CV R² {cv['r2']:.3f}")
    return 0


def _conditions(args: argparse.Namespace, command: str) -> int:
    from export.condition_bundle import write_condition_bundle

    try:
        manifest = write_condition_bundle(
            args.conditions, args.out, overwrite=args.overwrite, command=command
        )
    except UserInputError as exc:
        print(f"hea-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    for name, info in manifest["tasks"].items():
        print(f"  {name}: {info['model_label']}, {len(info['folds'])} folds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
