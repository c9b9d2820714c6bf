"""Test helpers for plugin packages: a fake installed distribution and a conformance check per kind.

A plugin package should be able to test itself the way the core tests its own plugins,
without copying the core's test suite. Two tools make that possible:

* :func:`install_fake_distribution` (and the pytest fixture :func:`fake_distribution`, which
  a plugin's ``conftest.py`` imports) writes a real ``*.dist-info`` with a ``sat_toolkit``
  entry point, so discovery goes through ``importlib.metadata`` exactly as after
  ``pip install``: the way to test what users see (``ok``, ``failed``, ``shadowed``, ...).
* ``check_activation`` / ``check_attack`` / ``check_schedule`` / ``check_model`` /
  ``check_dataset`` / ``check_objective`` (or :func:`check_conformance`) build the class
  and exercise it the way the toolkit will: first the static contract that discovery enforces
  (:func:`sat_toolkit.plugins.contracts.contract_problems`), then behaviour, which only a
  run can show (an attack that leaves the eps-ball or the model in train mode, a schedule
  that keeps state). Each raises one ``AssertionError`` listing every problem found, so a
  plugin author fixes them in one go.

This is the only module of the toolkit that imports pytest, and only for the fixture: the
checks themselves work without it.
"""

from __future__ import annotations

import json
import math
import re
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sat_toolkit.data.checks import PREFLIGHT_ITEMS, split_problems
from sat_toolkit.errors import first_line
from sat_toolkit.plugins.contracts import constructor_signature, contract_problems
from sat_toolkit.plugins.specs import PluginKind

try:  # only the fixture needs pytest; the checks are plain functions
    import pytest
except ImportError:  # pragma: no cover - pytest is absent outside test environments
    pytest = None  # type: ignore[assignment]

__all__ = [
    "CHECK_EPS",
    "CHECK_INFO",
    "check_activation",
    "check_attack",
    "check_conformance",
    "check_dataset",
    "check_model",
    "check_objective",
    "check_schedule",
    "conformance_problems",
    "fake_distribution",
    "fake_module_name",
    "install_fake_distribution",
]

#: The budget :func:`check_attack` attacks with ([0, 1] pixel space, L-inf by default).
CHECK_EPS = 0.1
#: Float round-off allowed at the border of the eps-ball (the toolkit's own check uses the same).
BALL_SLACK = 1e-6
#: Steps of the run :func:`check_schedule` asks about, besides a one-step run.
SCHEDULE_STEPS = 50
#: The base value :func:`check_schedule` passes (a typical learning rate).
SCHEDULE_BASE = 0.1
#: How many problems of one sort are named before "..." (the message stays readable).
_SHOWN = 4


# -- a fake installed distribution ---------------------------------------------------------
def fake_module_name(dist_name: str) -> str:
    """The module :func:`install_fake_distribution` writes for ``dist_name``: ``my_acts_plugin``."""
    return re.sub(r"[-.]+", "_", dist_name) + "_plugin"


def install_fake_distribution(
    site_dir: str | Path,
    dist_name: str,
    module_source: str,
    *,
    version: str = "1.0",
    entry_point: str | None = None,
) -> Path:
    """Install ``module_source`` into ``site_dir`` as distribution ``dist_name``; returns its dist-info.

    Writes ``<dist>-<version>.dist-info/`` (``METADATA`` and an ``entry_points.txt`` whose
    ``[sat_toolkit]`` entry ``entry_point`` (default: ``dist_name``) names the module) and
    the module itself (:func:`fake_module_name`): what pip leaves behind, so the toolkit
    finds it through ``importlib.metadata``. ``site_dir`` must be on ``sys.path``, and the
    plugin host must be reset (:func:`sat_toolkit.plugins.reset_plugin_host`) before the
    next lookup; the :func:`fake_distribution` fixture does both.
    """
    import importlib

    site = Path(site_dir)
    site.mkdir(parents=True, exist_ok=True)
    module = fake_module_name(dist_name)
    (site / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{re.sub(r'[-.]+', '_', dist_name)}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[sat_toolkit]\n{entry_point or dist_name} = {module}\n")
    sys.modules.pop(module, None)  # a module of that name from an earlier test is stale
    importlib.invalidate_caches()  # the directory listing Python cached predates the new files
    return info


def _installed_plugin_distributions() -> list[str]:
    """The third-party distributions installed now that declare ``sat_toolkit`` entry points."""
    from importlib import metadata

    from sat_toolkit.plugins.manager import BUILTIN_DISTRIBUTION, normalise_distribution

    names = {
        normalise_distribution(ep.dist.metadata["Name"])
        for ep in metadata.entry_points(group="sat_toolkit")
        if ep.dist is not None
    }
    return sorted(names - {BUILTIN_DISTRIBUTION})


if pytest is not None:

    @pytest.fixture
    def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
        """``install(dist_name, module_source, *, version="1.0", entry_point=None) -> Path``.

        Each call installs a throw-away distribution (:func:`install_fake_distribution`)
        into a temporary directory put on ``sys.path`` for the test. The plugin host is
        reset before and after the test, and every third-party plugin package already
        installed in the environment is blocked for it (``SAT_TOOLKIT_DISABLE_PLUGINS``)
        unless a fake takes its name (and its place), so the test sees the built-ins and
        exactly what it installed, whatever else the developer's environment holds, and
        leaves nothing behind.
        """
        from sat_toolkit.plugins import DISABLE_ENV_VAR, reset_plugin_host

        site = tmp_path / "site"
        site.mkdir()
        monkeypatch.syspath_prepend(str(site))
        others = set(_installed_plugin_distributions())

        def block_others() -> None:
            if others:
                monkeypatch.setenv(DISABLE_ENV_VAR, ",".join(sorted(others)))
            else:
                monkeypatch.delenv(DISABLE_ENV_VAR, raising=False)

        block_others()
        modules: list[str] = []

        def install(
            dist_name: str, module_source: str, *, version: str = "1.0", entry_point: str | None = None
        ) -> Path:
            modules.append(fake_module_name(dist_name))
            # A fake named like an installed package stands in for it (it comes first on
            # sys.path), so that name is no longer blocked.
            from sat_toolkit.plugins.manager import normalise_distribution

            others.discard(normalise_distribution(dist_name))
            block_others()
            reset_plugin_host()
            return install_fake_distribution(
                site, dist_name, module_source, version=version, entry_point=entry_point
            )

        reset_plugin_host()
        yield install
        reset_plugin_host()
        for module in modules:
            sys.modules.pop(module, None)


# -- the checks ------------------------------------------------------------------------------
def check_conformance(kind: PluginKind | str, cls: Any, **params: Any) -> None:
    """Raise ``AssertionError`` listing every way ``cls`` fails to be a plugin of ``kind``.

    ``params`` are the keyword parameters the plugin is built with (as a recipe table
    would give them), plus what the per-kind function of ``kind`` takes besides: an
    attack's ``eps``, a model's ``info`` and ``activation``, a dataset's ``items``.
    """
    kind = PluginKind(kind)
    problems = conformance_problems(kind, cls, **params)
    if problems:
        what = getattr(cls, "__name__", repr(cls))
        listed = "\n".join(f"  - {p}" for p in problems)
        raise AssertionError(
            f"{kind.value} class {what} fails the sat-toolkit conformance check "
            f"({len(problems)} problem{'s' * (len(problems) > 1)}):\n{listed}"
        )


def conformance_problems(kind: PluginKind | str, cls: Any, **params: Any) -> list[str]:
    """What :func:`check_conformance` would list, one phrase per problem; empty when ``cls`` conforms.

    The static contract comes first; behaviour is only exercised once it holds (a class
    without ``perturb`` cannot be run).
    """
    kind = PluginKind(kind)
    problems = contract_problems(kind, cls) + _untyped_parameters(cls)
    if problems:
        return problems
    return _BEHAVIOUR[kind](cls, params)


def _untyped_parameters(cls: Any) -> list[str]:
    """Constructor parameters without a type: a recipe's value reaches them unchecked.

    Discovery lets such a class load (an older plugin keeps working); its author's tests
    say so, since ``weight=abc`` then passes validation and fails inside the plugin.
    """
    import inspect

    signature = constructor_signature(cls) if isinstance(cls, type) else None
    if signature is None:
        return []
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        f"constructor parameter '{p.name}' has no type annotation, so a recipe's value reaches it "
        f"unchecked; declare it (e.g. {p.name}: float = ..., or Annotated[float, Param(ge=0)])"
        for p in signature.parameters.values()
        if p.kind in named and p.annotation is inspect.Parameter.empty
    ]


def check_activation(cls: Any, **params: Any) -> None:
    """An activation: builds from ``params``, keeps shape and dtype, finite values and input
    gradients on a float32 batch spanning [-20, 20], deterministic, does not modify its
    input, and ``hparams()`` (where defined) rebuilds it."""
    check_conformance(PluginKind.ACTIVATION, cls, **params)


def check_attack(cls: Any, *, eps: float = CHECK_EPS, **params: Any) -> None:
    """An attack, on a tiny seeded model (1x8x8 images, BatchNorm, Dropout, 10 classes).

    ``eps`` is the budget: passed to the constructor when it takes ``eps`` (as evaluation
    suites do) and to every ``perturb`` call, once more at ``eps / 2`` to check that the
    call's budget overrides the attack's own (the training loop passes the scheduled eps
    this way). Checked: the result is an ``AttackResult`` (or a tensor) of detached,
    finite examples shaped like the input, inside [0, 1] and the eps-ball of the attack's
    ``norm`` (default ``"linf"``); the input batch, the model's parameters, buffers,
    train/eval flags and ``requires_grad`` are unchanged and no ``.grad`` is left; every
    forward pass ran inside ``attack_phase()``; with ``seed`` (given to constructors that
    take one, 0 unless ``params`` say) two fresh instances agree and torch's global RNG is
    untouched; without, two runs from the same ``torch.manual_seed`` agree.
    """
    check_conformance(PluginKind.ATTACK, cls, eps=eps, **params)


def check_objective(cls: Any, **params: Any) -> None:
    """A training objective, on the tiny seeded model with the built-in PGD-2 as the training attack.

    Checked: ``adversarial_examples`` returns None, an ``AttackResult`` or a tensor of
    detached examples inside [0, 1] and the attack's eps-ball; it leaves the model's
    state as it found it and runs every forward pass inside ``attack_phase()``; ``loss``
    returns an object with a finite scalar ``loss`` that backpropagates into the model's
    parameters and ``logits`` of shape [B, classes], computed outside ``attack_phase()``
    (the optimiser's phase); two runs after the same ``torch.manual_seed`` agree.
    """
    check_conformance(PluginKind.OBJECTIVE, cls, **params)


def check_schedule(cls: Any, **params: Any) -> None:
    """A schedule: ``value(step, total_steps, base)`` is a finite number >= 0 for every step
    of a 1-step and a 50-step run, pure (same arguments, same value, in any call order and
    on a fresh instance), and steps past the end return the value at the end."""
    check_conformance(PluginKind.SCHEDULE, cls, **params)


def check_model(cls: Any, *, info: Any = None, activation: Any = "silu", **params: Any) -> None:
    """A model: ``cls(**params).build(info, activation)`` gives an ``nn.Module`` that starts
    with ``Normalize(info.mean, info.std)``, maps ``[N, C, H, W]`` images in [0, 1] to
    finite ``[N, num_classes]`` logits with an input gradient, puts a fresh activation of
    the requested kind at each place, and carries a JSON-serialisable ``sat_config`` from
    which :func:`sat_toolkit.models.config.rebuild_model` rebuilds the same state-dict keys
    and shapes. ``info`` defaults to :data:`CHECK_INFO` (3 x 16 x 16, 3 classes)."""
    check_conformance(PluginKind.MODEL, cls, info=info, activation=activation, **params)


def check_dataset(cls: Any, *, items: int = PREFLIGHT_ITEMS, **params: Any) -> None:
    """A dataset: ``info()`` is a ``DatasetInfo``; ``load("train")`` and ``load("test")`` are
    non-empty, ``items`` items spread over each (the first and the last among them) are
    ``(float32 image of info().input_shape in [0, 1], int label in 0 .. num_classes - 1)``,
    and so is every label a split exposes as ``labels`` or ``targets``: what a training run
    checks before its first step (:mod:`sat_toolkit.data.checks`)."""
    check_conformance(PluginKind.DATASET, cls, items=items, **params)


# -- shared helpers ------------------------------------------------------------------------
def _describe(exc: BaseException) -> str:
    """What a plugin raised, as one line with its class (conformance reports list many)."""
    return first_line(exc, with_type=True)


def _names(names: list[str]) -> str:
    shown = ", ".join(n or "(the model itself)" for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _build(cls: type, params: Mapping[str, Any], problems: list[str]) -> Any:
    """``cls(**params)`` from values its declared schema accepts, or None with the problem recorded.

    The values go through :func:`sat_toolkit.params.check` first, as a recipe's do, so a
    check sees what the run would build (``"4/255"`` as a float) and a value the schema
    refuses is reported as such, not as whatever the constructor does with it.
    """
    from sat_toolkit.params import check

    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    typed, refused = check(cls, params)
    if refused:
        reasons = "; ".join(message if key is None else f"{key} {message}" for key, message in refused)
        problems.append(f"{cls.__name__}({shown}) is refused by its declared parameters: {reasons}")
        return None
    try:
        return cls(**typed)
    except Exception as exc:
        problems.append(f"{cls.__name__}({shown}) raised {_describe(exc)}")
        return None


def _takes(cls: type, name: str) -> bool:
    """Whether the constructor takes keyword ``name`` (the toolkit then supplies it)."""
    signature = constructor_signature(cls)
    if signature is None:
        return False
    params = signature.parameters.values()
    return name in signature.parameters or any(p.kind is p.VAR_KEYWORD for p in params)


def _rebuilds(obj: Any, cls: type, problems: list[str]) -> None:
    """``cls(**obj.hparams())`` builds and reports the same hparams (logs and checkpoints rely on it)."""
    hparams = getattr(obj, "hparams", None)
    if not callable(hparams):
        return
    try:
        values = dict(hparams())
        again = dict(cls(**values).hparams())
    except Exception as exc:
        problems.append(f"hparams() does not rebuild it: {cls.__name__}(**hparams()) raised {_describe(exc)}")
        return
    if again != values:
        problems.append(f"hparams() does not rebuild it: {values} gives an instance with hparams() {again}")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal, NaN matching NaN (a NaN is a problem of its own, not randomness)."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True)


# -- activation ------------------------------------------------------------------------------
def _activation_input() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=generator) * 3
    x.view(-1)[:7] = torch.tensor([-20.0, -5.0, -1.0, 0.0, 1.0, 5.0, 20.0])
    return x


def _activation_problems(cls: type, params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    module = _build(cls, params, problems)
    if module is None:
        return problems
    x = _activation_input()
    leaf = x.clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            given = leaf.clone()  # not a leaf, so an in-place forward runs and shows below
            out = module(given)
    except Exception as exc:
        return [*problems, f"forward raised {_describe(exc)} on a float32 batch of shape {tuple(x.shape)}"]
    if not isinstance(out, torch.Tensor):
        return [*problems, f"forward returned {type(out).__name__}, not a tensor"]
    if not torch.equal(given.detach(), x):
        problems.append("forward modifies its input in place; return a new tensor (attacks need the input)")
    if out.shape != x.shape:
        problems.append(
            f"forward changes the shape {tuple(x.shape)} -> {tuple(out.shape)}; an activation is "
            "element-wise and must keep the shape"
        )
        return problems
    if out.dtype != x.dtype:
        problems.append(f"forward turns float32 input into {out.dtype}; keep the input's dtype")
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        problems.append(f"forward gives {bad} non-finite values (NaN or inf) on inputs in [-20, 20]")
    if out.grad_fn is None:
        problems.append("the output has no gradient w.r.t. the input (no grad_fn); attacks need one")
    else:
        (grad,) = torch.autograd.grad(out.sum(), leaf, allow_unused=True)
        bad = x.numel() if grad is None else int((~torch.isfinite(grad)).sum())
        if bad:
            problems.append(f"backward gives {bad} non-finite input gradients on inputs in [-20, 20]")
    with torch.no_grad():
        again = module(x.clone())
    if isinstance(again, torch.Tensor) and not _same(again, out.detach()):
        problems.append("is not deterministic: two forward passes on the same input differ")
    _rebuilds(module, cls, problems)
    return problems


# -- attack ----------------------------------------------------------------------------------
_CLASSES = 10
_BATCH = 8


class _PhaseProbe(nn.Module):
    """Identity that records the phase of every forward pass (attacks must run in ``attack_phase``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from sat_toolkit.phase import current_phase

        self.seen.append(current_phase().value)
        return x


def _tiny_model() -> nn.Sequential:
    """A seeded classifier of 1x8x8 images whose mode changes are visible.

    Left as training leaves it (train mode, parameters requiring grad), with two markers:
    the head is in eval mode and the first bias is frozen, so an attack that calls
    ``model.train()``, ``model.eval()`` or ``requires_grad_(True)`` on everything shows.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.SiLU(),
            _PhaseProbe(),
            nn.Flatten(),
            nn.Dropout(0.5),
            nn.Linear(4 * 8 * 8, _CLASSES),
        )
    model.train()
    model[-1].eval()
    model[0].bias.requires_grad_(False)
    return model


def _attack_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] with pixels at exactly 0 and 1 (an attack that forgets to clamp shows)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(_BATCH, 1, 8, 8, generator=generator)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0
    return x, torch.randint(_CLASSES, (_BATCH,), generator=generator)


def _model_state(model: nn.Module) -> dict[str, dict[str, Any]]:
    return {
        "parameters": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def _state_problems(model: nn.Module, before: dict[str, dict[str, Any]]) -> list[str]:
    after = _model_state(model)
    problems = []
    changed = [n for n, t in before["parameters"].items() if not torch.equal(t, after["parameters"][n])]
    if changed:
        problems.append(f"perturb changed the model's parameters ({_names(changed)}); never update weights")
    changed = [n for n, t in before["buffers"].items() if not torch.equal(t, after["buffers"][n])]
    if changed:
        problems.append(
            f"perturb changed the model's buffers ({_names(changed)}), e.g. BatchNorm statistics; "
            "attack in eval mode inside sat_toolkit.attacks.state.preserve_model_state (Attack.perturb does)"
        )
    changed = [n for n, flag in before["modes"].items() if after["modes"][n] != flag]
    if changed:
        problems.append(
            f"perturb left the train/eval mode of module(s) {_names(changed)} changed; restore it "
            "(subclass sat_toolkit.attacks.Attack, or use sat_toolkit.attacks.state.preserve_model_state)"
        )
    changed = [n for n, flag in before["requires_grad"].items() if after["requires_grad"][n] != flag]
    if changed:
        problems.append(f"perturb changed requires_grad of {_names(changed)}; restore it")
    graded = [n for n, p in model.named_parameters() if p.grad is not None]
    if graded:
        problems.append(
            f"perturb left .grad on parameters ({_names(graded)}); take input gradients with "
            "torch.autograd.grad(loss, x_adv), not loss.backward()"
        )
    seen = model[3].seen
    outside = sum(phase != "attack" for phase in seen)
    if outside:
        problems.append(
            f"{outside} of {len(seen)} forward passes ran outside sat_toolkit.phase.attack_phase(); "
            "enter it around the attack (Attack.perturb does)"
        )
    return problems


def _perturbation_size(delta: torch.Tensor, norm: str) -> float | None:
    flat = delta.flatten(1)
    sizes = {
        "linf": lambda: flat.abs().amax(1),
        "l2": lambda: flat.norm(dim=1),
        "l1": lambda: flat.abs().sum(1),
    }
    return float(sizes[norm]().max()) if norm in sizes else None


def _examples_problems(
    result: Any, x: torch.Tensor, eps: float, norm: str, call: str
) -> tuple[torch.Tensor | None, list[str]]:
    """(x_adv or None, problems) for what ``perturb`` returned."""
    from sat_toolkit.attacks.projections import PROJECTIONS
    from sat_toolkit.attacks.result import AttackResult

    if isinstance(result, AttackResult):
        x_adv = result.x_adv
    elif isinstance(result, torch.Tensor):
        x_adv = result
    else:
        hint = "return sat_toolkit.attacks.AttackResult(x_adv=...) or the adversarial tensor"
        return None, [f"{call} returned {type(result).__name__}; {hint}"]
    if not isinstance(x_adv, torch.Tensor) or not x_adv.is_floating_point():
        what = type(x_adv).__name__ if not isinstance(x_adv, torch.Tensor) else x_adv.dtype
        return None, [f"{call} returned x_adv of {what}; x_adv must be a floating-point tensor of images"]
    if x_adv.shape != x.shape:
        shapes = f"{tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}"
        return None, [f"{call} returned x_adv of shape {shapes}; return one example per input"]
    problems = []
    if x_adv.requires_grad:
        problems.append(f"{call} returned x_adv attached to an autograd graph; return x_adv.detach()")
    x_adv = x_adv.detach()
    bad = int((~torch.isfinite(x_adv)).sum())
    if bad:
        return x_adv, [*problems, f"{call} returned {bad} non-finite values (NaN or inf) in x_adv"]
    low, high = float(x_adv.min()), float(x_adv.max())
    if low < 0 or high > 1:
        problems.append(
            f"{call} returned x_adv outside [0, 1] (min {low:.4g}, max {high:.4g}); clamp it to [0, 1]"
        )
    try:
        projection = PROJECTIONS.get(norm)(x, eps)
    except Exception as exc:
        return x_adv, [
            *problems,
            f"norm {norm!r} has no projection to check the eps-ball with: {_describe(exc)}",
        ]
    boxed = x_adv.clamp(0.0, 1.0)
    moved = float((projection(boxed.clone()) - boxed).abs().max())
    if moved > BALL_SLACK:
        size = _perturbation_size(boxed - x, norm)
        largest = (
            f"largest perturbation {size:.4g}" if size is not None else f"projection moves it by {moved:.4g}"
        )
        problems.append(
            f"{call} returned x_adv outside the {norm} eps-ball ({largest}, eps {eps:g}); project every "
            "iterate onto the ball (sat_toolkit.attacks.projections.PROJECTIONS.get(norm)(x, eps))"
        )
    if isinstance(result, AttackResult):
        for field in ("zero_grad", "success", "loss"):
            value = getattr(result, field)
            if value is not None and (not isinstance(value, torch.Tensor) or value.shape != (len(x),)):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                problems.append(
                    f"AttackResult.{field} must be None or one value per sample [{len(x)}], got {shape}"
                )
    return x_adv, problems


def _attack_problems(cls: type, params: Mapping[str, Any]) -> list[str]:
    params = dict(params)
    eps = float(params.pop("eps", CHECK_EPS))
    built = dict(params)
    if _takes(cls, "eps"):
        built.setdefault("eps", eps)
    seeded = _takes(cls, "seed")
    if seeded:
        built.setdefault("seed", 0)
    with torch.random.fork_rng(devices=[]):
        return _run_attack_checks(cls, built, eps, seeded)


def _run_attack_checks(cls: type, built: Mapping[str, Any], eps: float, seeded: bool) -> list[str]:
    problems: list[str] = []
    attack = _build(cls, built, problems)
    if attack is None:
        return problems
    norm = getattr(attack, "norm", None)
    norm = norm if isinstance(norm, str) else str(built.get("norm", "linf"))
    x, y = _attack_batch()

    def run(instance: Any, budget: float) -> tuple[Any, nn.Module, str | None]:
        model = _tiny_model()
        try:
            return instance.perturb(model, x, y, eps=budget), model, None
        except Exception as exc:
            return None, model, f"perturb(model, x, y, eps={budget:g}) raised {_describe(exc)}"

    clean = x.clone()
    model = _tiny_model()
    before = _model_state(model)
    torch.manual_seed(0)
    try:
        result = attack.perturb(model, x, y, eps=eps)
    except Exception as exc:
        return [*problems, f"perturb(model, x, y, eps={eps:g}) raised {_describe(exc)}"]
    call = f"perturb(model, x, y, eps={eps:g})"
    x_adv, found = _examples_problems(result, clean, eps, norm, call)
    problems += found
    if not torch.equal(x, clean):
        problems.append(
            "perturb modified the input batch x in place; work on a copy (x is the training batch)"
        )
        x.copy_(clean)
    problems += _state_problems(model, before)
    if x_adv is None or found:
        return problems
    _rebuilds(attack, cls, problems)

    half = eps / 2
    result, _, error = run(attack, half)
    if error:
        return [*problems, error]
    _, found = _examples_problems(result, clean, half, norm, f"perturb(model, x, y, eps={half:g})")
    if found:
        problems.append(
            f"{found[0]} (the attack was built with eps={eps:g}): perturb's eps must override the attack's "
            "own budget for the call; the training loop passes the scheduled eps this way"
        )

    if seeded:
        seed = built.get("seed")
        first, second = _build(cls, built, problems), _build(cls, built, problems)
        if first is None or second is None:
            return problems
        state = torch.get_rng_state()
        one, _, error = run(first, eps)
        if error is None and not torch.equal(torch.get_rng_state(), state):
            problems.append(
                f"built with seed={seed}, perturb still drew from torch's global random state; draw "
                "from self.generator(x.device) (sat_toolkit.attacks.Attack) or a torch.Generator of your own"
            )
        two, _, error2 = run(second, eps)
        if error or error2:
            return [*problems, error or error2]
        if not torch.equal(_x_adv(one), _x_adv(two)):
            problems.append(
                f"two instances built with seed={seed} gave different x_adv; seed every random draw "
                "(self.generator(x.device) in sat_toolkit.attacks.Attack)"
            )
    else:
        torch.manual_seed(0)
        one, _, error = run(attack, eps)
        torch.manual_seed(0)
        two, _, error2 = run(attack, eps)
        if error or error2:
            return [*problems, error or error2]
        if not torch.equal(_x_adv(one), _x_adv(two)):
            problems.append(
                "two runs after the same torch.manual_seed gave different x_adv; the training loop "
                "reseeds torch before every batch and relies on attacks being reproducible"
            )
    return problems


def _x_adv(result: Any) -> torch.Tensor:
    return (result if isinstance(result, torch.Tensor) else result.x_adv).detach()


# -- schedule --------------------------------------------------------------------------------
def _schedule_problems(cls: type, params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    schedule = _build(cls, params, problems)
    if schedule is None:
        return problems
    for total in (1, SCHEDULE_STEPS):
        problems += _schedule_run_problems(schedule, cls(**params), total)
        if problems:
            return problems
    _rebuilds(schedule, cls, problems)
    return problems


def _schedule_run_problems(schedule: Any, fresh: Any, total: int) -> list[str]:
    """Problems of ``schedule`` over a ``total``-step run; ``fresh`` is a second, unused instance."""
    steps = range(total + 1)

    def call(step: object) -> str:
        return f"value({step}, {total}, {SCHEDULE_BASE})"

    try:
        values = [schedule.value(step, total, SCHEDULE_BASE) for step in steps]
        backwards = [schedule.value(step, total, SCHEDULE_BASE) for step in reversed(steps)][::-1]
        again = [fresh.value(step, total, SCHEDULE_BASE) for step in steps]
        past = [schedule.value(total + extra, total, SCHEDULE_BASE) for extra in (1, 10, 1000)]
    except Exception as exc:
        return [f"{call('step')} raised {_describe(exc)}"]
    wrong = next((s for s in steps if not _finite_number(values[s])), None)
    if wrong is not None:
        return [f"{call(wrong)} returned {values[wrong]!r}; return a finite number"]
    problems = []
    negative = next((s for s in steps if values[s] < 0), None)
    if negative is not None:
        problems.append(f"{call(negative)} returned {values[negative]!r}; an lr or eps is never negative")
    impure = next((s for s in steps if values[s] != backwards[s] or values[s] != again[s]), None)
    if impure is not None:
        problems.append(
            f"is not pure: {call(impure)} depends on earlier calls; compute it from (step, total_steps, "
            "base) alone (a resumed run restores only the step)"
        )
    if impure is None and any(value != values[-1] for value in past):
        problems.append(
            f"steps past the end must return the value at the end: {call(total)} = {values[-1]!r} "
            f"but {call(total + 1)} = {past[0]!r}"
        )
    return problems


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- model -----------------------------------------------------------------------------------
def _check_info() -> Any:
    from sat_toolkit.data.info import DatasetInfo

    return DatasetInfo(
        num_classes=3, channels=3, image_size=(16, 16), mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3)
    )


CHECK_INFO = _check_info()


def _model_problems(cls: type, params: Mapping[str, Any]) -> list[str]:
    from sat_toolkit.activations.factory import create_activation
    from sat_toolkit.models.normalize import Normalize

    params = dict(params)
    info = params.pop("info", None) or CHECK_INFO
    activation = params.pop("activation", "silu")
    problems: list[str] = []
    builder = _build(cls, params, problems)
    if builder is None:
        return problems
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            model = builder.build(info, activation)
        except Exception as exc:
            return [*problems, f"build(info, {activation!r}) raised {_describe(exc)}"]
        if not isinstance(model, nn.Module):
            return [*problems, f"build() returned {type(model).__name__}, not an nn.Module"]
        problems += _model_forward_problems(model, info)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    if not any(
        isinstance(m, Normalize)
        and torch.allclose(m.mean.float(), mean)
        and torch.allclose(m.std.float(), std)
        for m in model.modules()
    ):
        problems.append(
            "has no Normalize layer with the dataset's mean and std; start the model with "
            "sat_toolkit.models.Normalize(info.mean, info.std) (ModelBuilder.build does): models take "
            "[0, 1] images"
        )
    kind = type(create_activation(activation))
    places = [id(m) for _, m in model.named_modules(remove_duplicate=False) if isinstance(m, kind)]
    if not places:
        problems.append(
            f"contains no {kind.__name__} although built with activation {activation!r}; put "
            "create_activation(activation) at each place the network has an activation"
        )
    elif len(set(places)) < len(places):
        problems.append(
            f"shares one {kind.__name__} instance between several places; build a fresh one for each "
            "(a learnable activation would otherwise share its parameters)"
        )
    problems += _sat_config_problems(cls, model)
    return problems


def _model_forward_problems(model: nn.Module, info: Any) -> list[str]:
    x = torch.rand(2, *info.input_shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    shape = f"[2, {', '.join(map(str, info.input_shape))}]"
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
    except Exception as exc:
        return [f"forward on {shape} images raised {_describe(exc)}"]
    if not isinstance(logits, torch.Tensor) or logits.shape != (2, info.num_classes):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        return [
            f"maps {shape} images to {got}; expected [2, {info.num_classes}] logits (num_classes from info)"
        ]
    if not bool(torch.isfinite(logits).all()):
        return ["gives non-finite logits on images in [0, 1]"]
    if logits.grad_fn is None:
        return ["the logits have no gradient w.r.t. the input; attacks need one"]
    (grad,) = torch.autograd.grad(logits.sum(), x, allow_unused=True)
    if grad is None or not bool(torch.isfinite(grad).all()):
        return ["gives no finite input gradient; attacks need one"]
    return []


def _sat_config_problems(cls: type, model: nn.Module) -> list[str]:
    from sat_toolkit.models.config import rebuild_model

    config = getattr(model, "sat_config", None)
    if not isinstance(config, dict):
        return [
            "the built model has no sat_config dict; set it with sat_toolkit.models.config.make_sat_config"
        ]
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        return [f"sat_config is not JSON-serialisable ({exc}); it is saved in model.safetensors' metadata"]
    registered = _registered(PluginKind.MODEL, config.get("model", {}).get("name"))
    if registered is not None and registered is not cls:
        return [
            f"sat_config names model {config['model']['name']!r}, which the toolkit resolves to "
            f"{registered.__name__}, not {cls.__name__}: a saved model would be rebuilt with another class"
        ]
    try:
        if registered is cls:
            rebuilt = rebuild_model(config)
        else:  # not installed (a unit test of an uninstalled package): rebuild the same way by hand
            rebuilt = _rebuild_unregistered(cls, config)
    except Exception as exc:
        return [f"rebuild_model(sat_config) raised {_describe(exc)}"]
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        differ = sorted(set(want) ^ set(got)) + sorted(k for k in set(want) & set(got) if want[k] != got[k])
        return [f"rebuild_model(sat_config) gives other state-dict keys or shapes ({_names(differ)})"]
    return []


def _rebuild_unregistered(cls: type, config: Mapping[str, Any]) -> nn.Module:
    from sat_toolkit.data.info import DatasetInfo

    params = {k: v for k, v in config["model"].items() if k != "name"}
    return cls(**params).build(DatasetInfo.from_dict(config["data_info"]), config["activation"])


def _registered(kind: PluginKind, name: Any) -> type | None:
    """The class the plugin host resolves ``name`` to, or None when nothing answers to it."""
    from sat_toolkit.plugins import get_plugin_host

    if not isinstance(name, str):
        return None
    try:
        return get_plugin_host().get(kind, name)
    except Exception:
        return None


# -- dataset ---------------------------------------------------------------------------------
def _dataset_problems(cls: type, params: Mapping[str, Any]) -> list[str]:
    from sat_toolkit.data.info import DatasetInfo

    params = dict(params)
    items = int(params.pop("items", PREFLIGHT_ITEMS))
    problems: list[str] = []
    source = _build(cls, params, problems)
    if source is None:
        return problems
    try:
        info = source.info()
    except Exception as exc:
        return [*problems, f"info() raised {_describe(exc)}"]
    if not isinstance(info, DatasetInfo):
        return [
            *problems,
            f"info() returned {type(info).__name__}; return a sat_toolkit.data.info.DatasetInfo",
        ]
    for split in ("train", "test"):
        try:
            dataset = source.load(split)
        except Exception as exc:
            problems.append(f"load({split!r}) raised {_describe(exc)}")
            continue
        problems += split_problems(dataset, info, f"load({split!r})", items)
    return problems


# -- objective -------------------------------------------------------------------------------
def _objective_problems(cls: type, params: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    objective = _build(cls, params, problems)
    if objective is None:
        return problems
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        first, problems = _objective_step(objective, problems)
        if first is None or problems:
            return problems
        torch.manual_seed(0)
        second, problems = _objective_step(objective, problems)
    if second is not None and not torch.equal(first, second):
        problems.append(
            "two steps after the same torch.manual_seed gave different losses; the training loop "
            "reseeds torch before every batch and relies on each step being reproducible"
        )
    return problems


def _objective_step(objective: Any, problems: list[str]) -> tuple[torch.Tensor | None, list[str]]:
    """One attacker phase and one optimiser phase on the tiny model; (the loss, problems)."""
    from sat_toolkit.attacks import PGD
    from sat_toolkit.objectives.base import loss_problem

    attack = PGD(eps=CHECK_EPS, steps=2, random_start_fraction=1.0)
    x, y = _attack_batch()
    model = _tiny_model()
    before = _model_state(model)
    call = f"adversarial_examples(model, x, y, attack, eps={CHECK_EPS:g})"
    try:
        result = objective.adversarial_examples(model, x, y, attack, CHECK_EPS)
    except Exception as exc:
        return None, [*problems, f"{call} raised {_describe(exc)}"]
    x_adv = None
    if result is not None:
        x_adv, found = _examples_problems(result, x, CHECK_EPS, "linf", call)
        problems = problems + [p.replace("perturb", "adversarial_examples") for p in found]
    problems = problems + [
        p.replace("perturb", "adversarial_examples") for p in _state_problems(model, before)
    ]
    if problems:
        return None, problems
    probe = model[3]
    probe.seen.clear()
    try:
        outcome = objective.loss(model, x, x_adv, y, label_smoothing=0.0)
    except Exception as exc:
        return None, [*problems, f"loss(model, x, x_adv, y, label_smoothing=0.0) raised {_describe(exc)}"]
    wrong = loss_problem(outcome, len(x), _CLASSES)
    if wrong:
        return None, [*problems, wrong]
    loss = outcome.loss
    if not torch.isfinite(loss):
        problems.append(f"loss(...) is not finite ({float(loss)}) on a healthy model")
    if "attack" in probe.seen:
        problems.append(
            "loss(...) ran a forward pass inside attack_phase(); the outer loss belongs to the optimiser "
            "(do the inner maximisation in adversarial_examples)"
        )
    if not loss.requires_grad:
        return None, [*problems, "loss(...) has no gradient; compute it from model(...) without detaching"]
    loss.backward()
    if all(p.grad is None or not p.grad.any() for p in model.parameters() if p.requires_grad):
        problems.append("loss(...) does not reach the model's parameters; compute it from model(...)")
    return loss.detach(), problems


_BEHAVIOUR: dict[PluginKind, Callable[[type, Mapping[str, Any]], list[str]]] = {
    PluginKind.ACTIVATION: _activation_problems,
    PluginKind.ATTACK: _attack_problems,
    PluginKind.SCHEDULE: _schedule_problems,
    PluginKind.MODEL: _model_problems,
    PluginKind.DATASET: _dataset_problems,
    PluginKind.OBJECTIVE: _objective_problems,
}
