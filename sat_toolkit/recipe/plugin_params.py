"""Validate a plugin section (``name`` + keyword parameters) without building heavy objects.

The plugin class is looked up through the plugin host, and its parameters are checked
against the constructor's signature: unknown names (with the closest valid one), missing
required ones, and types where the constructor is annotated. A plugin class that knows
better defines ``validate_params(params) -> None`` (raising ``ValueError``/``SatError``)
and is then trusted instead of the signature. Nothing is instantiated except activations,
schedules, attacks and objectives, which are cheap and check their own ranges on
construction; models and datasets (weights, downloads) never are.

What the engine decides itself (a model's classes and activation, an attack's model)
reaches plugins through their methods (``build(info, activation)``, ``perturb(model,
...)``), never through constructor parameters, so every constructor parameter is the
recipe's. Defaults of ``None`` are not written into the resolved recipe (TOML has no
null); leaving the key out keeps meaning "the plugin's default".
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.recipe.coerce import Invalid, coerce, is_known, toml_type
from sat_toolkit.recipe.errors import Problems, join
from sat_toolkit.recipe.numbers import is_fraction, parse_number
from sat_toolkit.recipe.schema import MAX_SEED  # one bound for every seed

# Ranges for well-known parameter names, checked whatever plugin declares them. The upper
# bounds on counts are far beyond any published protocol (APGD's longest runs are a few
# thousand steps): a larger value is a typo that would otherwise run for days. eps has a
# norm-dependent upper bound, see :func:`eps_limit`.
PARAM_BOUNDS: dict[str, dict[str, dict[str, float]]] = {
    "attack": {
        "eps": {"ge": 0},
        "step_size": {"ge": 0},
        "steps": {"ge": 1, "le": 100_000},
        "restarts": {"ge": 1, "le": 10_000},
        "random_start_fraction": {"ge": 0, "le": 1},
        "seed": {"ge": 0, "le": MAX_SEED},
    },
    "dataset": {"limit_train": {"ge": 1}, "limit_test": {"ge": 1}},
}

# Parameters that name a local file or directory, checked to exist before anything is built.
_LOCAL_PATHS: dict[str, dict[str, tuple[str, str]]] = {
    "dataset": {"path": ("the data", "DIR")},
    "model": {"init_from": ("a .safetensors weights file", "FILE")},
}

# Constructing these is cheap (no data, no weights) and runs their own range checks, which
# know more than a signature does (an attack's valid norms and losses, a schedule's order
# of milestones). Models and datasets are never built here.
_BUILD_TO_VALIDATE = frozenset({"activation", "schedule", "attack", "objective"})


def check_bounds(value: Any, bounds: Mapping[str, float]) -> str | None:
    """``must be >= 0, got -0.1`` when a number falls outside ``bounds``; else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    tests = {
        "ge": (">=", lambda b: value >= b),
        "gt": (">", lambda b: value > b),
        "le": ("<=", lambda b: value <= b),
        "lt": ("<", lambda b: value < b),
    }
    for key, bound in bounds.items():
        sign, holds = tests[key]
        if not holds(bound):
            shown = str(int(bound)) if float(bound).is_integer() else f"{bound:g}"
            return f"must be {sign} {shown}, got {value!r}"
    return None


def eps_limit(norm: Any, input_shape: tuple[int, ...] | None) -> float | None:
    """The largest budget that means anything in [0, 1] pixel space; ``None`` when unknown.

    Under L-inf a budget of 1 already lets every pixel go anywhere, so more is a unit
    mistake (``8`` meant as ``8/255``). Under L2 (and L1) the farthest two images can be
    apart is sqrt(C*H*W) (C*H*W), known only when the dataset fixes its image shape.
    """
    if norm == "linf":
        return 1.0
    if input_shape and norm in ("l2", "l1"):
        size = math.prod(input_shape)
        return math.sqrt(size) if norm == "l2" else float(size)
    return None


def _check_eps(
    resolved: Mapping[str, Any],
    signature: Mapping[str, inspect.Parameter] | None,
    input_shape: tuple[int, ...] | None,
    path: str,
    problems: Problems,
) -> None:
    """Refuse an attack's eps above :func:`eps_limit` for the attack's norm."""
    eps = resolved.get("eps")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        return
    norm = resolved.get("norm")
    if norm is None and signature is not None and "norm" in signature:
        norm = signature["norm"].default
    limit = eps_limit(norm, input_shape)
    if limit is None or eps <= limit:
        return
    if norm == "linf":
        hint = "budgets are in [0, 1] pixel space" + (
            f': for {eps:g}/255 write eps = "{eps:g}/255"' if eps <= 255 else ""
        )
    else:
        shape = "x".join(str(n) for n in input_shape or ())
        hint = f"no two {shape} images in [0, 1] are farther apart under {norm}"
    problems.add(join(path, "eps"), f"must be <= {limit:g} under {norm}, got {eps:g} ({hint})")


def _toml_default(value: Any) -> bool:
    """Whether a constructor default can be written into the resolved recipe."""
    if isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_toml_default(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _toml_default(v) for k, v in value.items())
    return False


def _parameters(cls: type) -> tuple[dict[str, inspect.Parameter] | None, bool, dict[str, Any]]:
    """(keyword parameters or None if uninspectable, takes **kwargs, type hints)."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return None, True, {}
    params = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    return params, var_kw, _type_hints(cls)


def _type_hints(cls: type) -> dict[str, Any]:
    """Every constructor annotation, resolved: the class's own over its bases'.

    A subclass may declare only its own parameters and pass the rest on (``**threat``, see
    ``Attack.__init_subclass__``); those keep their annotations in the base that declares them.
    """
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            hints.update(typing.get_type_hints(init))
        except Exception:  # an annotation that does not resolve only costs us the type check
            continue
    hints.pop("return", None)
    return hints


def _message_path(path: str, params: Iterable[str], name: str, message: str) -> tuple[str, str]:
    """Attribute a constructor's complaint to a key when it names one.

    ``"alpha must be > 0"`` and ``"smoothrelu: alpha must be > 0"`` become
    ``(path.alpha, "must be > 0")``; a message quoting exactly one parameter
    (``"attack parameter 'norm' must be ..."``) is filed under ``path.norm`` as is.
    """
    params = list(params)
    text = message.removeprefix(f"{name}: ")
    first, _, rest = text.partition(" ")
    if first in params and rest:
        return join(path, first), rest
    quoted = [key for key in params if f"'{key}'" in message]
    if len(quoted) == 1:
        return join(path, quoted[0]), message
    return path, message


def check_plugin(
    kind: str,
    raw_name: Any,
    params: Mapping[str, Any],
    path: str,
    problems: Problems,
    *,
    host: Any,
    reserved: Iterable[str] = (),
    inherit: Mapping[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> tuple[str, dict[str, Any]] | None:
    """Validate one plugin section; returns ``(name, resolved params)`` or ``None`` on problems.

    ``reserved`` are the section's own keys (offered as suggestions for typos);
    ``inherit`` supplies values for parameters the plugin takes but the recipe left out
    (evaluation attacks inherit the training epsilon this way); ``input_shape`` is the
    dataset's ``(C, H, W)`` where known, which bounds an L2 attack's eps.
    """
    before = len(problems)
    if raw_name is None:
        problems.add(join(path, "name"), f"required: which {kind} to use ({_installed(host, kind)})")
        return None
    if not isinstance(raw_name, str):
        problems.add(join(path, "name"), f"expected a string, got {toml_type(raw_name)}")
        return None
    try:
        cls = host.get(kind, raw_name)
    except SatError as exc:
        problems.add(join(path, "name"), exc.message)
        return None

    signature, var_kw, hints = _parameters(cls)
    resolved: dict[str, Any] = {}
    for key, value in params.items():
        hint = hints.get(key, Any)
        try:
            resolved[key] = coerce(value, hint)
        except Invalid as exc:
            problems.add(join(path, key), str(exc))
    for key, value in (inherit or {}).items():
        if signature is not None and key in signature and key not in params:
            resolved[key] = value

    hook = getattr(cls, "validate_params", None)
    if callable(hook):
        if len(problems) == before:
            try:
                hook(dict(resolved))
            except SatError as exc:
                problems.add(path, exc.message)
            except Exception as exc:
                problems.add(path, str(exc) or type(exc).__name__)
    elif signature is not None:
        _check_signature(kind, raw_name, resolved, signature, var_kw, path, problems, reserved)

    for key, bounds in PARAM_BOUNDS.get(kind, {}).items():
        value = resolved.get(key)
        if key in params and (isinstance(value, bool) or not isinstance(value, (int, float))):
            if not any(p.path == join(path, key) for p in problems[before:]):
                problems.add(join(path, key), f"expected a number, got {toml_type(value)}")
            continue
        message = check_bounds(value, bounds)
        if message:
            problems.add(join(path, key), message)
    if kind == "attack" and not any(p.path == join(path, "eps") for p in problems[before:]):
        _check_eps(resolved, signature, input_shape, path, problems)
    for key, (what, placeholder) in _LOCAL_PATHS.get(kind, {}).items():
        value = resolved.get(key)
        if isinstance(value, str) and not Path(value).expanduser().exists():
            problems.add(
                join(path, key),
                f"no such file or directory: '{value}' "
                f"(point it at {what}: --set {join(path, key)}={placeholder})",
            )

    if signature is not None:
        _fill_defaults(kind, resolved, signature, hints)
        order = {key: index for index, key in enumerate(signature)}
        resolved = dict(sorted(resolved.items(), key=lambda item: order.get(item[0], len(order))))
    if len(problems) == before and kind in _BUILD_TO_VALIDATE and _complete(signature, resolved):
        try:
            cls(**resolved)
        except SatError as exc:
            problems.add(*_message_path(path, resolved, raw_name, exc.message))
        except (ValueError, TypeError) as exc:
            problems.add(*_message_path(path, resolved, raw_name, str(exc)))
        except Exception as exc:  # a plugin bug still deserves one line naming the section
            problems.add(path, f"{kind} '{raw_name}' failed to build: {type(exc).__name__}: {exc}")
    if len(problems) > before:
        return None
    # Unresolved fraction strings (plugins that accept **kwargs) still become floats; each
    # one already went through coerce, so a bad one ("4/0") is a problem reported above.
    return raw_name, {k: parse_number(v) if is_fraction(v) else v for k, v in resolved.items()}


def _complete(signature: Mapping[str, inspect.Parameter] | None, resolved: Mapping[str, Any]) -> bool:
    """Whether every required parameter is known now (not left for the engine to supply)."""
    if signature is None:
        return True
    return all(p.default is not inspect.Parameter.empty or key in resolved for key, p in signature.items())


def _check_signature(
    kind: str,
    name: str,
    params: Mapping[str, Any],
    signature: Mapping[str, inspect.Parameter],
    var_kw: bool,
    path: str,
    problems: Problems,
    reserved: Iterable[str],
) -> None:
    if not var_kw:
        for key in params:
            if key not in signature:
                valid = [*signature, *reserved]
                problems.unknown(path, key, valid, what=f"parameter of {kind} '{name}'")
    for key, param in signature.items():
        if param.default is inspect.Parameter.empty and key not in params:
            problems.add(join(path, key), f"required by {kind} '{name}' (no default)")


def _fill_defaults(
    kind: str, resolved: dict[str, Any], signature: Mapping[str, inspect.Parameter], hints: Mapping[str, Any]
) -> None:
    """Write every TOML-representable default into the resolved recipe (explicit > implicit)."""
    for key, param in signature.items():
        if key in resolved or not _toml_default(param.default):
            continue
        hint = hints.get(key, Any)
        try:
            # The same conversion a value read back from TOML gets, so round trips are exact.
            resolved[key] = coerce(param.default, hint) if is_known(hint) else _lists(param.default)
        except Invalid:
            resolved[key] = _lists(param.default)


def _lists(value: Any) -> Any:
    """Tuples as lists, as TOML reads arrays back."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    return value


def _installed(host: Any, kind: str) -> str:
    names = host.names(kind)
    return "installed: " + ", ".join(names) if names else "none installed"


__all__ = ["MAX_SEED", "PARAM_BOUNDS", "check_bounds", "check_plugin", "eps_limit"]
