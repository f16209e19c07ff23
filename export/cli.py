"""``hea-export``: turn the condition-aware results of a training run into a model bundle.

    hea-export --conditions RUN --out BUNDLE [--member all|transformer]
               [--variants fp32 fp16 int8] [--overwrite]

The shipped bundles are rebuilt with (see docs/inference.md)::

    hea-export --conditions runs/small --out hea_screen/models/default --overwrite
    hea-export --conditions runs/small --member transformer \
        --out hea_screen/models/transformer --overwrite

The paper-set BERT (``--run RUN --experiment EXP``, bundle format 1) is no longer exported: its
training report stays in the run directory (docs/results.md).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from hea_screen.errors import UserInputError
from hea_screen.extras import missing_train_extra
from hea_screen.inference.bundle import TRANSFORMER, VARIANTS

#: Flags of the removed paper-set export, refused with a message naming ``--conditions``.
REMOVED_FLAGS: tuple[str, ...] = ("--run", "--experiment", "--targets")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hea-export", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--conditions",
        type=Path,
        metavar="RUN",
        help="write the condition-aware bundle of RUN/conditions (written by hea-train conditions)",
    )
    p.add_argument("--out", type=Path, help="bundle directory to write")
    p.add_argument(
        "--member",
        choices=("all", TRANSFORMER),
        default="all",
        help="all: each task's validated pick (default); transformer: the multi-task "
        "transformer alone, for every task it covers",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=VARIANTS,
        metavar="VARIANT",
        help=f"transformer precision variants to write, among {', '.join(VARIANTS)} (default: "
        "all; fp32 always); each must pass its parity bound against PyTorch",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("-v", "--verbose", action="store_true", help="log each fold's parity")
    for flag in REMOVED_FLAGS:
        p.add_argument(flag, nargs="*", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hea-export``; without the ``train`` extra, says what to install (exit 2)."""
    message = missing_train_extra("hea-export", ("export.condition_bundle",))
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        return 2
    return _run(argv)


def _run(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("export").setLevel(logging.INFO)
    used = [flag for flag in REMOVED_FLAGS if getattr(args, flag[2:]) is not None]
    if used:
        return _error(
            f"{', '.join(used)}: the paper-set bundle (format 1) is no longer exported (its "
            "training report stays); export the condition-aware bundle with "
            "--conditions RUN --out BUNDLE"
        )
    if args.conditions is None or args.out is None:
        return _error("give --conditions RUN and --out BUNDLE")
    command = "hea-export " + shlex.join(sys.argv[1:] if argv is None else argv)
    from export.condition_bundle import write_condition_bundle
    from export.transformer_member import VariantOptions

    try:
        manifest = write_condition_bundle(
            args.conditions,
            args.out,
            overwrite=args.overwrite,
            command=command,
            member=args.member,
            variants=VariantOptions(tuple(dict.fromkeys(["fp32", *args.variants]))),
        )
    except UserInputError as exc:
        return _error(str(exc))
    print(f"wrote {args.out}")
    for name, info in manifest["tasks"].items():
        print(f"  {name}: {info['model_label']}, {len(info['folds'])} folds")
    for variant, info in manifest.get(TRANSFORMER, {}).get("variants", {}).items():
        print(f"  transformer {variant:5s} {'written' if info['written'] else 'not written'}: "
              f"{info['reason']}")
    return 0


def _error(message: str) -> int:
    print(f"hea-export: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
