"""Validate a plugin section (``name`` + keyword parameters) without building anything.

The plugin class is looked up through the plugin host and its parameters are checked
once, against the schema its constructor declares (:mod:`sat_toolkit.params`: the
annotation's type, ``Param`` bounds and names, and the class's ``check_params`` for
constraints between parameters): unknown names (with the closest valid one), missing
required ones, types, ranges. No plugin is instantiated here: the engine later builds
each one from the typed values this returns.

What the engine decides itself (a model's classes and activation, an attack's model)
reaches plugins through their methods (``build(info, activation)``, ``perturb(model,
...)``), never through constructor parameters, so every constructor parameter is the
recipe's. Defaults of ``None`` are not written into the resolved recipe (TOML has no
null); leaving the key out keeps meaning "the plugin's default".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sat_toolkit.errors import SatError
from sat_toolkit.params import Schema, bounds_problem, check, declared, toml_like
from sat_toolkit.recipe.coerce import Invalid, coerce, is_known, toml_type
from sat_toolkit.recipe.errors import Problems, join
from sat_toolkit.recipe.schema import MAX_SEED  # one bound for every seed


def check_bounds(value: Any, bounds: Mapping[str, float]) -> str | None:
    """``must be >= 0, got -0.1`` when a number falls outside ``bounds``; else ``None``."""
    return bounds_problem(value, bounds)


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
    schema: Schema | None,
    input_shape: tuple[int, ...] | None,
    path: str,
    problems: Problems,
) -> None:
    """Refuse an attack's eps above :func:`eps_limit` for the attack's norm.

    The one check a schema cannot declare: the limit depends on the norm and, under L2, on
    the dataset's image shape, which only the recipe as a whole knows.
    """
    eps = resolved.get("eps")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        return
    norm = resolved.get("norm")
    if norm is None and schema is not None and "norm" in schema:
        norm = schema.params["norm"].default
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


def check_plugin(
    kind: str,
    raw_name: Any,
    params: Mapping[str, Any],
    path: str,
    problems: Problems,
    *,
    host: Any,
    reserved: Any = (),
    inherit: Mapping[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    default: str | None = None,
) -> tuple[str, dict[str, Any]] | None:
    """Validate one plugin section; returns ``(name, resolved params)`` or ``None`` on problems.

    ``reserved`` are the section's own keys (offered as suggestions for typos);
    ``inherit`` supplies values for parameters the plugin takes but the recipe left out
    (evaluation attacks inherit the training epsilon this way); ``input_shape`` is the
    dataset's ``(C, H, W)`` where known, which bounds an L2 attack's eps; ``default`` is the
    plugin a recipe without the section uses (named when a table forgets its ``name``).
    """
    before = len(problems)
    if raw_name is None:
        # `--set objective.beta=1` alone makes a table with parameters and no plugin: say so,
        # since the user wrote the parameter, not the missing name.
        given = f"; the table sets {', '.join(sorted(params))} but names no {kind}" if params else ""
        if given and default:
            given += f" (a recipe without the {path} table uses '{default}')"
        problems.add(join(path, "name"), f"required: which {kind} to use ({_installed(host, kind)}){given}")
        return None
    if not isinstance(raw_name, str):
        problems.add(join(path, "name"), f"expected a string, got {toml_type(raw_name)}")
        return None
    try:
        cls = host.get(kind, raw_name)
    except SatError as exc:
        problems.add(join(path, "name"), exc.message)
        return None

    schema = declared(cls)
    values = dict(params)
    if schema is not None:
        if not schema.takes_kwargs:
            for key in params:
                if key not in schema:
                    valid = [*schema, *reserved]
                    problems.unknown(path, key, valid, what=f"parameter of {kind} '{raw_name}'")
                    values.pop(key)
        for key, value in (inherit or {}).items():
            if key in schema and key not in params:
                values[key] = value
        for key, spec in schema.params.items():
            if spec.required and key not in values:
                problems.add(join(path, key), f"required by {kind} '{raw_name}' (no default)")
    # The known values are checked even beside an unknown or missing key, so one run of
    # `recipe validate` lists every problem of the table, not one per attempt.
    resolved, found = check(cls, values, complete=len(problems) == before)
    for key, message in found:
        problems.add(path if key is None else join(path, key), message)
    if kind == "attack" and not any(p.path == join(path, "eps") for p in problems[before:]):
        _check_eps(resolved, schema, input_shape, path, problems)
    if schema is not None:
        for key, spec in schema.params.items():
            if spec.param.local and isinstance(resolved.get(key), str):
                _check_local_path(resolved[key], spec.param.local, join(path, key), problems)
    if len(problems) > before:
        return None
    if schema is not None:
        _fill_defaults(resolved, schema)
        order = {key: index for index, key in enumerate(schema)}
        resolved = dict(sorted(resolved.items(), key=lambda item: order.get(item[0], len(order))))
    return raw_name, resolved


def _check_local_path(value: str, want: str, key: str, problems: Problems) -> None:
    """A declared local path (``Param(local=...)``) must exist and be a ``want`` (file or folder)."""
    local = Path(value).expanduser()
    fix = f"point it at a {want}: --set {key}={'DIR' if want == 'folder' else 'FILE'}"
    if not local.exists():
        problems.add(key, f"no such file or directory: '{value}' ({fix})", missing_file=True)
    elif local.is_dir() != (want == "folder"):
        problems.add(key, f"'{value}' is a {'folder' if local.is_dir() else 'file'} ({fix})")


def _fill_defaults(resolved: dict[str, Any], schema: Schema) -> None:
    """Write every TOML-representable default into the resolved recipe (explicit > implicit)."""
    for key, spec in schema.params.items():
        if key in resolved or not toml_like(spec.default):
            continue
        try:
            # The same conversion a value read back from TOML gets, so round trips are exact.
            resolved[key] = coerce(spec.default, spec.hint) if is_known(spec.hint) else _lists(spec.default)
        except Invalid:
            resolved[key] = _lists(spec.default)


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


__all__ = ["MAX_SEED", "check_bounds", "check_plugin", "eps_limit"]
