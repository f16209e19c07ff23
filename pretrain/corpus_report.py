"""How the generated corpus compares with the paper's 6K corpus: element frequencies and
alloys per number of elements, as a Markdown table and a bar chart.

The frequency of an element is the share of alloys that contain it (in %). The paper's
file (``6K.csv``) is parsed with the same :func:`hea_screen.parse` as the corpus; its
equimolar alloys are those whose canonical fractions are all equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from hea_screen.compositions.table import CompositionTable
from hea_screen.output import atomic_write
from pretrain.atomic import write_text_atomic
from pretrain.corpus import ELEMENT_WEIGHTS, EXCLUDED_ELEMENTS, CorpusResult

FIGURE = "figures/corpus_elements.png"
REPORT = "corpus_report.md"
SUMMARY = "corpus_summary.json"


def element_frequencies(table: CompositionTable) -> dict[str, float]:
    """Share of rows (in %) that contain each element of the table's palette."""
    present = (table.micro > 0).mean(axis=0) * 100 if len(table) else np.zeros(0)
    return dict(zip(table.elements, present.tolist()))


def strata_counts(table: CompositionTable) -> pl.DataFrame:
    """Rows per (number of elements, equimolar) of a table."""
    micro = table.micro
    k = (micro > 0).sum(axis=1)
    top = micro.max(axis=1)
    low = np.where(micro > 0, micro, np.iinfo(micro.dtype).max).min(axis=1)
    # canonical fractions of an equimolar alloy differ by at most one millionth (rounding)
    equimolar = (top - low) <= 1
    return (
        pl.DataFrame({"n_elements": k, "equimolar": equimolar})
        .group_by("n_elements", "equimolar")
        .len("rows")
        .sort("n_elements", "equimolar", descending=True)
    )


def frequency_table(corpus: CompositionTable, reference: CompositionTable) -> pl.DataFrame:
    """Element, weight, corpus %, reference %: every element of either or of the weights."""
    ours, theirs = element_frequencies(corpus), element_frequencies(reference)
    elements = sorted(set(ours) | set(theirs) | set(ELEMENT_WEIGHTS),
                      key=lambda el: -theirs.get(el, 0.0))  # fmt: skip
    return pl.DataFrame(
        {
            "element": elements,
            "weight": [ELEMENT_WEIGHTS.get(el, 0.0) for el in elements],
            "corpus_pct": [ours.get(el, 0.0) for el in elements],
            "reference_pct": [theirs.get(el, 0.0) for el in elements],
        }
    )


def plot_frequencies(table: pl.DataFrame, path: Path, reference_name: str) -> Path:
    """Grouped bar chart of element frequencies, corpus vs reference."""
    fig = Figure(figsize=(12, 4.5))
    ax = fig.add_subplot()
    x = np.arange(table.height)
    ax.bar(x - 0.2, table["corpus_pct"], width=0.4, label="generated corpus")
    ax.bar(x + 0.2, table["reference_pct"], width=0.4, label=reference_name)
    ax.set_xticks(x, table["element"].to_list(), fontsize=8)
    ax.set_ylabel("alloys containing the element (%)")
    ax.set_title("Element frequencies of the pre-training corpus")
    ax.legend()
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def write_corpus_report(
    run_dir: str | Path, result: CorpusResult, reference_path: str | Path
) -> Path:
    """Write ``corpus_report.md``, ``corpus_summary.json`` and the bar chart into a run."""
    run_dir, reference_path = Path(run_dir), Path(reference_path)
    corpus = CompositionTable.from_compositions(result.frame["composition"].to_list())
    reference_texts = pl.read_csv(reference_path, columns=["composition"])["composition"]
    reference = CompositionTable.from_compositions(reference_texts.to_list())
    freqs = frequency_table(corpus, reference)
    plot_frequencies(freqs, run_dir / FIGURE, reference_path.name)
    summary = result.summary()
    write_text_atomic(run_dir / SUMMARY, json.dumps(summary, indent=1))

    ref_counts = {
        (r["n_elements"], r["equimolar"]): r["rows"] for r in strata_counts(reference).to_dicts()
    }
    lines = [
        "# Pre-training corpus",
        "",
        f"{result.frame.height} unique alloys in {result.rounds} generation round(s), "
        f"compared with `{reference_path.name}` ({len(reference)} alloys).",
        "",
        "Left out of the element list: "
        + "; ".join(f"**{el}** ({why})" for el, why in EXCLUDED_ELEMENTS.items())
        + ".",
        "",
        "## Alloys per number of elements",
        "",
        "| elements | kind | quota | generated | reference | note |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for s in summary["strata"]:
        kind = "equimolar" if s["equimolar"] else "non-equimolar"
        note = "distinct alloys exhausted; rest moved to non-equimolar" if s["exhausted"] else ""
        ref = ref_counts.get((s["n_elements"], s["equimolar"]), 0)
        lines.append(
            f"| {s['n_elements']} | {kind} | {s['quota']} | {s['rows']} | {ref} | {note} |"
        )
    lines += [
        "",
        "## Element frequencies (% of alloys containing the element)",
        "",
        f"![element frequencies]({FIGURE})",
        "",
        "| element | weight | corpus % | reference % | difference |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in freqs.to_dicts():
        diff = r["corpus_pct"] - r["reference_pct"]
        lines.append(
            f"| {r['element']} | {r['weight']:g} | {r['corpus_pct']:.2f} | "
            f"{r['reference_pct']:.2f} | {diff:+.2f} |"
        )
    return write_text_atomic(run_dir / REPORT, "\n".join(lines) + "\n")
