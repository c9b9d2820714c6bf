"""Clean accuracy, robust accuracy per attack, and the per-sample worst case over all attacks.

The evaluator trusts no attack: it checks that every adversarial example an attack returns
lies inside the eps-ball and [0, 1], and it re-classifies the examples itself. A sample
counts as robust to an attack when the model is right on the clean image *and* on the
attack's example (RobustBench's convention); only clean-correct samples are attacked.
The worst case over the ensemble is robust only if it survived every attack.

By default the attacks run as a cascade, AutoAttack's way: each attacks only the images
every earlier attack failed on (a later attack can only lower the worst case where it is
still robust), and its reported robust accuracy is the one after it and all earlier ones.
The worst case is the one every attack on every image gives; ``cascade=False`` runs each
attack on every clean-correct image, for each attack's own number.

Attacks see the gradient of the function the model computes: a surrogate gradient that
the model was trained with (``relu_smooth_grad``) is switched off. For a model whose
surrogate serves the attacker, every attack runs a second time with the surrogate, under
``LABEL/surrogate_grad``, and the worst case covers both: the number never depends on a
gradient that the training run chose, and never misses what the surrogate finds.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from sat_toolkit.attacks.checked import as_attack_result, checked_result
from sat_toolkit.attacks.result import AttackResult
from sat_toolkit.errors import SatError
from sat_toolkit.phase import Phase, true_gradients

#: Appended to an attack's label for its second run with the model's surrogate gradient.
SURROGATE_SUFFIX = "/surrogate_grad"


@dataclasses.dataclass
class AttackOutcome:
    """One attack's result on the evaluated samples."""

    name: str
    settings: dict[str, Any]
    robust: torch.Tensor  # bool per sample
    zero_grad_fraction: float | None
    seconds: float
    #: The attack's example for every sample (the clean image where it did not attack:
    #: samples the model already gets wrong, or, in a cascade, that an earlier attack
    #: broke), on the CPU; kept only on request.
    x_adv: torch.Tensor | None = None
    #: How many images it attacked (in a cascade: those every earlier attack failed on).
    attacked: int = 0

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.double().mean()) if self.robust.numel() else math.nan


@dataclasses.dataclass
class RobustnessReport:
    """Clean accuracy, each attack, and the worst case, all on the same samples."""

    samples: int
    eps: float | None
    clean_correct: torch.Tensor  # bool per sample
    attacks: dict[str, AttackOutcome]
    #: Per sample, the first example (in attack order) that fools the model, else the last
    #: attack's example: the worst case as images, on the CPU; kept only on request.
    x_adv: torch.Tensor | None = None
    #: Whether each attack attacked only the images every earlier one failed on; then an
    #: attack's ``robust`` is the worst case up to and including it.
    cascade: bool = False

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.double().mean())

    @property
    def worst_case(self) -> torch.Tensor:
        robust = self.clean_correct.clone()
        for outcome in self.attacks.values():
            robust &= outcome.robust
        return robust

    @property
    def robust_accuracy(self) -> float:
        """Worst case over every attack (the number to quote)."""
        return float(self.worst_case.double().mean())

    def per_image(self) -> list[str]:
        """Per image, in evaluation order: ``"misclassified"`` (clean), ``"robust"``, or the label
        of the first attack (in order) whose example fools the model; two reports of the same
        images can then be compared image by image."""
        outcome = ["robust" if correct else "misclassified" for correct in self.clean_correct.tolist()]
        settled = ~self.clean_correct.cpu()
        for label, attack in self.attacks.items():
            newly = ~attack.robust.cpu() & ~settled
            for i in newly.nonzero().flatten().tolist():
                outcome[i] = label
            settled |= newly
        return outcome

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "eps": self.eps,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy if self.attacks else None,
            "cascade": self.cascade,
            "attacks": {
                name: {
                    "robust_accuracy": o.robust_accuracy,
                    "attacked": o.attacked,
                    "zero_grad_fraction": o.zero_grad_fraction,
                    "seconds": round(o.seconds, 3),
                    "settings": o.settings,
                }
                for name, o in self.attacks.items()
            },
        }


def _attack_settings(attack: Any) -> dict[str, Any]:
    hparams = getattr(attack, "hparams", None)
    settings = dict(hparams()) if callable(hparams) else {}
    return {"name": getattr(attack, "name", type(attack).__name__), **settings}


def has_attacker_surrogate(model: nn.Module) -> bool:
    """True when some layer back-propagates a surrogate gradient to attacks (a SAT gradient study)."""
    return any(
        callable(getattr(module, "uses_smooth_gradient", None)) and module.uses_smooth_gradient(Phase.ATTACK)
        for module in model.modules()
    )


def _budget(result: AttackResult, eps: float | None, attack: Any, label: str) -> float:
    """The eps an attack's examples must respect: the evaluation's, else the attack's own."""
    if eps is not None:
        return float(eps)
    reported = getattr(result, "eps", None)
    if isinstance(reported, (int, float)) and reported > 0:  # 0.0 is AttackResult's "not reported"
        return float(reported)
    own = getattr(attack, "eps", None)
    if isinstance(own, (int, float)):
        return float(own)
    raise SatError(f"attack '{label}' reports no eps; give it an eps attribute or pass eps to the evaluation")


def run_checked(
    label: str,
    attack: Any,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | None = None,
    norm: str | None = None,
) -> AttackResult:
    """``attack.perturb`` on one batch, its result checked (:func:`checked_result`): trust no attack.

    ``eps`` overrides the attack's own budget; ``norm`` is the ball for an attack that does
    not say (``.norm``). The pre-flight of a run's evaluation attacks calls this too, so it
    refuses exactly what the final evaluation would.
    """
    plugin = getattr(attack, "name", None)
    plugin = plugin if isinstance(plugin, str) else None
    returned = attack.perturb(model, x, y, eps=eps)
    result = as_attack_result(label, returned, 0.0 if eps is None else eps, plugin)
    used_eps = _budget(result, eps, attack, label)
    return checked_result(label, result, x, used_eps, getattr(attack, "norm", None) or norm or "linf", plugin)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The predicted class per image, and -1 (no class, never correct) where a logit is NaN or inf.

    ``argmax`` of NaN logits is class 0, which counted every class-0 image of a model with
    overflowing weights as correct and robust.
    """
    predictions = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        finite = torch.isfinite(logits).all(dim=1)
        predictions.append(
            torch.where(finite, logits.argmax(1), torch.full_like(finite, -1, dtype=torch.long))
        )
    return torch.cat(predictions)


#: Set by :func:`non_finite_counted_wrong`: clean NaN/inf outputs count as wrong, not refused.
_NON_FINITE_COUNTED_WRONG: contextvars.ContextVar[bool] = contextvars.ContextVar("non_finite", default=False)


@contextlib.contextmanager
def non_finite_counted_wrong() -> Iterator[None]:
    """Within it, clean NaN/inf outputs are counted as wrong (with a note) instead of refused.

    For a dry run: two steps of an ImageNet network at 32 px make no model, and its eval-mode
    outputs can overflow; the run's plumbing, not its numbers, is what it checks.
    """
    token = _NON_FINITE_COUNTED_WRONG.set(True)
    try:
        yield
    finally:
        _NON_FINITE_COUNTED_WRONG.reset(token)


def _refuse_non_finite(predictions: torch.Tensor) -> None:
    """A model whose clean outputs are NaN or inf has no accuracy to measure: say so, not 0.1."""
    bad = int((predictions < 0).sum())
    if not bad:
        return
    if _NON_FINITE_COUNTED_WRONG.get():
        print(f"note: the model's outputs are NaN or inf on {bad} of {len(predictions)} clean images; "
              "counted as wrong", file=sys.stderr, flush=True)  # fmt: skip
    else:
        raise SatError(
            f"the model's outputs (logits) are NaN or inf on {bad} of {len(predictions)} clean test images; "
            "it has no accuracy to measure: check its weights (overflowing values) and its normalisation "
            "(a std of 0) before evaluating it"
        )


def evaluate_robustness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Mapping[str, Any],
    *,
    batch_size: int = 256,
    eps: float | None = None,
    norm: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    return_examples: bool = False,
    per_attack_examples: bool = False,
    cascade: bool = True,
) -> RobustnessReport:
    """Attack ``x`` (images in [0, 1]) with every attack and report per-sample outcomes.

    Args:
        model: classifier with normalisation inside; put in eval mode here.
        attacks: label -> attack object with ``perturb(model, x, y, eps=...)``; each runs
            with the true gradient, and again with the model's surrogate gradient when it
            has one for attackers (see the module docstring).
        eps: overrides every attack's own eps (epsilon sweeps); None keeps theirs.
        norm: the ball to check examples against for attacks that do not say (``.norm``).
        progress: called as ``progress(label, done, total)`` as each attack starts (done 0)
            and after each of its batches.
        return_examples: keep the worst-case adversarial examples (``RobustnessReport.x_adv``,
            on the CPU: one copy of ``x``).
        per_attack_examples: also keep every attack's (``AttackOutcome.x_adv``: one copy
            of ``x`` per attack).
        cascade: each attack attacks only the images every earlier one failed on (same
            worst case, less work); False attacks every clean-correct image with each.
    """
    was_training = model.training
    model.eval()
    try:
        clean_predictions = _predict(model, x, batch_size)
        _refuse_non_finite(clean_predictions)
        clean_correct = clean_predictions == y
        outcomes: dict[str, AttackOutcome] = {}
        runs = [(label, attack, true_gradients) for label, attack in attacks.items()]
        if has_attacker_surrogate(model):
            surrogate = contextlib.nullcontext
            runs += [(label + SURROGATE_SUFFIX, attack, surrogate) for label, attack in attacks.items()]
        worst_x = x.detach().cpu().clone() if return_examples else None
        broken = ~clean_correct
        for label, attack, gradients in runs:
            attackable = (~broken if cascade else clean_correct).nonzero().flatten()
            robust = torch.zeros_like(clean_correct)
            keep = return_examples or per_attack_examples
            examples = x.detach().cpu().clone() if keep else None
            zero_grads: list[float] = []
            started = time.perf_counter()
            if progress is not None:  # the attack's clock starts now, not after its first batch
                progress(label, 0, len(attackable))
            for start in range(0, len(attackable), batch_size):
                index = attackable[start : start + batch_size]
                xb, yb = x[index], y[index]
                with gradients():
                    result = run_checked(label, attack, model, xb, yb, eps=eps, norm=norm)
                robust[index] = _predict(model, result.x_adv, batch_size) == yb
                if examples is not None:
                    examples[index.cpu()] = result.x_adv.detach().cpu().to(examples.dtype)
                if result.zero_grad is not None:
                    zero_grads.append(float(result.zero_grad.float().sum()))
                if progress is not None:
                    progress(label, min(start + batch_size, len(attackable)), len(attackable))
            zero_fraction = sum(zero_grads) / max(len(attackable), 1) if zero_grads else None
            settings = _attack_settings(attack)
            if eps is not None:
                settings["eps"] = eps
            outcomes[label] = AttackOutcome(
                label,
                settings,
                robust,
                zero_fraction,
                time.perf_counter() - started,
                examples if per_attack_examples else None,
                attacked=len(attackable),
            )
            if worst_x is not None and examples is not None:
                # Newly broken samples take this attack's example; unbroken ones keep the
                # latest attack's, so every returned image is a real attack output.
                take = (~broken).cpu()
                worst_x[take] = examples[take]
            broken |= ~robust
        return RobustnessReport(
            samples=len(x),
            eps=eps,
            clean_correct=clean_correct,
            attacks=outcomes,
            x_adv=worst_x,
            cascade=cascade,
        )
    finally:
        model.train(was_training)
