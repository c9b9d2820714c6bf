"""What a plugin class of each kind must look like, checked when the plugin is found.

A class that breaks its kind's contract is listed ``failed`` with the reason, and a recipe
naming it is refused while it is validated, instead of failing hours later inside a run.
These checks are static (attributes and signatures); what a plugin *does* is checked on
first use (an attack's result, see :mod:`sat_toolkit.attacks.checked`) and by the
behavioural conformance checks plugin authors run in their own tests
(:mod:`sat_toolkit.testing`).

The contract, per kind (CONTRIBUTING.md explains each with an example):

every kind
    a class; ``name`` in lower snake case; ``description`` a string and ``also_known_as``
    a tuple of strings if given; a constructor whose parameters can all be passed by
    keyword (no positional-only parameter, no ``*args``), because a recipe table becomes
    keyword arguments.
activation
    an ``nn.Module`` subclass with its own ``forward`` and a boolean ``smooth``.
attack
    ``perturb(model, x, y, *, eps=None)``; every constructor parameter has a default
    (evaluation suites and ``eval --attack NAME`` build attacks from their name alone;
    the toolkit passes ``eps``, ``norm`` and ``seed`` to constructors that take them);
    ``supported_norms`` None or a tuple of norm names.
schedule
    ``value(step, total_steps, base)``; ``targets`` a non-empty tuple of ``"lr"`` /
    ``"eps"`` if given.
model
    ``build(info, activation)``.
dataset
    ``info()`` and ``load(split)``.
objective
    ``adversarial_examples(model, x, y, attack, eps)`` (the attacker's phase) and
    ``loss(model, x, x_adv, y, *, label_smoothing=0.0)`` (the optimiser's); every
    constructor parameter has a default; ``uses_attack`` a bool if given.

Subclasses of the toolkit's bases (``Attack``, ``Schedule``, ``ModelBuilder``,
``DatasetSource``) must also implement what the base leaves open (``_perturb``,
``_value`` or ``_after_warmup``, ``params`` and ``build_body``, ``info`` and
``_load_store``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from sat_toolkit.params import default_problems
from sat_toolkit.plugins.specs import PluginKind

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
SCHEDULE_TARGETS = ("lr", "eps")
_EMPTY = inspect.Parameter.empty
#: Why a kind's constructor parameters all need defaults.
_BUILT_BY_NAME = {
    PluginKind.ATTACK: "an attack is built from its name alone in evaluation suites",
    PluginKind.OBJECTIVE: "an objective is built from its name alone (--set objective=NAME)",
}


def contract_problems(kind: PluginKind | str, cls: Any) -> list[str]:
    """Everything ``cls`` lacks to be a plugin of ``kind``, one short phrase each; empty if none."""
    kind = PluginKind(kind)
    if not isinstance(cls, type):
        return [f"is {type(cls).__name__} {cls!r}, not a class (register the class itself)"]
    problems = _name_problems(cls) + _constructor_problems(kind, cls)
    problems += _KIND_CHECKS[kind](cls)
    if not problems and inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        problems.append(f"does not implement {missing} (abstract in its base class)")
    return problems


def describe_violation(kind: PluginKind | str, cls: Any, problems: list[str]) -> str:
    """One line: ``attack class MIFGSM breaks the attack contract: has no method 'perturb' ...``."""
    kind = PluginKind(kind)
    what = getattr(cls, "__name__", repr(cls))
    return f"{kind.value} class {what} breaks the {kind.value} contract: " + "; ".join(problems)


# -- every kind ----------------------------------------------------------------------------
def _name_problems(cls: type) -> list[str]:
    problems = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"needs a class attribute 'name' in lower snake case, e.g. 'my_name' (got {name!r})")
    description = getattr(cls, "description", "")
    if not isinstance(description, str):
        problems.append(f"'description' must be a one-line string (got {type(description).__name__})")
    aliases = getattr(cls, "also_known_as", ())
    if not isinstance(aliases, tuple) or not all(isinstance(alias, str) for alias in aliases):
        problems.append(f"'also_known_as' must be a tuple of names, e.g. ('swish',) (got {aliases!r})")
    return problems


def constructor_signature(cls: type) -> inspect.Signature | None:
    """The constructor's signature; None for an ``nn.Module`` that keeps ``Module.__init__``."""
    from torch import nn

    if issubclass(cls, nn.Module) and cls.__init__ is nn.Module.__init__:
        return None
    try:
        return inspect.signature(cls)
    except (TypeError, ValueError):
        return None


def _constructor_problems(kind: PluginKind, cls: type) -> list[str]:
    signature = constructor_signature(cls)
    if signature is None:
        return []
    problems = []
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            problems.append(
                f"constructor parameter '{param.name}' is positional-only; recipes pass keywords, "
                "so drop the '/'"
            )
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            problems.append(f"constructor takes *{param.name}; recipes pass keywords only")
    problems += default_problems(cls)
    if kind in (PluginKind.ATTACK, PluginKind.OBJECTIVE):
        required = [
            p.name
            for p in signature.parameters.values()
            if p.default is _EMPTY and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if required:
            problems.append(
                f"constructor parameter '{required[0]}' has no default; {_BUILT_BY_NAME[kind]}, "
                "so give every parameter a default"
            )
    return problems


def _method(cls: type, name: str) -> Callable[..., Any] | None:
    method = getattr(cls, name, None)
    return method if callable(method) else None


def _accepts(cls: type, name: str, positional: int, keywords: tuple[str, ...] = ()) -> bool:
    """Whether method ``name`` of ``cls`` takes ``positional`` arguments (after ``self``) and ``keywords``."""
    method = getattr(cls, name)
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return True  # a builtin or C method: nothing to check
    params = list(signature.parameters.values())
    # A plain function looked up on the class still has ``self`` in front; a static or class
    # method does not.
    if not isinstance(inspect.getattr_static(cls, name), (staticmethod, classmethod)):
        params = params[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        positional_ok = True
    else:
        slots = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in params if p.default is _EMPTY and p.kind is not p.VAR_KEYWORD]
        positional_ok = len(slots) >= positional and len(required) <= positional + len(keywords)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return positional_ok and (var_kw or set(keywords) <= names)


def _needs(cls: type, name: str, positional: int, keywords: tuple[str, ...], shown: str) -> list[str]:
    method = _method(cls, name)
    if method is None:
        return [f"has no method {shown}"]
    if not _accepts(cls, name, positional, keywords):
        return [f"'{name}' must accept {shown}"]
    return []


def _overrides(cls: type, base: type, name: str) -> bool:
    """Whether ``cls`` replaces ``base``'s placeholder ``name`` (one that raises NotImplementedError)."""
    return getattr(cls, name) is not getattr(base, name)


# -- per kind ------------------------------------------------------------------------------
def _activation(cls: type) -> list[str]:
    from torch import nn

    if not issubclass(cls, nn.Module):
        return ["must be a torch.nn.Module subclass"]
    problems = []
    if cls.forward is nn.Module.forward:
        problems.append("has no forward(x) method")
    if not isinstance(getattr(cls, "smooth", None), bool):
        problems.append(
            "needs a class attribute 'smooth' = True or False (True when its gradient is continuous)"
        )
    return problems


def _attack(cls: type) -> list[str]:
    problems = _needs(cls, "perturb", 3, ("eps",), "perturb(model, x, y, *, eps=None)")
    norms = getattr(cls, "supported_norms", None)
    if norms is not None and (
        not isinstance(norms, tuple) or not norms or not all(isinstance(n, str) for n in norms)
    ):
        problems.append(f"'supported_norms' must be None or a tuple of norm names, got {norms!r}")
    return problems


def _schedule(cls: type) -> list[str]:
    from sat_toolkit.schedules.base import Schedule, WarmupSchedule

    problems = _needs(cls, "value", 3, (), "value(step, total_steps, base)")
    targets = getattr(cls, "targets", SCHEDULE_TARGETS)
    if (
        not isinstance(targets, tuple)
        or not targets
        or not all(isinstance(t, str) and t in SCHEDULE_TARGETS for t in targets)
    ):
        problems.append(f"'targets' must be a non-empty tuple of 'lr' and/or 'eps', got {targets!r}")
    if issubclass(cls, WarmupSchedule):
        if cls.value is WarmupSchedule.value and not _overrides(cls, WarmupSchedule, "_after_warmup"):
            problems.append("does not implement _after_warmup(step, total_steps, base, warmup)")
    elif (
        issubclass(cls, Schedule) and cls.value is Schedule.value and not _overrides(cls, Schedule, "_value")
    ):
        problems.append("does not implement _value(step, total_steps, base)")
    return problems


def _model(cls: type) -> list[str]:
    return _needs(cls, "build", 2, (), "build(info, activation)")


def _dataset(cls: type) -> list[str]:
    return _needs(cls, "info", 0, (), "info()") + _needs(cls, "load", 1, (), "load(split)")


def _objective(cls: type) -> list[str]:
    problems = _needs(
        cls, "loss", 4, ("label_smoothing",), "loss(model, x, x_adv, y, *, label_smoothing=0.0)"
    )
    problems += _needs(cls, "adversarial_examples", 5, (), "adversarial_examples(model, x, y, attack, eps)")
    if not isinstance(getattr(cls, "uses_attack", True), bool):
        problems.append("'uses_attack' must be True or False (False: the objective never calls the attack)")
    return problems


_KIND_CHECKS: dict[PluginKind, Callable[[type], list[str]]] = {
    PluginKind.ACTIVATION: _activation,
    PluginKind.ATTACK: _attack,
    PluginKind.SCHEDULE: _schedule,
    PluginKind.MODEL: _model,
    PluginKind.DATASET: _dataset,
    PluginKind.OBJECTIVE: _objective,
}
