"""A plugin's parameter schema, declared once in its constructor's annotations.

A parameter's type, default, bounds and one-line doc live on the constructor itself::

    def __init__(self, *, alpha: Annotated[float, Param(gt=0, doc="sharpness")] = 1.0): ...

The recipe resolver reads that schema (:func:`declared`) and checks every value against
it once (:func:`check`), before anything is built: a TOML value is coerced to the type
(``"4/255"`` becomes a float), then held against the bounds and, for names that come
from an extensible registry, against the registry's names. Constraints between
parameters (milestones in increasing order, a norm the attack supports) go in an
optional ``@classmethod check_params(cls, params)`` that sees the typed values. The
constructor then receives typed, checked values and does not check them again.

Building from Python goes through the same check: ``sat_toolkit.plugins.instantiate``
(``create_attack``, ``create_activation``, ...) runs :func:`check` before the
constructor, so a value is refused with the same words on either path.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import operator
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

#: numpy (and so accelerate's ``set_seed``) takes seeds below 2**32 only.
MAX_SEED = 2**32 - 1

_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


@dataclass(frozen=True)
class Param:
    """Bounds and a one-line doc for one constructor parameter (in an ``Annotated`` hint).

    Attributes:
        doc: one line for ``plugins --show`` and docs/reference.md; without it, the first
            sentence of the parameter's ``Args:`` entry in the class docstring is used.
        ge, gt, le, lt: inclusive / exclusive bounds on a number (on each item of a list).
        one_of: the valid names, when they come from a registry a plugin can extend
            (anything with ``names()``, or a callable returning them); fixed sets are
            better written as ``Literal[...]``.
        local: ``"file"`` or ``"folder"`` for a path on this machine: the recipe resolver
            refuses one that does not exist or is the other kind, before anything runs (a
            dry run forgives only its absence, for a recipe written for another machine).
    """

    doc: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    one_of: Any = None
    local: Literal["file", "folder"] | None = None

    def bounds(self) -> dict[str, float]:
        """The bounds that are set, as ``{"ge": 0, ...}``."""
        return {key: getattr(self, key) for key in _SIGNS if getattr(self, key) is not None}

    def bounds_text(self) -> str:
        """``>= 0, <= 1``: the bounds as a reader sees them."""
        return ", ".join(f"{_SIGNS[key]} {_number(bound)}" for key, bound in self.bounds().items())

    def names(self) -> list[str] | None:
        """The valid names now (a registry may have grown since the class was defined)."""
        if self.one_of is None:
            return None
        source = self.one_of
        if hasattr(source, "names"):
            return list(source.names())
        if callable(source):
            return list(source())
        return list(source)

    def problem(self, value: Any) -> str | None:
        """Why a typed value breaks the declaration (``must be > 0, got -1``); else ``None``."""
        items = value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            message = bounds_problem(item, self.bounds())
            if message:
                return message if len(items) == 1 and items[0] is value else f"each item {message}"
        names = self.names()
        if names is not None and value is not None and value not in names:
            close = difflib.get_close_matches(str(value), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return f"must be one of {', '.join(names)}, got {value!r}{hint}"
        return None


def bounds_problem(value: Any, bounds: Mapping[str, float]) -> str | None:
    """``must be >= 0, got -0.1`` when a number falls outside ``bounds``; else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    holds = {
        "ge": lambda b: value >= b,
        "gt": lambda b: value > b,
        "le": lambda b: value <= b,
        "lt": lambda b: value < b,
    }
    for key, bound in bounds.items():
        if not holds[key](bound):
            return f"must be {_SIGNS[key]} {_number(bound)}, got {value!r}"
    return None


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and math.isfinite(bound) else f"{bound:g}"


@dataclass(frozen=True)
class Declared:
    """One constructor parameter as the schema declares it."""

    name: str
    hint: Any  # the type, without ``Annotated``; ``Any`` when unannotated
    default: Any  # ``inspect.Parameter.empty`` when the parameter is required
    param: Param

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class Schema:
    """A plugin class's parameters, in constructor order; ``kwargs`` names a ``**kwargs`` catch-all."""

    params: dict[str, Declared]
    kwargs: str = ""

    @property
    def takes_kwargs(self) -> bool:
        return bool(self.kwargs)

    def __contains__(self, key: object) -> bool:
        return key in self.params

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self.params)


@functools.cache
def declared(cls: type) -> Schema | None:
    """The schema of ``cls``'s constructor; ``None`` when its signature cannot be read."""
    if _plain_module(cls):
        return Schema({})
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return None
    hints = _annotations(cls)
    params: dict[str, Declared] = {}
    for name, p in signature.parameters.items():
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        hint, param = split_annotation(hints.get(name, Any))
        params[name] = Declared(name, hint, p.default, param)
    kwargs = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), "")
    return Schema(params, kwargs)


def _plain_module(cls: type) -> bool:
    """An ``nn.Module`` subclass without its own constructor takes no parameters.

    Its signature reads ``(*args, **kwargs)`` (``nn.Module.__init__``'s), which would
    otherwise let any key through.
    """
    import torch.nn

    module = torch.nn.Module
    return isinstance(cls, type) and issubclass(cls, module) and cls.__init__ is module.__init__


def split_annotation(hint: Any) -> tuple[Any, Param]:
    """``Annotated[float, Param(gt=0)]`` -> ``(float, Param(gt=0))``; other hints get ``Param()``.

    An optional declared type (``Positive | None``, i.e. ``Annotated[...] | None``) keeps
    its ``Param`` too: ``None`` stays "the default", any other value meets the bounds.
    """
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        param = next((e for e in extras if isinstance(e, Param)), Param())
        return base, param
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [split_annotation(member) for member in typing.get_args(hint)]
        param = next((p for _, p in parts if p != Param()), Param())
        return functools.reduce(operator.or_, [base for base, _ in parts]), param
    return hint, Param()


def _annotations(cls: type) -> dict[str, Any]:
    """Every constructor annotation, resolved with its ``Annotated`` extras: a class's own over its bases'.

    A subclass may declare only its own parameters and pass the rest on (``**threat``, see
    ``Attack.__init_subclass__``); those keep their declaration in the base that has it.
    """
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            hints.update(typing.get_type_hints(init, include_extras=True))
        except Exception:  # an annotation that does not resolve only costs us the type check
            continue
    hints.pop("return", None)
    return hints


def check(
    cls: type, values: Mapping[str, Any], *, complete: bool = True
) -> tuple[dict[str, Any], list[tuple[str | None, str]]]:
    """``values`` typed and checked against ``cls``'s schema: ``(typed, problems)``.

    Each problem is ``(key, message)``; ``key`` is ``None`` for one ``check_params`` could
    not pin on a parameter. Keys the schema does not declare pass through untouched (the
    caller reports unknown keys, with suggestions). ``check_params`` runs only when every
    value passed its own checks, so it always sees typed values, and only when ``values``
    is ``complete`` (the caller found no unknown or missing key): the constraints between
    parameters would judge a set the user has still to fix.
    """
    from sat_toolkit.recipe.coerce import Invalid, coerce  # the recipe package imports plugins

    schema = declared(cls)
    typed: dict[str, Any] = {}
    problems: list[tuple[str | None, str]] = []
    for key, value in values.items():
        spec = schema.params.get(key) if schema is not None else None
        if spec is None:
            typed[key] = coerce(value, Any) if _fraction_like(value) else value
            continue
        if value is None and spec.default is None:
            typed[key] = None  # "the plugin's default", which is None
            continue
        try:
            typed[key] = coerce(value, spec.hint)
        except Invalid as exc:
            problems.append((key, str(exc)))
            continue
        message = spec.param.problem(typed[key])
        if message:
            problems.append((key, message))
    hook = getattr(cls, "check_params", None)
    if complete and not problems and callable(hook):
        try:
            hook(dict(typed))
        except Exception as exc:  # ValueError / SatError by contract; any other is still one line
            text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            problems.append(_attribute(text, typed, getattr(cls, "name", "")))
    return typed, problems


def _fraction_like(value: Any) -> bool:
    from sat_toolkit.recipe.numbers import is_fraction

    return is_fraction(value)


def _attribute(message: str, keys: Iterable[str], name: str) -> tuple[str | None, str]:
    """File ``"milestones must be increasing"`` under ``milestones``; else under no key.

    The plugin's own name may lead the message (``"step: ..."``, ``"dataset 'hub': ..."``,
    as a constructor shared with the Python API words it).
    """
    keys = list(keys)
    text = re.sub(rf"^(?:[a-z_]+ )?'?{re.escape(name)}'?: ", "", message) if name else message
    first, _, rest = text.partition(" ")
    first = first.removesuffix(":")  # "mean: the data has 3 channels ..."
    if first in keys and rest:
        return first, rest
    quoted = [key for key in keys if f"'{key}'" in message]
    if len(quoted) == 1:
        return quoted[0], message
    return None, message


def defaults(cls: type) -> dict[str, Any]:
    """Every declared default (required parameters left out)."""
    schema = declared(cls)
    if schema is None:
        return {}
    return {k: d.default for k, d in schema.params.items() if not d.required}


def toml_like(value: Any) -> bool:
    """Whether a value can stand in a TOML recipe (a constructor default the resolved recipe records)."""
    if isinstance(value, (bool, int, float, str)):
        return not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(toml_like(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and toml_like(v) for k, v in value.items())
    return False


def default_problems(cls: type) -> list[str]:
    """Defaults that break their own declaration (``weight: Annotated[float, Param(ge=0)] = -1.0``).

    The resolved recipe records every default, so such a class trains on a value that the
    run's own ``recipe.toml`` is then refused for; the plugin host lists it as failed.
    ``None`` ("the plugin's default") and defaults a recipe cannot hold are not checked.
    """
    found = {k: v for k, v in defaults(cls).items() if v is not None and toml_like(v)}
    _, refused = check(cls, found, complete=False)
    return [f"the default {key} = {found[key]!r} breaks its declaration ({why})" for key, why in refused]


__all__ = [
    "MAX_SEED",
    "Declared",
    "Param",
    "Schema",
    "bounds_problem",
    "check",
    "declared",
    "defaults",
    "split_annotation",
]
