"""The study scatter's labels: near-coincident points keep readable, non-overlapping names."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from sat_toolkit.study.plot import place_labels  # noqa: E402


def _label_boxes(points: list[tuple[str, float, float]]) -> tuple[list[Bbox], Bbox]:
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    ax.plot([x for _, x, _ in points], [y for _, _, y in points], "o")
    ax.set_xlim(76, 84)
    ax.set_ylim(56, 70)
    artists = place_labels(ax, [(name, x, y, "C0") for name, x, y in points])
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in artists]
    frame = ax.get_window_extent(renderer)
    plt.close(fig)
    return boxes, frame


def test_labels_of_near_coincident_points_do_not_overlap() -> None:
    # The published activation study's ResNet ReLU and smoothrelu rows: 0.3 points apart.
    points = [
        ("smoothrelu", 80.9, 68.1),
        ("relu", 81.2, 68.1),
        ("gelu", 81.4, 68.4),
        ("parametric_softplus", 82.1, 69.6),
    ]
    boxes, _ = _label_boxes(points)
    assert len(boxes) == len(points)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (points[i][0], points[j][0])


def test_a_label_near_the_edge_moves_inside_the_axes() -> None:
    boxes, frame = _label_boxes([("parametric_softplus", 83.8, 69.5)])
    box = boxes[0]
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_an_isolated_point_keeps_the_preferred_spot() -> None:
    """Up and to the right of its point, as every label was before placement existed."""
    fig, ax = plt.subplots()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    (artist,) = place_labels(ax, [("relu", 5.0, 5.0, "C0")])
    assert artist.xyann == (5, 4) and artist.get_ha() == "left"
    plt.close(fig)
