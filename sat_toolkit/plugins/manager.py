"""The plugin host: discovers plugins through entry points and answers lookups.

Discovery is deliberately fault-tolerant. A plugin that raises on import or in its
registration hook, or a class that breaks its kind's contract
(:mod:`sat_toolkit.plugins.contracts`), is recorded as failed (and warned about, once)
instead of breaking the CLI or the other plugins; only a lookup of it fails, naming why.

Names follow one policy, so no package can break a built-in and every hint works:

* built-in plugins keep their names;
* a third-party plugin that registers a built-in's name is ``shadowed``: the bare name
  still means the built-in, the plugin is reached by its qualified name
  ``<distribution>:<name>``;
* two third-party plugins with one name are both ``conflict``: the bare name is an error
  that names both qualified names, each of which works.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata as importlib_metadata
import inspect
import os
import re
import threading
import warnings
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import pluggy

from sat_toolkit.errors import PluginConflictError, PluginLoadError, UnknownPluginError, first_line
from sat_toolkit.plugins import specs
from sat_toolkit.plugins.contracts import NAME_PATTERN, contract_problems, describe_violation
from sat_toolkit.plugins.specs import PluginKind

ENTRY_POINT_GROUP = "sat_toolkit"
DISABLE_ENV_VAR = "SAT_TOOLKIT_DISABLE_PLUGINS"
# The distribution (pyproject's project name) that ships the built-in plugins; not
# "sat-toolkit", which on PyPI is an unrelated project.
BUILTIN_DISTRIBUTION = "smooth-adversarial-training"
HOOK_NAMES = tuple(kind.hook_name for kind in PluginKind)
# pluggy marks an implementation with an attribute named after the project.
_HOOKIMPL_MARKER = f"{specs.PROJECT_NAME}_impl"
#: Statuses of plugins that can be looked up (``shadowed`` and ``conflict`` by qualified name only).
USABLE = ("ok", "shadowed", "conflict")


def _load_error(exc: BaseException) -> str:
    """A plugin's failure in one line. ``sys.exit()`` in a plugin's import ended every command
    silently with its exit code (0: a CI read "validated"); it is a failure like any other."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return first_line(exc, with_type=True)


class PluginWarning(UserWarning):
    """A plugin failed to load or conflicts with another; the rest keep working."""

    #: How the command line labels the line it prints (``warning: ...``).
    label = "warning"


@dataclasses.dataclass(frozen=True)
class PluginRecord:
    """One row of the plugin table."""

    kind: str
    name: str
    distribution: str
    version: str
    entry_point: str
    status: str  # "ok" | "shadowed" | "conflict" | "failed" | "blocked"
    obj: Any = None
    error: str | None = None

    @property
    def qualified_name(self) -> str:
        """``<distribution>:<name>``: names this plugin whatever else shares its name."""
        return f"{normalise_distribution(self.distribution)}:{self.name}"

    @property
    def builtin(self) -> bool:
        return normalise_distribution(self.distribution) == BUILTIN_DISTRIBUTION


def normalise_distribution(name: str) -> str:
    """PEP 503 normalisation, so ``Sat_Extra`` and ``sat-extra`` name one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_qualified(name: str) -> tuple[str | None, str]:
    """``"my-acts:silu"`` -> ``("my-acts", "silu")``; ``"silu"`` -> ``(None, "silu")``."""
    distribution, sep, bare = name.rpartition(":")
    return (normalise_distribution(distribution), bare) if sep else (None, name)


def blocked_plugin_names(value: str | None = None) -> set[str]:
    """Parse ``SAT_TOOLKIT_DISABLE_PLUGINS``: comma-separated names, or ``*``/``all``."""
    raw = os.environ.get(DISABLE_ENV_VAR, "") if value is None else value
    return {normalise_distribution(token.strip()) for token in raw.split(",") if token.strip()}


def _distribution_of(ep: importlib_metadata.EntryPoint) -> str:
    """The normalised name of the distribution declaring ``ep`` (``?`` when unknown)."""
    return normalise_distribution(ep.dist.metadata["Name"]) if ep.dist is not None else "?"


# Each distinct plugin warning is printed once per process: the host is loaded by more
# than one code path, and a user needs to read a problem once, not once per lookup.
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(message: str) -> None:
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    warnings.warn(message, PluginWarning, stacklevel=4)


@dataclasses.dataclass
class _Source:
    """Where a plugin module came from."""

    entry_point: str
    distribution: str
    version: str

    @property
    def external(self) -> bool:
        return normalise_distribution(self.distribution) != BUILTIN_DISTRIBUTION

    @property
    def label(self) -> str:
        return f"plugin '{self.entry_point}' from '{self.distribution}'"


def _row(
    source: _Source, kind: PluginKind, name: str, status: str, obj: Any = None, error: str | None = None
) -> PluginRecord:
    return PluginRecord(
        kind=kind.value,
        name=name,
        distribution=source.distribution,
        version=source.version,
        entry_point=source.entry_point,
        status=status,
        obj=obj,
        error=error,
    )


class PluginHost:
    """Loads every plugin of the ``sat_toolkit`` entry-point group and indexes them by kind."""

    def __init__(
        self,
        entry_points: Iterable[importlib_metadata.EntryPoint] | None = None,
        blocked: set[str] | None = None,
    ) -> None:
        self._entry_points = entry_points
        self._blocked = blocked_plugin_names() if blocked is None else blocked
        self._pm = pluggy.PluginManager(specs.PROJECT_NAME)
        self._pm.add_hookspecs(specs)
        self._records: list[PluginRecord] = []
        self._module_failures: list[PluginRecord] = []
        # kind -> bare name -> every record of that name (a dict per kind: lookups are lookups).
        self._index: dict[str, dict[str, list[PluginRecord]]] = {}
        self._loaded = False
        self._lock = threading.Lock()

    # -- discovery -------------------------------------------------------------------------
    def _discover(self) -> list[importlib_metadata.EntryPoint]:
        if self._entry_points is not None:
            return list(self._entry_points)
        found = importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)
        unique: dict[tuple[str, str], importlib_metadata.EntryPoint] = {}
        for ep in found:
            unique.setdefault((_distribution_of(ep), ep.name), ep)
        # Two metadata records naming the same entry point and module are one install seen
        # twice, e.g. a clone's stale ``sat_toolkit.egg-info`` (the name before the rename)
        # next to the installed ``smooth-adversarial-training``. pluggy refuses a module
        # registered under a second name, which would fail every built-in; keep one, and
        # the built-in distribution's where it is among them (built-ins cannot be blocked).
        same_target: dict[tuple[str, str], importlib_metadata.EntryPoint] = {}
        for ep in unique.values():
            kept = same_target.setdefault((ep.name, ep.value), ep)
            if _distribution_of(ep) == BUILTIN_DISTRIBUTION != _distribution_of(kept):
                same_target[(ep.name, ep.value)] = ep
        return list(same_target.values())

    def _is_blocked(self, source: _Source) -> bool:
        if not source.external or not self._blocked:
            return False
        names = {normalise_distribution(source.entry_point), normalise_distribution(source.distribution)}
        return bool(self._blocked & ({"*", "all"} | names))

    def load(self) -> PluginHost:
        """Import every plugin module and collect its registrations (idempotent)."""
        with self._lock:
            if self._loaded:
                return self
            sources: dict[str, _Source] = {}
            external: set[str] = set()
            for ep in self._discover():
                dist = ep.dist
                source = _Source(
                    entry_point=ep.name,
                    distribution=dist.metadata["Name"] if dist is not None else "?",
                    version=dist.version if dist is not None else "?",
                )
                if source.external:
                    external |= {normalise_distribution(source.entry_point), source.distribution}
                if self._is_blocked(source):
                    self._module_failures.append(self._module_record(source, "blocked", None))
                    continue
                try:
                    module = ep.load()
                    plugin_id = f"{source.distribution}:{ep.name}"
                    self._pm.register(module, name=plugin_id)
                except (Exception, SystemExit) as exc:  # a broken third-party plugin must not break us
                    error = _load_error(exc)
                    self._module_failures.append(self._module_record(source, "failed", error))
                    _warn_once(f"{source.label} failed to load: {error}")
                    continue
                self._check_hook_names(module, source)
                sources[plugin_id] = source
            for kind in PluginKind:
                self._collect(kind, sources)
            self._apply_name_policy()
            self._warn_unmatched_blocks(external)
            self._loaded = True
            return self

    @staticmethod
    def _check_hook_names(module: ModuleType, source: _Source) -> None:
        """Warn about a module that implements no hook: a misspelt name or a missing ``@hookimpl``.

        pluggy ignores both silently, so the plugin would add nothing and say nothing.
        """
        functions = {
            name: value
            for name, value in vars(module).items()
            if name.startswith("sat_") and inspect.isfunction(value)
        }
        implemented = [n for n, f in functions.items() if n in HOOK_NAMES and hasattr(f, _HOOKIMPL_MARKER)]
        for name, function in sorted(functions.items()):
            if name in HOOK_NAMES and not hasattr(function, _HOOKIMPL_MARKER):
                _warn_once(
                    f"{source.label}: {name}() is not decorated with @hookimpl "
                    "(from sat_toolkit.plugins import hookimpl), so it is never called"
                )
            elif name not in HOOK_NAMES:
                close = difflib.get_close_matches(name, HOOK_NAMES, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else "hooks: " + ", ".join(HOOK_NAMES)
                _warn_once(f"{source.label}: {name}() is not a sat-toolkit hook; {hint}")
        if not implemented and not functions:
            _warn_once(
                f"{source.label} implements no sat-toolkit hook, so it adds nothing; "
                "define one of " + ", ".join(f"{n}()" for n in HOOK_NAMES) + " with @hookimpl"
            )

    def _warn_unmatched_blocks(self, external: set[str]) -> None:
        """A name in the block list that matches nothing is a typo that blocks nothing: say so."""
        installed = {normalise_distribution(name) for name in external}
        for name in sorted(self._blocked - installed - {"*", "all"}):
            close = difflib.get_close_matches(name, sorted(installed), n=1, cutoff=0.5)
            if name in (BUILTIN_DISTRIBUTION, "sat-toolkit"):
                why = (
                    "built-in plugins cannot be blocked; a third-party plugin sharing a built-in's "
                    "name is used only by its qualified name <distribution>:<name>"
                )
            elif close:
                why = f"did you mean '{close[0]}'?"
            else:
                why = "installed: " + ", ".join(sorted(installed)) if installed else "none is installed"
            _warn_once(f"{DISABLE_ENV_VAR}: '{name}' matches no external plugin, so it blocks nothing; {why}")

    @staticmethod
    def _module_record(source: _Source, status: str, error: str | None) -> PluginRecord:
        return PluginRecord(
            kind="*",
            name=source.entry_point,
            distribution=source.distribution,
            version=source.version,
            entry_point=source.entry_point,
            status=status,
            error=error,
        )

    def _collect(self, kind: PluginKind, sources: dict[str, _Source]) -> None:
        hook = getattr(self._pm.hook, kind.hook_name)
        for impl in hook.get_hookimpls():
            source = sources[impl.plugin_name]

            def record(name: str, status: str, obj: Any = None, error: str | None = None) -> None:
                self._records.append(_row(source, kind, name, status, obj, error))  # noqa: B023

            try:
                classes = impl.function()
                if classes is None:
                    classes = []
                if not isinstance(classes, (list, tuple)):
                    raise TypeError(
                        f"{kind.hook_name}() must return a list of classes, got {type(classes).__name__}"
                    )
            except (Exception, SystemExit) as exc:
                error = _load_error(exc)
                record(f"({source.entry_point})", "failed", error=error)
                _warn_once(f"{source.label} failed to register its {kind.value}s: {error}")
                continue
            for cls in classes:
                problems = contract_problems(kind, cls)
                if not problems:
                    record(cls.name, "ok", obj=cls)
                    continue
                name = getattr(cls, "name", None)
                valid = isinstance(name, str) and NAME_PATTERN.match(name)
                shown = name if valid else f"({source.entry_point})"
                error = describe_violation(kind, cls, problems)
                record(shown, "failed", error=error)
                _warn_once(f"{source.label}: {error}")

    def _apply_name_policy(self) -> None:
        """Built-ins keep their names; third parties sharing a name are shadowed or in conflict."""
        groups: dict[tuple[str, str], list[int]] = {}
        for index, record in enumerate(self._records):
            if record.status == "ok":
                groups.setdefault((record.kind, record.name), []).append(index)
        for (kind, name), same in groups.items():
            if len(same) < 2:
                continue
            rows = [self._records[i] for i in same]
            if sum(r.builtin for r in rows) == 1:
                for i, row in zip(same, rows, strict=True):
                    if row.builtin:
                        continue
                    self._records[i] = dataclasses.replace(
                        row, status="shadowed", error=f"the built-in {kind} keeps '{name}'"
                    )
                    _warn_once(
                        f"{kind} '{name}' from '{row.distribution}' has the name of a built-in, "
                        f"which keeps it; use this one as '{row.qualified_name}'"
                    )
                continue
            picks = " or ".join(f"'{r.qualified_name}'" for r in rows if not r.builtin)
            owners = " and ".join(f"'{r.distribution}'" for r in rows)
            error = f"{kind} '{name}' is registered by both {owners}"
            for i, row in zip(same, rows, strict=True):
                self._records[i] = dataclasses.replace(row, status="conflict", error=error)
            _warn_once(f"{error}; name the one you mean: {picks}")
        self._index = {}
        for record in self._records:
            self._index.setdefault(record.kind, {}).setdefault(record.name, []).append(record)

    # -- lookups ---------------------------------------------------------------------------
    def records(self, kind: PluginKind | str | None = None) -> list[PluginRecord]:
        """Every plugin (and every failed or blocked plugin module), sorted for display."""
        self.load()
        rows = self._records + self._module_failures
        if kind is not None:
            kind_value = PluginKind(kind).value
            rows = [r for r in rows if r.kind in (kind_value, "*")]
        return sorted(rows, key=lambda r: (r.kind, r.name, r.distribution))

    def names(self, kind: PluginKind | str) -> list[str]:
        """Every name that looks a plugin of ``kind`` up: bare names, and qualified ones where shared."""
        self.load()
        kind_value = PluginKind(kind).value
        names = set()
        for name, rows in self._index.get(kind_value, {}).items():
            for row in rows:
                if row.status == "ok":
                    names.add(name)
                elif row.status in ("shadowed", "conflict"):
                    names.add(row.qualified_name)
        return sorted(names)

    def record(self, kind: PluginKind | str, name: str) -> PluginRecord:
        """The usable record ``name`` (bare or ``distribution:name``) looks up, or a clear error."""
        self.load()
        kind_value = PluginKind(kind).value
        distribution, bare = split_qualified(name)
        rows = self._index.get(kind_value, {}).get(bare, [])
        if distribution is not None:
            rows = [r for r in rows if normalise_distribution(r.distribution) == distribution]
            usable = [r for r in rows if r.status in USABLE]
            if len(usable) == 1:
                return usable[0]
        else:
            usable = [r for r in rows if r.status == "ok"]
            if len(usable) == 1:
                return usable[0]
            conflicts = [r for r in rows if r.status == "conflict"]
            if conflicts:
                picks = " or ".join(f"'{r.qualified_name}'" for r in conflicts)
                raise PluginConflictError(
                    f"{conflicts[0].error}; name the one you mean: {picks} "
                    f"(or uninstall one, or block it with {DISABLE_ENV_VAR}=<distribution>)"
                )
        failed = [r for r in rows if r.status == "failed"]
        if failed:
            raise PluginLoadError(f"{kind_value} '{name}' cannot be used: {failed[0].error}")
        raise self._unknown(kind_value, name)

    def get(self, kind: PluginKind | str, name: str) -> Any:
        """The plugin class registered as ``name`` (bare or ``distribution:name``) for ``kind``."""
        return self.record(kind, name).obj

    def _known_as(self, kind: str, name: str) -> list[str]:
        """The plugin that lists ``name`` in its ``also_known_as`` ('swish' is silu's other name)."""
        return [
            r.name
            for r in self.records(kind)
            if r.status == "ok"
            and r.kind == kind
            and name.lower() in (alias.lower() for alias in getattr(r.obj, "also_known_as", ()))
        ][:1]

    def _unknown(self, kind: str, name: str) -> Exception:
        known = self.names(kind)
        by_lower_case = {known_name.lower(): known_name for known_name in known}
        close = [by_lower_case[n] for n in difflib.get_close_matches(name.lower(), list(by_lower_case), n=1)]
        suggestion = (self._known_as(kind, name) or close or [None])[0]
        hint = f" Did you mean '{suggestion}'?" if suggestion else ""
        known_text = ", ".join(known) if known else "none (is sat-toolkit installed? pip install -e .)"
        message = f"unknown {kind} '{name}'.{hint} Known {kind}s: {known_text}"
        blocked = sorted({r.distribution for r in self.records(kind) if r.status == "blocked"})
        if blocked:  # never imported, so what they would provide is unknown: say they exist
            packages = ", ".join(f"'{d}'" for d in blocked)
            message += (
                f". Blocked by {DISABLE_ENV_VAR}, so not looked into: {packages} (take a package "
                "out of that variable to use its plugins)"
            )
        # Only a failure that leaves unknown what it would have provided can explain the name:
        # a class refused under its own (other) name cannot, and listing it buried the line.
        failed = [
            r
            for r in self.records(kind)
            if r.status == "failed" and (r.kind == "*" or (r.kind == kind and r.name.startswith("(")))
        ]
        if not failed:
            return UnknownPluginError(message)
        # A failed plugin may be the one that would have provided the name: say which, but
        # keep the suggestion (a typo is still the likelier explanation).
        culprits = "; ".join(
            f"plugin '{r.entry_point}' from '{r.distribution}' failed ({r.error})" for r in failed
        )
        return PluginLoadError(f"{message}. It may come from a plugin that failed to load: {culprits}")


_host: PluginHost | None = None
_host_lock = threading.Lock()


def get_plugin_host() -> PluginHost:
    """The process-wide host, loaded on first use."""
    global _host
    with _host_lock:
        if _host is None:
            _host = PluginHost()
    return _host.load()


def reset_plugin_host() -> None:
    """Forget the loaded plugins (tests, or after installing a plugin in-process)."""
    global _host
    with _host_lock:
        _host = None
    with _warned_lock:
        _warned.clear()  # a new load may warn again
