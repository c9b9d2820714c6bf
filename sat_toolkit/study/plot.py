"""The study's figures: clean vs robust accuracy per cell label, like the paper's, each
label's learning curves, and each row's seed-paired change against its baseline.

Scatter: error bars are the sample std over seeds in each direction; each group (a
capacity, say) gets its own marker and colour, and the baseline of each group is drawn
hollow so the eye finds the reference point first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sat_toolkit.study.aggregate import validation_attack_names

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
    labels: list[tuple[str, float, float, str]] = []
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
            labels.append((text, 100 * clean["mean"], 100 * robust["mean"], colour))
    for get, set_ in ((ax.get_xlim, ax.set_xlim), (ax.get_ylim, ax.set_ylim)):
        set_(*accuracy_limits(*get()))
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("robust accuracy, worst case (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    place_labels(ax, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def accuracy_limits(low: float, high: float) -> tuple[float, float]:
    """Matplotlib's limits for an accuracy axis (in %), kept within what an accuracy can be,
    plus a point for a marker at 0 or 100: cells all at 100% had an axis up to 105%."""
    return max(low, -1.0), min(high, 101.0)


def curves(learning: dict[str, dict[str, Any]], path: Path, *, title: str) -> Path:
    """Write ``path`` (PNG): clean and validation-attack (PGD-10 by default) accuracy by epoch,
    one line per label (see :func:`~sat_toolkit.study.aggregate.learning_curves`), and the
    final evaluation at the last epoch (its clean accuracy continues the clean line; its
    worst case is a cross, from stronger attacks than the line's)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (clean_ax, robust_ax) = plt.subplots(1, 2, figsize=(9.6, 4.2), dpi=120, sharex=True)
    for index, (label, curve) in enumerate(learning.items()):
        colour = f"C{index % 10}"
        epochs = [p["epoch"] for p in curve["validation"]]
        final = curve["final"]
        clean = [100 * p["clean_accuracy"] for p in curve["validation"]]
        robust = [100 * p["robust_accuracy"] for p in curve["validation"]]
        if final["epoch"] is not None and final["clean_accuracy"] is not None:
            epochs_clean, clean = [*epochs, final["epoch"]], [*clean, 100 * final["clean_accuracy"]]
        else:
            epochs_clean = epochs
        clean_ax.plot(epochs_clean, clean, "-o", color=colour, markersize=3, label=label)
        robust_ax.plot(epochs, robust, "-o", color=colour, markersize=3, label=label)
        if final["epoch"] is not None and final["robust_accuracy"] is not None:
            robust_ax.plot(final["epoch"], 100 * final["robust_accuracy"], "x", color=colour, markersize=7)
    clean_ax.set_ylabel("clean accuracy (%)")
    robust_ax.set_ylabel("robust accuracy (%)")
    for ax in (clean_ax, robust_ax):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    handles, names = clean_ax.get_legend_handles_labels()
    validation = f"validation (robust: {validation_attack_names(learning)})"
    handles += [
        Line2D([], [], color="grey", marker="o", markersize=3, label=validation),
        Line2D([], [], color="grey", marker="x", linestyle="", markersize=7, label="final worst case"),
    ]
    names += [validation, "final worst case"]
    rows = -(-len(handles) // 6)
    fig.legend(handles, names, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 * rows + 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def change_points(
    rows: list[dict[str, Any]], key: str, *, compare_axis: str | None, baseline: str | None
) -> list[dict[str, Any]]:
    """Each compared row's seed-paired change against its baseline in ``key`` (clean_accuracy
    or robust_accuracy), in points: what :func:`changes` draws, straight from report.json's
    ``change_vs_baseline``. The baseline rows and rows without a paired change are left out."""
    points = []
    for row in rows:
        if compare_axis is None or row["axes"].get(compare_axis) == baseline:
            continue
        change = row.get("change_vs_baseline") or {}
        paired = (change.get(key) or {}).get("paired")
        if paired is None:
            continue
        interval = paired["interval"]
        group = ", ".join(f"{k} = {v}" for k, v in row["group"].items())
        value = row["axes"][compare_axis]
        points.append(
            {
                "label": f"{value} ({group})" if group else value,
                "baseline": change["baseline"],
                "mean": 100 * paired["mean"],
                "interval": None if interval is None else (100 * interval[0], 100 * interval[1]),
                "beyond_noise": bool(paired["beyond_noise"]),
                "seeds": paired["n"],
            }
        )
    return points


def changes(
    rows: list[dict[str, Any]], path: Path, *, title: str, compare_axis: str | None, baseline: str | None
) -> Path | None:
    """Write ``path`` (PNG): each row's seed-paired change against its baseline, clean
    accuracy on the left and the worst case on the right, as a dot with its 95% interval.

    What the report's table says in numbers, seen at once: which rows sit left or right of
    zero and whether their interval crosses it (a filled dot is beyond seed noise, a hollow
    one is not). Returns None, writing nothing, where no row has a paired change.
    """
    panels = [("clean_accuracy", "clean accuracy"), ("robust_accuracy", "worst case")]
    points = {
        key: change_points(rows, key, compare_axis=compare_axis, baseline=baseline) for key, _ in panels
    }
    labels = list(dict.fromkeys(p["label"] for key, _ in panels for p in points[key]))
    if not labels:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    height = 1.4 + 0.42 * len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, height), dpi=120, sharey=True)
    one_seed = False
    for ax, (key, name) in zip(axes, panels, strict=True):
        for point in points[key]:
            y = labels.index(point["label"])
            colour, marker = ("C3" if point["beyond_noise"] else "C0"), "o"
            if point["interval"] is not None:
                low, high = point["interval"]
                ax.plot([low, high], [y, y], "-", color=colour, linewidth=1.5)
            else:  # one seed: no interval, so neither within nor beyond noise
                colour, marker, one_seed = "grey", "s", True
            face = colour if point["beyond_noise"] else "white"
            ax.plot(point["mean"], y, marker, color=colour, markerfacecolor=face, markersize=6)
            ax.annotate(
                f"{point['mean']:+.1f}", (point["mean"], y), xytext=(0, 6), textcoords="offset points",
                ha="center", fontsize=7, color=colour,
            )  # fmt: skip
        ax.axvline(0.0, color="grey", linewidth=1)
        ax.set_xlabel(f"change in {name} vs {baseline} (points)")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels)
    axes[0].set_ylim(len(labels) - 0.5, -0.8)  # top to bottom in report order, room for the top value
    legend = "seed-paired mean and 95% interval; filled: beyond seed noise"
    fig.suptitle(f"{title}\n{legend}{'; grey square: one seed' if one_seed else ''}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# Where a label may sit around its point, in points (dx, dy, horizontal alignment), in
# order of preference: the first that overlaps no earlier label and no other marker, and
# stays inside the axes, wins.
_LABEL_SPOTS = [
    (5, 4, "left"),
    (5, -11, "left"),
    (-5, 4, "right"),
    (-5, -11, "right"),
    (0, 9, "center"),
    (0, -16, "center"),
    (9, 12, "left"),
    (-9, 12, "right"),
    (9, -19, "left"),
    (-9, -19, "right"),
    (0, 20, "center"),
    (0, -27, "center"),
]


def place_labels(ax: Any, labels: list[tuple[str, float, float, str]]) -> list[Any]:
    """Annotate each point with its name, moving a label around its point until it clashes with nothing.

    Seeds of one study often land within a point of each other (ReLU and smoothrelu did),
    and one fixed offset printed one name over the other. Placing labels greedily after the
    axes are final keeps every name readable without a layout dependency; when every spot
    clashes the least crowded one is used. Returns the text artists, in input order.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    markers = [ax.transData.transform((x, y)) for _, x, y, _ in labels]
    pad = 4.0 * fig.dpi / 72.0  # half a marker, in pixels
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = []
    artists = []
    for index, (text, x, y, colour) in enumerate(labels):
        best, best_clashes = None, None
        for dx, dy, align in _LABEL_SPOTS:
            artist = ax.annotate(
                text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8, color=colour, ha=align
            )
            box = artist.get_window_extent(renderer).expanded(1.05, 1.1)
            clashes = sum(box.overlaps(other) for other in placed) + sum(
                box.padded(pad).contains(mx, my)
                for other_index, (mx, my) in enumerate(markers)
                if other_index != index
            )
            clashes += not (
                frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            )
            if best_clashes is None or clashes < best_clashes:
                if best is not None:
                    best[0].remove()
                best, best_clashes = (artist, box), clashes
            else:
                artist.remove()
            if clashes == 0:
                break
        assert best is not None
        placed.append(best[1])
        artists.append(best[0])
    return artists
