"""The bare ExtraTrees screener: the reference the main command is measured against.

What a screen cannot do without, written as plainly as possible: the same stratified sample
of the same space (``hea_screen.screening.space``), the same features and design matrix,
the shipped bundle's ExtraTrees fold-0 models of the two ranked tasks (tensile UTS and
elongation) on ONNX Runtime, in batches of 65,536, the weighted score and a numpy top 100.
No second stage, no phase, no nearest training data, no texts, no lab columns, no output.
It prints one line, ``candidates/s`` from its first import to its last row (as the main
command's process wall time), for ``benchmarks/screen_bench.py`` to divide by.

    python -m benchmarks.bare_screener --sample 1000000
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from hea_screen.compositions.features import featurize  # noqa: E402
from hea_screen.conditions import Condition  # noqa: E402
from hea_screen.inference.bundle import load_task_bundle  # noqa: E402
from hea_screen.inference.bundle_files import default_bundle_path  # noqa: E402
from hea_screen.inference.design import condition_matrix  # noqa: E402
from hea_screen.inference.runtime import session_options  # noqa: E402
from hea_screen.screening.model_ref import inspect_model  # noqa: E402
from hea_screen.screening.space import SampledSpace  # noqa: E402
from hea_screen.screening.spec import build_space, parse_elements  # noqa: E402

TASKS = ("uts_tension_mpa", "elongation_tension_pct")
TWELVE = "Al,Co,Cr,Cu,Fe,Mn,Mo,Nb,Ni,Ti,V,Zr"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=65_536)
    args = p.parse_args()
    bundle = load_task_bundle(default_bundle_path())
    reference = inspect_model(None).reference
    sessions = [
        ort.InferenceSession(
            bundle.read(bundle.task(t).files[0]),
            session_options(None),
            providers=["CPUExecutionProvider"],
        )
        for t in TASKS
    ]
    space = SampledSpace(build_space(parse_elements(TWELVE), max_elements=6), args.sample, seed=0)
    best_score, best_index = np.zeros(0), np.zeros(0, dtype=np.int64)
    for lo in range(0, space.size, args.batch):
        table = space.table(lo, min(lo + args.batch, space.size))
        x = condition_matrix(featurize(table), Condition())
        values = [s.run(None, {s.get_inputs()[0].name: x})[0].reshape(-1) for s in sessions]
        z = [(v - reference.mean[t]) / reference.std[t] for v, t in zip(values, TASKS)]
        scores = np.concatenate([best_score, 0.5 * z[0] + 0.5 * z[1]])
        index = np.concatenate([best_index, np.arange(lo, lo + len(table))])
        top = np.argpartition(-scores, min(100, len(scores) - 1))[:100]
        best_score, best_index = scores[top], index[top]
    rate = space.size / (time.perf_counter() - T0)
    print(f"bare ExtraTrees screener: {space.size:,} candidates, {rate:,.0f} candidates/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
