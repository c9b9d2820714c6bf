"""The smallest step from a point onto a hyperplane, without leaving the [0, 1] box.

FAB's one geometric primitive (Croce & Hein, ICML 2020, Section 3.1): for points ``p``,
normals ``w`` and offsets ``c`` (the hyperplane is {p + d : c + <w, d> = 0}), find

    d* = argmin ||d||   subject to   c + <w, d> = 0,   0 <= p + d <= 1

under the L-infinity or L2 norm. Both have the same structure. Orient ``w`` so the
target ``tau = |c|`` is reached by moving along it; every coordinate then moves in the
direction of ``sign(w_i)`` until it either stops growing or hits the box (``room_i``):

* L-inf: ``d_i = sign(w_i) min(t, room_i)``          (a common magnitude t),
* L2:    ``d_i = sign(w_i) min(lam |w_i|, room_i)``  (KKT: d proportional to w, clipped).

``<w, d>`` is then a non-decreasing, piecewise-linear function of the scalar (t or lam)
whose kinks are ``room_i / rate_i``. Sorting the kinks gives its value at each of them by
two cumulative sums; the first kink where it reaches ``tau`` brackets the exact solution,
a single division away. That is exact (no bisection tolerance) and O(d log d) per point.
When even the box corner ``p + sign(w) room`` does not reach the hyperplane, that corner,
the feasible point that gets closest, is returned.
"""

from __future__ import annotations

import torch

#: Norms the projection solves exactly.
BOUNDARY_NORMS = ("linf", "l2")


def project_onto_hyperplane(
    points: torch.Tensor, w: torch.Tensor, offset: torch.Tensor, norm: str
) -> torch.Tensor:
    """The minimal-norm displacement ``d`` with ``offset + <w, d> = 0`` and ``points + d`` in [0, 1].

    Args:
        points: [B, D] points inside [0, 1].
        w: [B, D] hyperplane normals (the gradient of a logit difference, for FAB).
        offset: [B] the linear function's value at each point.
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        [B, D] displacements in ``points``' dtype. Computed in float64: the cumulative sums
        run over every pixel, where float32 rounding would move the solution visibly.
    """
    if norm not in BOUNDARY_NORMS:
        raise ValueError(f"norm must be one of {', '.join(BOUNDARY_NORMS)}; got {norm!r}")
    p, normal, c = points.double(), w.double(), offset.double()
    # Orient the normal so that the target is reached by moving along it.
    normal = torch.where((c > 0).unsqueeze(1), -normal, normal)
    target = c.abs()
    weight = normal.abs()
    moves = weight > 0
    room = torch.where(normal > 0, 1.0 - p, p).clamp_(min=0.0)
    room = torch.where(moves, room, torch.zeros_like(room))
    rate = weight if norm == "l2" else torch.ones_like(weight)
    kinks = torch.where(moves, room / torch.where(moves, rate, torch.ones_like(rate)), torch.zeros_like(room))

    order = kinks.argsort(dim=1)
    kinks_sorted = kinks.gather(1, order)
    saturated = (weight * room).gather(1, order).cumsum(dim=1)  # reached by the coordinates at their box
    total_slope = (weight * rate).sum(dim=1, keepdim=True)
    slope_left = total_slope - (weight * rate).gather(1, order).cumsum(dim=1)  # from those still moving
    reach = saturated + kinks_sorted * slope_left  # <w, d> at each kink, non-decreasing

    kink = (reach < target.unsqueeze(1)).sum(dim=1, keepdim=True)  # the first kink reaching the target
    feasible = kink < p.shape[1]
    before = (kink - 1).clamp_(min=0)
    has_before = kink > 0
    saturated_before = torch.where(
        has_before, saturated.gather(1, before), torch.zeros_like(target).unsqueeze(1)
    )
    slope_before = torch.where(has_before, slope_left.gather(1, before), total_slope)
    scale = (target.unsqueeze(1) - saturated_before) / slope_before.clamp(min=torch.finfo(torch.float64).tiny)
    scale = torch.where(feasible, scale.clamp_(min=0.0), torch.full_like(scale, torch.inf))

    # (Coordinates that do not move may compute inf * 0 here; the where() discards them.)
    magnitude = torch.where(moves, torch.minimum(scale * rate, room), torch.zeros_like(room))
    return (normal.sign() * magnitude).to(points.dtype)
