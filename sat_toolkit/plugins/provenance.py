"""Plugin provenance: which distribution, at which version, provided each plugin in use.

A model file or run directory shared without the package that provided its activation
used to fail with "unknown activation" and no hint of what to install. Runs (metrics.json),
model files (``sat_config["plugins"]``) and eval reports therefore record, per plugin, an
entry such as::

    {"kind": "activation", "name": "mish", "distribution": "sat-extra-activations", "version": "0.1.0"}

and loading a model whose plugin is missing turns the recorded entry into a ``pip install``
line (:func:`missing_plugin_message`).

Where a plugin came from is never guessed from its name (a name may be qualified,
``dist:name``, or shadow a built-in): the name is resolved by the plugin host and the
record whose class *is* the resolved class gives distribution and version. A class no
installed distribution registers (an attack object built by hand) is listed with
``distribution`` and ``version`` None.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sat_toolkit.errors import PluginError
from sat_toolkit.plugins.manager import (
    BUILTIN_DISTRIBUTION,
    DISABLE_ENV_VAR,
    PluginRecord,
    get_plugin_host,
    normalise_distribution,
)

#: A plugin in use: its kind and either its name as a recipe writes it or its class.
PluginRef = tuple[str, "str | type"]
PluginEntry = dict[str, Any]


# -- describing plugins -------------------------------------------------------------------------
def describe_plugins(refs: Iterable[PluginRef]) -> list[PluginEntry]:
    """One entry per distinct plugin in ``refs``, sorted: kind, name, distribution, version."""
    return merge_plugins([_entry(kind, what) for kind, what in refs])


def merge_plugins(*lists: Iterable[Mapping[str, Any]]) -> list[PluginEntry]:
    """Entries of several lists as one sorted list without duplicates (reports combine lists)."""
    unique = {_key(entry): dict(entry) for entries in lists for entry in entries}
    return [unique[key] for key in sorted(unique, key=lambda k: tuple("" if v is None else v for v in k))]


def _key(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    return (entry["kind"], entry["name"], entry["distribution"], entry["version"])


def _entry(kind: str, what: str | type) -> PluginEntry:
    if isinstance(what, str):
        try:
            cls = get_plugin_host().get(kind, what)
        except PluginError:  # not resolvable here: say so rather than guess from the name
            return {"kind": kind, "name": what, "distribution": None, "version": None}
    else:
        cls = what
    record = _record_of(kind, cls, what if isinstance(what, str) else None)
    if record is None:
        name = getattr(cls, "name", None)
        return {
            "kind": kind,
            "name": name if isinstance(name, str) else getattr(cls, "__name__", repr(cls)),
            "distribution": None,
            "version": None,
        }
    return {"kind": kind, "name": record.name, "distribution": record.distribution, "version": record.version}


def _record_of(kind: str, cls: Any, written: str | None) -> PluginRecord | None:
    """The record registering exactly ``cls`` (the one named as written, if a class has two)."""
    rows = [r for r in get_plugin_host().records(kind) if r.kind == kind and r.obj is cls]
    return next((r for r in rows if r.name == written), rows[0] if rows else None)


# -- what a recipe, a model config and an evaluation use ---------------------------------------
def recipe_plugin_refs(recipe: Any) -> list[PluginRef]:
    """Every plugin a resolved :class:`~sat_toolkit.recipe.Recipe` configures.

    Dataset, model, activation (with the activations it nests), the training attack, the
    per-epoch validation attack (built-in PGD, when validation is on), every evaluation
    attack (with an ensemble's members), the lr and eps schedules and the objective.
    """
    refs: list[PluginRef] = [(recipe.data.plugin.kind, recipe.data.plugin.name)]
    refs += [(recipe.model.kind, recipe.model.name)]
    refs += activation_refs(recipe.activation.to_dict())
    refs += attack_refs(recipe.attack.train.to_dict())
    if recipe.train.validate_every_epochs > 0 and "eps" in recipe.attack.threat_model:
        refs += attack_refs(recipe.attack.validation)  # what engine.evaluation.validate builds
        refs.append(("attack", "fgsm"))
    for spec in recipe.attack.eval.attacks.values():
        refs += attack_refs(spec.to_dict())
    refs += [(spec.kind, spec.name) for spec in (recipe.schedule.lr, recipe.schedule.eps)]
    refs.append((recipe.objective.kind, recipe.objective.name))
    return refs


def sat_config_plugin_refs(config: Mapping[str, Any]) -> list[PluginRef]:
    """The model and activation(s) a ``sat_config`` builds (what a rebuild needs installed),
    and the dataset it was trained on (what ``eval`` reads unless told ``--data``)."""
    refs: list[PluginRef] = []
    model = config.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("name"), str):
        refs.append(("model", model["name"]))
    activation = config.get("activation")
    if isinstance(activation, str) or (isinstance(activation, Mapping) and "name" in activation):
        refs += activation_refs(activation)
    dataset = config.get("dataset")
    if isinstance(dataset, Mapping) and isinstance(dataset.get("name"), str):
        refs.append(("dataset", dataset["name"]))
    elif isinstance(dataset, str):
        refs.append(("dataset", dataset))
    return refs


def activation_refs(spec: str | Mapping[str, Any]) -> list[PluginRef]:
    """The activation ``spec`` names plus every registered activation its instance holds.

    Nesting is found by building the activation (``relu_smooth_grad`` builds the smooth
    activation whose gradient it borrows), not by knowing each plugin's parameters; the
    global RNG is left as it was, since a learnable activation may draw its initial value.
    """
    import torch

    from sat_toolkit.activations.factory import create_activation, split_spec

    name, params = split_spec(spec)
    refs: list[PluginRef] = [("activation", name)]
    try:
        with torch.random.fork_rng(devices=[]):
            module = create_activation(name, **params)
    except PluginError:  # not installed here: the top-level entry says so
        return refs
    for inner in list(module.modules())[1:]:
        if _record_of("activation", type(inner), None) is not None:
            refs.append(("activation", type(inner)))
    return refs


def attack_refs(spec: str | Mapping[str, Any] | Any) -> list[PluginRef]:
    """The attack ``spec`` names (or an attack object's class) and its members, if it has any.

    Members are an ensemble's ``attacks`` parameter (its default when the spec leaves it
    out) or, for a built attack object, its ``members``.
    """
    if not isinstance(spec, (str, Mapping)):
        members = getattr(spec, "members", None)
        inner = members if isinstance(members, (list, tuple)) else []
        return [("attack", type(spec)), *(ref for member in inner for ref in attack_refs(member))]
    from sat_toolkit.plugins.instantiate import split_plugin_spec

    name, params = split_plugin_spec("attack", spec)
    refs: list[PluginRef] = [("attack", name)]
    for member in _member_specs(name, params):
        refs += attack_refs(member)
    return refs


def _member_specs(name: str, params: Mapping[str, Any]) -> Iterator[Any]:
    try:
        cls = get_plugin_host().get("attack", name)
        signature = inspect.signature(cls)
    except (PluginError, TypeError, ValueError):
        return
    parameter = signature.parameters.get("attacks")
    if parameter is None:
        return
    members = params.get("attacks", parameter.default)
    if isinstance(members, Sequence) and not isinstance(members, str):
        yield from members


def run_plugins(recipe: Any) -> list[PluginEntry]:
    """Provenance of every plugin a run of ``recipe`` uses (metrics.json's ``plugins``)."""
    return describe_plugins(recipe_plugin_refs(recipe))


def sat_config_plugins(config: Mapping[str, Any]) -> list[PluginEntry]:
    """Provenance of the plugins that rebuild a model (its file's ``sat_config["plugins"]``)."""
    return describe_plugins(sat_config_plugin_refs(config))


# -- a model whose plugin is missing -----------------------------------------------------------
def missing_plugin_message(entries: Any) -> str | None:
    """For every recorded plugin this environment lacks: what to install, as one clause.

    ``entries`` is a model's or run's recorded ``plugins`` (anything else, e.g. an older
    file without them, gives None). The clause reads "needs activation 'mish' from the
    package ..." and ends with a command that provides it; packages that are not installed
    at all share one ``pip install`` (a run needing two of them named only the first, and
    installing it led to the next error).
    """
    if not isinstance(entries, list):
        return None
    absent: dict[str, tuple[str, str | None, list[str]]] = {}  # package -> (as recorded, version, provides)
    hints: list[str] = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("distribution"), str):
            continue
        kind, name, dist = entry.get("kind"), entry.get("name"), entry["distribution"]
        if not isinstance(kind, str) or not isinstance(name, str) or _provided(kind, name, dist):
            continue
        version = entry.get("version") if isinstance(entry.get("version"), str) else None
        if normalise_distribution(dist) != BUILTIN_DISTRIBUTION and not _installed(dist):
            shown, known, provides = absent.setdefault(normalise_distribution(dist), (dist, version, []))
            if version is not None and (known is None or _newer(version, known)):  # the newest recorded
                absent[normalise_distribution(dist)] = (shown, version, provides)
            if f"{kind} '{name}'" not in provides:
                provides.append(f"{kind} '{name}'")
        elif (hint := _install_hint(kind, name, dist, version)) not in hints:
            hints.append(hint)
    if absent:
        packages = [
            f"{_and(provides)} from the package {dist} {version}"
            if version
            else f"{_and(provides)} from the package {dist}"
            for dist, version, provides in absent.values()
        ]
        requirements = " ".join(_requirement(dist, version) for dist, version, _ in absent.values())
        verb = "is" if len(absent) == 1 else "are"
        hints.insert(0, f"needs {_and(packages)}, which {verb} not installed: pip install {requirements}")
    return "; ".join(hints) or None


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _installed(dist: str) -> bool:
    try:
        importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return False
    return True


def _requirement(dist: str, version: str | None) -> str:
    return f"'{dist}>={version}'" if version and version != "?" else dist


def _provided(kind: str, name: str, dist: str) -> bool:
    try:
        records = get_plugin_host().records(kind)
    except ValueError:  # a kind this toolkit does not know
        return False
    wanted = normalise_distribution(dist)
    return any(
        r.kind == kind
        and r.name == name
        and r.obj is not None
        and normalise_distribution(r.distribution) == wanted
        for r in records
    )


def _install_hint(kind: str, name: str, dist: str, version: str | None) -> str:
    what = f"{kind} '{name}'"
    if normalise_distribution(dist) == BUILTIN_DISTRIBUTION:
        return _builtin_hint(what, version)
    recorded = f"{dist} {version}" if version else dist
    installed = importlib_metadata.version(dist)  # an absent package is missing_plugin_message's
    module = _module_problem(dist)
    if module is not None and module.status == "blocked":
        return (
            f"needs {what} from the package {recorded}, which is installed ({installed}) but blocked "
            f"by {DISABLE_ENV_VAR}: take '{dist}' out of that variable"
        )
    if module is not None:
        return (
            f"needs {what} from the package {recorded}, which is installed ({installed}) but failed "
            f"to load ({module.error}); fix or reinstall it"
        )
    pin = f": pip install '{dist}=={version}'" if version and version != "?" else ""
    return (
        f"needs {what} from the package {recorded}; the installed {dist} {installed} does not provide it{pin}"
    )


def _module_problem(dist: str) -> PluginRecord | None:
    """The failed or blocked plugin module of ``dist``, if discovery recorded one."""
    wanted = normalise_distribution(dist)
    return next(
        (
            r
            for r in get_plugin_host().records()
            if r.status in ("blocked", "failed") and normalise_distribution(r.distribution) == wanted
        ),
        None,
    )


def _builtin_hint(what: str, version: str | None) -> str:
    try:
        installed = importlib_metadata.version(BUILTIN_DISTRIBUTION)
    except importlib_metadata.PackageNotFoundError:  # run from a source tree that was never installed
        installed = "?"
    if version is None or version == "?":
        return (
            f"needs {what}, a built-in that the installed {BUILTIN_DISTRIBUTION} {installed} does not have: "
            f"pip install --upgrade {BUILTIN_DISTRIBUTION}"
        )
    if _newer(installed, version):
        return (
            f"needs {what}, built into {BUILTIN_DISTRIBUTION} {version}; the installed {installed} no longer "
            f"has it: pip install '{BUILTIN_DISTRIBUTION}=={version}'"
        )
    return (
        f"needs {what}, built into {BUILTIN_DISTRIBUTION} {version}; the installed {installed} lacks it: "
        f"pip install --upgrade '{BUILTIN_DISTRIBUTION}>={version}'"
    )


def _newer(installed: str, recorded: str) -> bool:
    """Whether version ``installed`` follows ``recorded`` (PEP 440; unparsable counts as not).

    Only then has the built-in been removed; the same or an older version means the model
    came from a newer toolkit (a development version may not have bumped its number).
    """
    from packaging.version import InvalidVersion, Version  # accelerate and timm depend on it

    try:
        return Version(installed) > Version(recorded)
    except InvalidVersion:
        return False
