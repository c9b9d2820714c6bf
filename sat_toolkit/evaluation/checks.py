"""Gradient-masking checks: the evidence that a robustness number is not an artefact.

Each check re-attacks the *same* samples and reports pass/fail with its numbers:

* monotone in eps: robust accuracy does not rise as eps grows;
* large eps: at a huge budget robust accuracy falls to chance level or below;
* converged: the suite's first attack rebuilt with twice the steps and one more restart,
  run on the images the worst case still counts robust, breaks hardly any of them
  (otherwise the suite had not converged and the number is optimistic). The first
  attack, not every one: for ``autoattack`` that is APGD-CE, and strengthening APGD-T over
  9 targets too would cost four times the suite's core again;
* ensemble: the per-sample worst case is at least as strong as every member;
* zero gradients: few samples had an exactly-zero input gradient;
* gradient-free: the score-based Square attack breaks hardly any image the white-box
  attacks could not (if it breaks more, the gradients are masked). A suite with Square in
  it (``autoattack``) answers from its own run; otherwise Square runs here.

A check that has nothing to test reports N/A rather than PASS: where no image is classified
correctly every attack-based accuracy is 0 at every eps; where none is left robust, no
stronger attack, ensemble member or Square can break more; the large-eps check has nothing
to add where the evaluation's eps is already that large; and Square does not attack every
norm.

"Hardly any" is counted in images, not a fixed fraction, so the rule means the same at
n = 100 and at n = 10000: a difference of k of the n images passes unless k is
significantly above half a point of n, i.e. unless a Poisson count with mean 0.005 n
reaches k with probability below 5% (:func:`allowed_images`). At n = 359 that allows 4
images (1.1 points), at n = 1000 9 images, at n = 10000 62 images (0.62 points).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from sat_toolkit.evaluation.robust import RobustnessReport, evaluate_robustness
from sat_toolkit.recipe.plugin_params import eps_limit

TOLERANCE = 0.005  # half a point: the rate a difference may have before it counts
SIGNIFICANCE = 0.05  # ... unless chance at this sample size explains it (see allowed_images)
ZERO_GRAD_LIMIT = 0.05


def allowed_images(n: int, rate: float = TOLERANCE, significance: float = SIGNIFICANCE) -> int:
    """The most images a difference may count at sample size ``n`` and still pass a check.

    The smallest k with P(K > k) < ``significance`` for K ~ Poisson(``rate`` * n): a
    difference of up to k images is consistent with a true rate of half a point, so a
    check fails only on evidence, and two images of 359 no longer read as masking.
    """
    mean = rate * max(n, 0)
    if mean <= 0:
        return 0
    # Terms in log space: exp(-mean) alone underflows to 0 beyond n of about 150 000.
    cumulative, k = 0.0, 0
    while True:
        cumulative += math.exp(k * math.log(mean) - mean - math.lgamma(k + 1))
        if 1.0 - cumulative < significance:
            return k
        k += 1


def _count(fraction: float, n: int) -> int:
    """An accuracy difference on ``n`` images as a whole number of images."""
    return round(fraction * n)


@dataclasses.dataclass
class CheckResult:
    """One check's verdict. ``applicable`` is False where the check has nothing to test
    (see the module: nothing classified correctly, nothing left robust, ...): such a check
    neither passes nor fails, so a report never shows PASS for evidence it did not gather.
    """

    name: str
    passed: bool
    detail: str
    numbers: dict[str, Any]
    applicable: bool = True

    @property
    def verdict(self) -> str:
        if not self.applicable:
            return "N/A"
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MONOTONE = "robust accuracy falls as eps grows"
LARGE_EPS = "large eps drives robust accuracy to chance"
CONVERGED = "{first} with 2x steps and +1 restart leaves the worst case unchanged"
ENSEMBLE = "worst case is at least as strong as every attack"
ZERO_GRADIENTS = "input gradients are rarely exactly zero"
GRADIENT_FREE = "gradient-free Square does not beat the white-box suite"
CHECK_NAMES = (MONOTONE, LARGE_EPS, CONVERGED, ENSEMBLE, ZERO_GRADIENTS, GRADIENT_FREE)


def _not_applicable(name: str, why: str) -> CheckResult:
    return CheckResult(name, False, f"not applicable: {why}", {"applicable": False}, applicable=False)


def large_eps_for(norm: str, input_dim: int) -> float:
    """A budget that lets any image reach any other class: half the pixel range."""
    return 0.5 if norm == "linf" else 0.5 * math.sqrt(input_dim)


def _stronger_copy(attack: Any) -> Any | None:
    """The same attack rebuilt with twice the steps (or queries) and one more restart."""
    from sat_toolkit.attacks.factory import rebuild_attack

    hparams = getattr(attack, "hparams", None)
    if not callable(hparams):
        return None
    params = dict(hparams())
    changes = {key: params[key] * 2 for key in ("steps", "queries") if isinstance(params.get(key), int)}
    if isinstance(params.get("restarts"), int):
        changes["restarts"] = params["restarts"] + 1
    return rebuild_attack(attack, **changes) if changes else None


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
    n = len(y)
    allowed = allowed_images(n)
    rule = f"<= {allowed} of {n} images"

    def robust_with(attack_map: dict[str, Any], at_eps: float | None = None) -> RobustnessReport:
        return evaluate_robustness(model, x, y, attack_map, batch_size=batch_size, eps=at_eps, norm=norm)

    if not bool(report.clean_correct.any()):
        # Every attack-based accuracy is 0 at every eps: a check could only pass vacuously.
        why = f"no image of {n} is classified correctly, so no attack has anything to break"
        return [_not_applicable(name.format(first=first_label), why) for name in CHECK_NAMES]

    # 1. monotone in eps
    curve = dict(sweep or {})
    if not sweep:
        limit = eps_limit(norm, tuple(x.shape[1:])) or math.inf
        for factor in (0.5, 2.0):
            if eps * factor <= limit:  # beyond it no budget means more (L2: sqrt(C*H*W))
                curve[eps * factor] = robust_with({first_label: first}, eps * factor).robust_accuracy
        curve[eps] = report.attacks[first_label].robust_accuracy
    ordered = sorted(curve.items())
    rises = [
        (a, b, _count(rb - ra, n))
        for (a, ra), (b, rb) in zip(ordered, ordered[1:], strict=False)
        if _count(rb - ra, n) > allowed
    ]
    results.append(
        CheckResult(
            MONOTONE,
            not rises,
            f"non-increasing (rises {rule} allowed)"
            if not rises
            else f"rises by {rises[0][2]} images from eps {rises[0][0]:.4g} to {rises[0][1]:.4g} ({rule})",
            {"curve": {f"{k:.6g}": v for k, v in ordered}, "allowed_images": allowed},
        )
    )

    # 2. large eps reaches chance level
    big = large_eps_for(norm, x[0].numel())
    if big <= eps:  # the evaluation itself is at least this large: nothing larger to try
        results.append(_not_applicable(LARGE_EPS, f"the evaluation's eps {eps:.4g} is already >= {big:.4g}"))
    else:
        at_big = robust_with({first_label: first}, big).robust_accuracy
        chance = 1.0 / num_classes
        above = _count(at_big - chance, n)
        results.append(
            CheckResult(
                LARGE_EPS,
                above <= allowed,
                f"{at_big:.4f} at eps {big:.4g} (chance {chance:.4f}; above chance {rule})",
                {"eps": big, "robust_accuracy": at_big, "chance": chance, "allowed_images": allowed},
            )
        )
    fractions = {
        k: o.zero_grad_fraction for k, o in report.attacks.items() if o.zero_grad_fraction is not None
    }
    if not bool(report.worst_case.any()):
        # Nothing is left robust: no stronger attack, member or Square can break more.
        why = f"no image of {n} is robust at eps {eps:.4g}, so there is nothing more to break"
        results += [_not_applicable(CONVERGED.format(first=first_label), why), _not_applicable(ENSEMBLE, why)]
        results.append(_zero_gradients(fractions))
        results.append(_not_applicable(GRADIENT_FREE, why))
        return results

    # 3. a stronger first attack breaks hardly any image the worst case still counts robust
    stronger = _stronger_copy(first)
    if stronger is not None:
        still_robust = report.worst_case.nonzero().flatten()
        broken_here: list[int] = []
        if len(still_robust):
            index = still_robust.to(x.device)
            again = evaluate_robustness(
                model, x[index], y[index], {first_label: stronger}, batch_size=batch_size, norm=norm
            )
            broken_here = still_robust.cpu()[(~again.worst_case).cpu()].tolist()  # either on a GPU
        newly_broken = len(broken_here)
        more = main - newly_broken / max(n, 1)
        results.append(
            CheckResult(
                CONVERGED.format(first=first_label),
                newly_broken <= allowed,
                f"worst case {main:.4f} -> {more:.4f}: {newly_broken} more images broken ({rule})",
                {
                    "base": main,
                    "stronger": more,
                    "newly_broken": newly_broken,
                    "allowed_images": allowed,
                    "broken": broken_here,  # which images (evaluation order) it broke
                },
            )
        )

    # 4. the ensemble is at least as strong as each member
    members = {label: o.robust_accuracy for label, o in report.attacks.items()}
    results.append(
        CheckResult(
            ENSEMBLE,
            all(main <= value + 1e-12 for value in members.values()),
            f"worst case {main:.4f} vs members " + ", ".join(f"{k} {v:.4f}" for k, v in members.items()),
            {"worst_case": main, "members": members},
        )
    )

    # 5. zero gradients
    results.append(_zero_gradients(fractions))

    # 6. a gradient-free attack does not beat the white-box suite
    square_cls = _attack_class("square")
    norms = getattr(square_cls, "supported_norms", None)
    if norms is not None and norm not in norms:
        results.append(
            _not_applicable(
                GRADIENT_FREE,
                f"Square attacks {', '.join(norms)} only, this evaluation is {norm}",
            )
        )
        return results
    in_suite = [label for label, attack in attacks.items() if getattr(attack, "name", None) == "square"]
    if in_suite:  # the suite's own Square (autoattack's 5000 queries): compare it with the others
        white_box = report.clean_correct.clone()
        square_robust = torch.ones_like(white_box)
        for label, outcome in report.attacks.items():
            if label.split("/")[0] in in_suite:
                square_robust &= outcome.robust
            else:
                white_box &= outcome.robust
        square_accuracy = float((white_box & square_robust).double().mean())
        square_text = f"with Square {square_accuracy:.4f}"
        broken_only_by_square = int((white_box & ~square_robust).sum())
        square_queries = getattr(attacks[in_suite[0]], "queries", square_queries)
        white_box_accuracy = float(white_box.double().mean())
    else:
        white_box_accuracy = main
        square = create_attack(
            {"name": "square", "queries": square_queries}, defaults={"eps": eps, "norm": norm, "seed": seed}
        )
        square_report = robust_with({"square": square})
        square_accuracy = square_report.robust_accuracy
        square_text = f"Square alone {square_accuracy:.4f}"
        only_square = report.worst_case & ~square_report.attacks["square"].robust
        broken_only_by_square = int(only_square.sum())
        square_broke = only_square.nonzero().flatten().tolist()  # the suite's own Square is in the worst case
    results.append(
        CheckResult(
            GRADIENT_FREE,
            broken_only_by_square <= allowed,
            f"Square breaks {broken_only_by_square} image{'' if broken_only_by_square == 1 else 's'} "
            f"the white-box attacks missed ({rule}; "
            f"white-box {white_box_accuracy:.4f}, {square_text})"
            + ("" if broken_only_by_square <= allowed else " -> gradients look MASKED"),
            {
                # In a suite: the accuracy after the white-box attacks and Square; else Square's own.
                "square_robust_accuracy": square_accuracy,
                "square_in_suite": bool(in_suite),
                "extra_broken": broken_only_by_square / max(n, 1),
                "extra_broken_images": broken_only_by_square,
                "allowed_images": allowed,
                "queries": square_queries,
                **({} if in_suite else {"broken": square_broke}),
            },
        )
    )
    return results


def _zero_gradients(fractions: dict[str, float]) -> CheckResult:
    worst_zero = max(fractions.values(), default=0.0)
    return CheckResult(
        ZERO_GRADIENTS,
        worst_zero <= ZERO_GRAD_LIMIT,
        f"max zero-gradient fraction {worst_zero:.4f} (limit {ZERO_GRAD_LIMIT})",
        {"zero_grad_fraction": fractions},
    )


def _attack_class(name: str) -> type:
    from sat_toolkit.plugins import get_plugin_host

    return get_plugin_host().get("attack", name)
