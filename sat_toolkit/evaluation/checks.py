"""Gradient-masking checks: the evidence that a robustness number is not an artefact.

Each check re-attacks the *same* samples and reports pass/fail with its numbers:

* monotone in eps: robust accuracy does not rise as eps grows;
* large eps: at a huge budget robust accuracy falls to chance level or below;
* converged: doubling the steps and adding a restart moves robust accuracy by at most
  half a point (otherwise the attack had not converged and the number is optimistic);
* ensemble: the per-sample worst case is at least as strong as every member;
* zero gradients: few samples had an exactly-zero input gradient;
* gradient-free: the score-based Square attack breaks at most half a point of samples the
  white-box suite could not (if it breaks more, the gradients are masked).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from sat_toolkit.evaluation.robust import RobustnessReport, evaluate_robustness

TOLERANCE = 0.005  # half a point
ZERO_GRAD_LIMIT = 0.05


@dataclasses.dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    numbers: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def large_eps_for(norm: str, input_dim: int) -> float:
    """A budget that lets any image reach any other class: half the pixel range."""
    return 0.5 if norm == "linf" else 0.5 * math.sqrt(input_dim)


def _stronger_copy(attack: Any) -> Any | None:
    """The same attack rebuilt with twice the steps (or queries) and one more restart."""
    hparams = getattr(attack, "hparams", None)
    if not callable(hparams):
        return None
    params = dict(hparams())
    changed = False
    for key in ("steps", "queries"):
        if isinstance(params.get(key), int):
            params[key] *= 2
            changed = True
    if isinstance(params.get("restarts"), int):
        params["restarts"] += 1
        changed = True
    if not changed:
        return None
    import inspect

    accepted = inspect.signature(type(attack)).parameters
    return type(attack)(**{k: v for k, v in params.items() if k in accepted})


def run_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    report: RobustnessReport,
    attacks: dict[str, Any],
    *,
    eps: float,
    norm: str,
    num_classes: int,
    seed: int,
    batch_size: int,
    sweep: dict[float, float] | None = None,
    square_queries: int = 1000,
) -> list[CheckResult]:
    """Run every check against ``report`` (the main evaluation at ``eps``)."""
    from sat_toolkit.attacks import create_attack

    results: list[CheckResult] = []
    first_label, first = next(iter(attacks.items()))
    main = report.robust_accuracy

    def robust_with(attack_map: dict[str, Any], at_eps: float | None = None) -> RobustnessReport:
        return evaluate_robustness(model, x, y, attack_map, batch_size=batch_size, eps=at_eps)

    # 1. monotone in eps
    curve = dict(sweep or {})
    if not sweep:
        for factor in (0.5, 2.0):
            curve[eps * factor] = robust_with({first_label: first}, eps * factor).robust_accuracy
        curve[eps] = report.attacks[first_label].robust_accuracy
    ordered = sorted(curve.items())
    rises = [(a, b) for (a, ra), (b, rb) in zip(ordered, ordered[1:], strict=False) if rb > ra + TOLERANCE]
    results.append(
        CheckResult(
            "robust accuracy falls as eps grows",
            not rises,
            "non-increasing" if not rises else f"rises between eps {rises[0][0]:.4g} and {rises[0][1]:.4g}",
            {"curve": {f"{k:.6g}": v for k, v in ordered}},
        )
    )

    # 2. large eps reaches chance level
    big = large_eps_for(norm, x[0].numel())
    at_big = robust_with({first_label: first}, big).robust_accuracy
    chance = 1.0 / num_classes
    results.append(
        CheckResult(
            "large eps drives robust accuracy to chance",
            at_big <= chance + TOLERANCE,
            f"{at_big:.4f} at eps {big:.4g} (chance {chance:.4f})",
            {"eps": big, "robust_accuracy": at_big, "chance": chance},
        )
    )

    # 3. more steps / restarts do not change the answer
    stronger = _stronger_copy(first)
    if stronger is not None:
        base = report.attacks[first_label].robust_accuracy
        more = robust_with({first_label: stronger}).robust_accuracy
        results.append(
            CheckResult(
                f"{first_label}: 2x steps and +1 restart change robust accuracy by <= 0.5 pt",
                abs(more - base) <= TOLERANCE,
                f"{base:.4f} -> {more:.4f}",
                {"base": base, "stronger": more},
            )
        )

    # 4. the ensemble is at least as strong as each member
    members = {label: o.robust_accuracy for label, o in report.attacks.items()}
    results.append(
        CheckResult(
            "worst case is at least as strong as every attack",
            all(main <= value + 1e-12 for value in members.values()),
            f"worst case {main:.4f} vs members " + ", ".join(f"{k} {v:.4f}" for k, v in members.items()),
            {"worst_case": main, "members": members},
        )
    )

    # 5. zero gradients
    fractions = {
        k: o.zero_grad_fraction for k, o in report.attacks.items() if o.zero_grad_fraction is not None
    }
    worst_zero = max(fractions.values(), default=0.0)
    results.append(
        CheckResult(
            "input gradients are rarely exactly zero",
            worst_zero <= ZERO_GRAD_LIMIT,
            f"max zero-gradient fraction {worst_zero:.4f} (limit {ZERO_GRAD_LIMIT})",
            {"zero_grad_fraction": fractions},
        )
    )

    # 6. a gradient-free attack does not beat the white-box suite
    square = create_attack(
        {"name": "square", "queries": square_queries}, defaults={"eps": eps, "norm": norm, "seed": seed}
    )
    square_report = robust_with({"square": square})
    broken_only_by_square = report.worst_case & ~square_report.attacks["square"].robust
    extra = float(broken_only_by_square.float().mean())
    # Half a point, but never less than one sample: a single image is noise at small n.
    allowed = max(TOLERANCE, 1.0 / max(len(y), 1))
    results.append(
        CheckResult(
            "gradient-free Square does not beat the white-box suite",
            extra <= allowed,
            f"Square {square_report.robust_accuracy:.4f} vs suite {main:.4f}; "
            f"breaks {extra:.4f} the suite missed"
            + ("" if extra <= allowed else " -> gradients look MASKED"),
            {
                "square_robust_accuracy": square_report.robust_accuracy,
                "extra_broken": extra,
                "queries": square_queries,
            },
        )
    )
    return results
