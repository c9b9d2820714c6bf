"""The study's figure: clean vs robust accuracy, one point per cell label, like the paper's.

Error bars are the sample std over seeds in each direction; each group (a capacity, say)
gets its own marker and colour, and the baseline of each group is drawn hollow so the
eye finds the reference point first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_MARKERS = "osD^vP*Xph"


def scatter(
    rows: list[dict[str, Any]], path: Path, *, title: str, compare_axis: str | None, baseline: str | None
) -> Path:
    """Write ``path`` (PNG) and return it; rows without a clean and robust mean are left out."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["clean_accuracy"] is None or row["robust_accuracy"] is None:
            continue
        name = ", ".join(f"{k} = {v}" for k, v in row["group"].items()) or "all"
        groups.setdefault(name, []).append(row)

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for index, (name, members) in enumerate(groups.items()):
        colour = f"C{index % 10}"
        marker = _MARKERS[index % len(_MARKERS)]
        labelled = next((r for r in members if r["axes"].get(compare_axis) != baseline), members[0])
        for row in members:
            clean, robust = row["clean_accuracy"], row["robust_accuracy"]
            is_base = compare_axis is not None and row["axes"].get(compare_axis) == baseline
            ax.errorbar(
                100 * clean["mean"],
                100 * robust["mean"],
                xerr=None if clean["std"] is None else 100 * clean["std"],
                yerr=None if robust["std"] is None else 100 * robust["std"],
                fmt=marker,
                color=colour,
                mfc="white" if is_base else colour,
                capsize=3,
                label=name if row is labelled else None,
            )
            text = row["axes"][compare_axis] if compare_axis else row["label"]
            ax.annotate(
                text,
                (100 * clean["mean"], 100 * robust["mean"]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("robust accuracy, worst case (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
