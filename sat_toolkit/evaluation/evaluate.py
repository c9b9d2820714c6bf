"""``sat_toolkit.evaluate``: credible robustness numbers for any ``nn.Module``.

The one evaluation path: ``sat-toolkit eval`` builds a model and its test images and
calls :func:`evaluate`, so a notebook user gets exactly the CLI's numbers, report and
gradient-masking checks, plus the adversarial examples. The model may be anything that
maps images in [0, 1] (``N x C x H x W``) to logits, with its normalisation inside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sat_toolkit import __version__
from sat_toolkit.errors import SatError
from sat_toolkit.evaluation.checks import CheckResult, run_checks
from sat_toolkit.evaluation.cost import MIN_IMAGES_TO_PROBE, CostEstimate, estimate_cost
from sat_toolkit.evaluation.robust import RobustnessReport, evaluate_robustness
from sat_toolkit.evaluation.suites import DEFAULT_SUITE, SUITES, describe_suite
from sat_toolkit.plugins.manager import BUILTIN_DISTRIBUTION

THREAT_MODELS = {"linf": "Linf", "l2": "L2"}

AttackChoice = Sequence[str] | Mapping[str, Any]


@dataclasses.dataclass
class Evaluation:
    """What :func:`evaluate` found: numbers per attack and worst case, checks, examples.

    Attributes:
        report: per-sample outcomes (``report.clean_correct``, ``report.worst_case``,
            ``report.attacks[label].robust``).
        checks: the gradient-masking checks (empty unless asked for).
        x_adv: per sample, the worst-case adversarial example (the first that fools the
            model, else the last attack's; the clean image for misclassified samples), CPU.
        plugins: where each plugin used came from (``{"kind", "name", "distribution",
            "version"}``; distribution None for an attack object no package registers):
            the attacks, the Square check's when checks ran, and the model's when it
            carries a ``sat_config``. A result is reproducible only with the same packages.
    """

    report: RobustnessReport
    checks: list[CheckResult]
    eps: float
    norm: str
    suite: str | None
    seed: int
    device: str
    precision: str
    attack_settings: dict[str, dict[str, Any]]
    sweep: dict[float, dict[str, Any]] | None
    seconds: float
    plugins: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: Identifies the evaluated images and labels, so paired comparisons pair the same ones.
    images_sha256: str | None = None

    @property
    def clean_accuracy(self) -> float:
        return self.report.clean_accuracy

    @property
    def robust_accuracy(self) -> float:
        """Worst case over the evaluation's attacks (its suite and extra attacks, a sweep's
        run at its eps): the number to quote. See :attr:`robust_accuracy_with_checks`."""
        return self.report.robust_accuracy

    @property
    def attacks(self) -> dict[str, float]:
        """Robust accuracy per attack label."""
        return {label: outcome.robust_accuracy for label, outcome in self.report.attacks.items()}

    @property
    def x_adv(self) -> torch.Tensor | None:
        return self.report.x_adv

    def suite_accuracy(self, name: str) -> float | None:
        """The worst case over the members of suite ``name`` alone, if this evaluation ran it."""
        if self.suite != name or name not in SUITES:
            return None
        robust = self.report.clean_correct.clone()
        for label in SUITES[name].attacks:
            robust &= self.report.attacks[label].robust
        return float(robust.double().mean())

    @property
    def robust_accuracy_with_checks(self) -> float | None:
        """The worst case counting also the images the masking checks' own attacks broke
        (the stronger first attack, a Square run outside the suite); None without checks.

        :attr:`robust_accuracy` is the suite's, as AutoAttack reports it; a check that
        passes may still break a few images (within its tolerance), and this is the number
        over everything that ran.
        """
        if not self.checks:
            return None
        broken = {int(i) for check in self.checks for i in check.numbers.get("broken", ())}
        robust = int(self.report.worst_case.sum()) - len(broken)
        return robust / max(self.report.samples, 1)

    @property
    def passed_checks(self) -> bool:
        """No check failed (one that does not apply neither passes nor fails)."""
        return all(check.passed for check in self.checks if check.applicable)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (RobustBench-style field names), without the tensors."""
        result: dict[str, Any] = {
            "threat_model": THREAT_MODELS.get(self.norm, self.norm),
            "norm": self.norm,
            "eps": self.eps,
            "n_examples": self.report.samples,
            "seed": self.seed,
            "library": {"name": BUILTIN_DISTRIBUTION, "version": __version__},
            "suite": describe_suite(self.suite),
            "clean_acc": self.clean_accuracy,
            "robust_acc": self.robust_accuracy if self.report.attacks else None,
        }
        autoattack = self.suite_accuracy("autoattack")
        if autoattack is not None:  # RobustBench's field: AutoAttack's four members alone
            result["autoattack_acc"] = autoattack
        result |= {
            # True: each attack ran on the images every earlier one failed on, and its
            # robust_accuracy is the one after it (AutoAttack's log); False: its own number.
            "cascade": self.report.cascade,
            "attacks": self.report.to_dict()["attacks"],
        }
        if self.sweep is not None:
            result["sweep"] = [{"eps": e, **v} for e, v in self.sweep.items()]
        if self.checks:
            result["robust_acc_with_checks"] = self.robust_accuracy_with_checks
            result["checks"] = [check.to_dict() for check in self.checks]
        result["seconds"] = round(self.seconds, 2)
        result["plugins"] = [dict(entry) for entry in self.plugins]
        result["per_image"] = {"images_sha256": self.images_sha256, "outcome": self.report.per_image()}
        result["environment"] = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": self.device,
            "precision": self.precision,
        }
        return result


def resolve_attacks(
    suite: str | None, attacks: AttackChoice, *, eps: float, norm: str, seed: int
) -> dict[str, Any]:
    """Label -> attack object for a suite plus extra attacks (spec strings, dicts or objects).

    Every attack works under the evaluation's threat model: one that sets another eps or
    norm is refused, since its examples would be counted in a worst case they do not
    belong to. (Evaluate at another eps with a second call, or with ``sweep``.)
    """
    from sat_toolkit.evaluation.suites import build_attacks, parse_attack_option, resolve_suite

    if isinstance(attacks, str):
        attacks = [attacks]
    texts = list(attacks) if not isinstance(attacks, Mapping) else []
    specs = resolve_suite(suite, texts) if suite or texts else {}
    objects: dict[str, Any] = {}
    if isinstance(attacks, Mapping):
        for label, entry in attacks.items():
            if isinstance(entry, str):
                specs[label] = parse_attack_option(entry)[1]
            elif isinstance(entry, Mapping):
                specs[label] = dict(entry)
            elif callable(getattr(entry, "perturb", None)):
                objects[label] = entry
            else:
                raise SatError(
                    f"attacks[{label!r}]: give an attack spec ('pgd:steps=50' or a dict with 'name') "
                    f"or an attack object with perturb(), got {type(entry).__name__}"
                )
    if not specs and not objects:
        raise SatError("nothing to run: give a suite and/or attacks")
    built = {**build_attacks(specs, eps=eps, norm=norm, seed=seed), **objects}
    for label, attack in built.items():
        own_eps, own_norm = getattr(attack, "eps", None), getattr(attack, "norm", None)
        if isinstance(own_eps, (int, float)) and not math.isclose(own_eps, eps, rel_tol=1e-9, abs_tol=1e-12):
            raise SatError(
                f"attack '{label}' has eps {own_eps:.6g} but this evaluation's eps is {eps:.6g}; "
                "leave its eps out (it takes the evaluation's) or evaluate at that eps separately"
            )
        if isinstance(own_norm, str) and own_norm != norm:
            raise SatError(
                f"attack '{label}' has norm {own_norm} but this evaluation's is {norm}; "
                "leave its norm out (it takes the evaluation's) or evaluate under that norm separately"
            )
    return built


def _check_inputs(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise SatError("x: expected a float tensor of images, N x C x H x W, with values in [0, 1]")
    if len(x) == 0:
        raise SatError("x: no images to evaluate")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise SatError(
            f"y: expected one integer label per image ({x.shape[0]}), got {getattr(y, 'shape', y)}"
        )
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise SatError(
            f"x: values lie in [{float(x.min()):.3g}, {float(x.max()):.3g}], not [0, 1]; eps lives in [0, 1] "
            "pixel space: scale the images (8-bit pixels / 255) and put the normalisation inside the model"
        )
    return x, y.long()


def check_budget(eps: float, norm: str, input_shape: tuple[int, ...], name: str = "eps") -> None:
    """Refuse an eps beyond any perturbation of a [0, 1] image: a unit mistake (8 meant as 8/255).

    The bound is :func:`~sat_toolkit.recipe.plugin_params.eps_limit`, the one recipes use.
    """
    from sat_toolkit.recipe.plugin_params import eps_limit

    limit = eps_limit(norm, input_shape)
    if limit is not None and eps > limit:
        hint = f"; did you mean {eps:g}/255?" if norm == "linf" and eps <= 255 else ""
        raise SatError(
            f"{name} {eps:g} is larger than any {norm} perturbation (at most {limit:.4g}: "
            f"images lie in [0, 1]){hint}"
        )


def _floating_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def refuse_attacks_beyond_classes(attacks: Mapping[str, Any], num_classes: int, fix: str) -> None:
    """Refuse, before any attack runs, one whose loss is undefined for ``num_classes`` classes
    (APGD-T's targeted DLR needs 4): otherwise it stops the evaluation after the attacks
    before it, or, where they already fooled every image, is skipped without a word.
    ``fix`` says what to do, with ``{label}`` standing for the attack's label."""
    for label, attack in attacks.items():
        needed = getattr(attack, "min_classes", 2)
        if needed > num_classes:
            raise SatError(
                f"attack '{label}' ({getattr(attack, 'name', label)}) needs at least {needed} classes "
                f"and the model has {num_classes}; {fix.format(label=label)}"
            )


def _output_classes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> int:
    """The model's class count from one forward pass, checked against ``num_classes`` and ``y``."""
    was_training = model.training
    with torch.no_grad():
        logits = model.eval()(x[:1])
    model.train(was_training)
    if logits.dim() != 2:
        raise SatError(
            f"the model returns shape {tuple(logits.shape)} for one image; expected 1 x classes logits"
        )
    classes = int(logits.shape[1])
    if num_classes is not None and num_classes != classes:
        raise SatError(f"num_classes is {num_classes} but the model returns {classes} logits per image")
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise SatError(
            f"y: labels run from {int(y.min())} to {int(y.max())}; the model has classes 0 to {classes - 1}"
        )
    return classes


PRECISIONS = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16", torch.float16: "fp16"}


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | str,
    norm: str = "linf",
    suite: str | None = DEFAULT_SUITE,
    attacks: AttackChoice = (),
    checks: bool = False,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    sweep: Sequence[float] | str | None = None,
    square_queries: int = 1000,
    return_examples: bool = True,
    per_attack_examples: bool = False,
    cascade: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    on_estimate: Callable[[CostEstimate], None] | None = None,
) -> Evaluation:
    """Attack ``model`` on images ``x`` (in [0, 1]) with labels ``y``; see :class:`Evaluation`.

    Args:
        model: any classifier taking [0, 1] images (normalisation inside) to logits. It is
            evaluated in eval mode (its train/eval mode, weights and buffers are restored)
            and, when ``device`` is given, moved there, as ``model.to(device)`` would.
        eps: the budget in [0, 1] pixel space (``"8/255"`` allowed); norm: ``"linf"``/``"l2"``.
        suite: a named suite (``autoattack``, ``aa-core``, ``pgd``, ``quick``; see
            :mod:`sat_toolkit.evaluation.suites`), or None / ``"none"``.
        attacks: extra attacks: spec strings (``"pgd:steps=50"``) or label -> spec dict /
            attack object (``perturb(model, x, y, *, eps=None)`` returning an
            ``AttackResult`` or the adversarial tensor). Each takes the evaluation's eps
            and norm; one that sets others is refused.
        checks: also run the gradient-masking checks (the first attack twice more and once
            with 2x steps, and a Square run unless the suite has one: for a cheap suite
            several times its cost; the CLI runs them by default, this function only when
            asked).
        seed: seeds the attacks' generators and torch's global generator.
        device: where to compute; None computes where the model is.
        num_classes: None asks the model's output (given, it must agree).
        sweep: eps values for a robustness-vs-eps curve (or ``"1/255,2/255"``).
        return_examples: keep the worst-case examples (``x_adv``: one copy of ``x`` on the CPU);
            per_attack_examples: also each attack's (one copy per attack).
        cascade: each attack attacks only the images every earlier one failed on, as
            AutoAttack does: the same worst case in less time; an attack's number is then
            the robust accuracy after it. False runs every attack on every clean-correct
            image, for each attack's own number.
        on_estimate: called, before the suite starts, with the time it will take, from a
            timed probe of each attack on a few images (skipped below
            ``MIN_IMAGES_TO_PROBE`` images, where the probe would cost more than 5%). The
            probe leaves the results unchanged.
    """
    from sat_toolkit.attacks import parse_fraction
    from sat_toolkit.devices import describe, model_device, resolve_device
    from sat_toolkit.evaluation.sweep import eps_sweep, parse_eps_list
    from sat_toolkit.phase import true_gradients

    budget = parse_fraction(eps, "eps")
    if batch_size < 1 or square_queries < 1:
        raise SatError("batch_size and square_queries must be >= 1")
    suite = None if suite == "none" else suite
    sweep_values = parse_eps_list(sweep) if isinstance(sweep, str) else list(sweep or [])
    x, y = _check_inputs(x, y)
    fingerprint = images_fingerprint(x, y)
    check_budget(budget, norm, tuple(x.shape[1:]))
    if device is not None:
        model.to(resolve_device(device, option="device"))
    target = model_device(model)
    dtype = _floating_dtype(model)
    x, y = x.to(target, dtype), y.to(target)
    num_classes = _output_classes(model, x, y, num_classes)
    objects = resolve_attacks(suite, attacks, eps=budget, norm=norm, seed=seed)
    refuse_attacks_beyond_classes(
        objects,
        num_classes,
        "leave it out (e.g. --suite none --attack apgd_ce, or attacks=[...] from Python)",
    )
    torch.manual_seed(seed)
    if on_estimate is not None and len(y) >= MIN_IMAGES_TO_PROBE:
        estimate = estimate_cost(model, x, y, objects, eps=budget, norm=norm, batch_size=batch_size)
        if estimate is not None:
            on_estimate(estimate)
    started = time.perf_counter()
    report = evaluate_robustness(
        model, x, y, objects, batch_size=batch_size, eps=budget, norm=norm, progress=progress,
        return_examples=return_examples, per_attack_examples=per_attack_examples, cascade=cascade,
    )  # fmt: skip
    curve = (
        eps_sweep(model, x, y, objects, sweep_values, batch_size=batch_size, norm=norm, main=report)
        if sweep_values
        else None
    )
    results: list[CheckResult] = []
    if checks:
        with true_gradients():  # the checks probe the function the model computes
            results = run_checks(
                model, x, y, report, objects, eps=budget, norm=norm, num_classes=num_classes,
                seed=seed, batch_size=batch_size, square_queries=square_queries,
                sweep=None if curve is None else {e: v["robust_accuracy"] for e, v in curve.items()},
            )  # fmt: skip
    return Evaluation(
        report=report,
        checks=results,
        eps=budget,
        norm=norm,
        suite=suite,
        seed=seed,
        device=describe(target),
        precision=PRECISIONS.get(dtype, str(dtype)),
        attack_settings={label: outcome.settings for label, outcome in report.attacks.items()},
        sweep=curve,
        seconds=time.perf_counter() - started,
        plugins=_plugins_used(model, objects, checks),
        images_sha256=fingerprint,
    )


def images_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of the images (as float32) and labels (as int64), in order: which images a report is of."""
    digest = hashlib.sha256()
    digest.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _plugins_used(model: nn.Module, attacks: Mapping[str, Any], checks: bool) -> list[dict[str, Any]]:
    """Provenance of the attacks (from their classes), the Square check's and the model's plugins."""
    from sat_toolkit.plugins.provenance import attack_refs, describe_plugins, sat_config_plugin_refs

    refs = [ref for attack in attacks.values() for ref in attack_refs(attack)]
    if checks:
        refs.append(("attack", "square"))  # what run_checks builds for its gradient-free check
    config = getattr(model, "sat_config", None)
    if isinstance(config, Mapping):
        refs += sat_config_plugin_refs(config)
    return describe_plugins(refs)
