"""The plugin host: discovers plugins through entry points and answers lookups.

Discovery is deliberately fault-tolerant. A plugin that raises on import or in its
registration hook is recorded as failed (and warned about) instead of breaking the CLI or
the other plugins; only a lookup that needs it fails, naming it. Two distributions that
claim the same name for the same kind are both marked as conflicting, and looking the name
up is an error naming both, so a broken environment is explained rather than guessed at.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata as importlib_metadata
import os
import re
import threading
import warnings
from collections.abc import Iterable
from typing import Any

import pluggy

from sat_toolkit.errors import PluginConflictError, PluginLoadError, UnknownPluginError
from sat_toolkit.plugins import specs
from sat_toolkit.plugins.specs import PluginKind

ENTRY_POINT_GROUP = "sat_toolkit"
DISABLE_ENV_VAR = "SAT_TOOLKIT_DISABLE_PLUGINS"
# The distribution (pyproject's project name) that ships the built-in plugins; not
# "sat-toolkit", which on PyPI is an unrelated project.
BUILTIN_DISTRIBUTION = "smooth-adversarial-training"
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class PluginWarning(UserWarning):
    """A plugin failed to load or conflicts with another; the rest keep working."""


@dataclasses.dataclass(frozen=True)
class PluginRecord:
    """One row of the plugin table."""

    kind: str
    name: str
    distribution: str
    version: str
    entry_point: str
    status: str  # "ok" | "failed" | "blocked" | "conflict"
    obj: Any = None
    error: str | None = None


def normalise_distribution(name: str) -> str:
    """PEP 503 normalisation, so ``Sat_Extra`` and ``sat-extra`` name one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def blocked_plugin_names(value: str | None = None) -> set[str]:
    """Parse ``SAT_TOOLKIT_DISABLE_PLUGINS``: comma-separated names, or ``*``/``all``."""
    raw = os.environ.get(DISABLE_ENV_VAR, "") if value is None else value
    return {normalise_distribution(token.strip()) for token in raw.split(",") if token.strip()}


def _distribution_of(ep: importlib_metadata.EntryPoint) -> str:
    """The normalised name of the distribution declaring ``ep`` (``?`` when unknown)."""
    return normalise_distribution(ep.dist.metadata["Name"]) if ep.dist is not None else "?"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclasses.dataclass
class _Source:
    """Where a plugin module came from."""

    entry_point: str
    distribution: str
    version: str

    @property
    def external(self) -> bool:
        return normalise_distribution(self.distribution) != BUILTIN_DISTRIBUTION


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
                except Exception as exc:  # a broken third-party plugin must not break us
                    error = _describe(exc)
                    self._module_failures.append(self._module_record(source, "failed", error))
                    self._warn(f"plugin '{ep.name}' from '{source.distribution}' failed to load: {error}")
                    continue
                sources[plugin_id] = source
            for kind in PluginKind:
                self._collect(kind, sources)
            self._mark_conflicts()
            self._warn_unmatched_blocks(external)
            self._loaded = True
            return self

    def _warn_unmatched_blocks(self, external: set[str]) -> None:
        """A name in the block list that matches nothing is a typo that blocks nothing: say so."""
        installed = {normalise_distribution(name) for name in external}
        for name in sorted(self._blocked - installed - {"*", "all"}):
            close = difflib.get_close_matches(name, sorted(installed), n=1, cutoff=0.5)
            if name == BUILTIN_DISTRIBUTION:
                why = "built-in plugins cannot be blocked"
            elif close:
                why = f"did you mean '{close[0]}'?"
            else:
                why = "installed: " + ", ".join(sorted(installed)) if installed else "none is installed"
            self._warn(f"{DISABLE_ENV_VAR}: '{name}' matches no external plugin, so it blocks nothing; {why}")

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

    @staticmethod
    def _warn(message: str) -> None:
        warnings.warn(message, PluginWarning, stacklevel=3)

    def _collect(self, kind: PluginKind, sources: dict[str, _Source]) -> None:
        hook = getattr(self._pm.hook, kind.hook_name)
        for impl in hook.get_hookimpls():
            source = sources[impl.plugin_name]
            try:
                classes = impl.function()
                rows = list(self._validate(kind, classes))
            except Exception as exc:
                error = _describe(exc)
                self._records.append(
                    PluginRecord(
                        kind=kind.value,
                        name=f"({source.entry_point})",
                        distribution=source.distribution,
                        version=source.version,
                        entry_point=source.entry_point,
                        status="failed",
                        error=error,
                    )
                )
                self._warn(
                    f"plugin '{source.entry_point}' from '{source.distribution}' failed to "
                    f"register its {kind.value}s: {error}"
                )
                continue
            for name, obj in rows:
                self._records.append(
                    PluginRecord(
                        kind=kind.value,
                        name=name,
                        distribution=source.distribution,
                        version=source.version,
                        entry_point=source.entry_point,
                        status="ok",
                        obj=obj,
                    )
                )

    @staticmethod
    def _validate(kind: PluginKind, classes: Any) -> Iterable[tuple[str, Any]]:
        if classes is None:
            return []
        if not isinstance(classes, (list, tuple)):
            raise TypeError(f"{kind.hook_name}() must return a list of classes, got {type(classes).__name__}")
        rows = []
        for obj in classes:
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or not _NAME_PATTERN.match(name):
                raise TypeError(f"{obj!r} needs a class attribute 'name' in lower snake case (got {name!r})")
            rows.append((name, obj))
        return rows

    def _mark_conflicts(self) -> None:
        by_key: dict[tuple[str, str], list[int]] = {}
        for index, record in enumerate(self._records):
            if record.status == "ok":
                by_key.setdefault((record.kind, record.name), []).append(index)
        for (kind, name), indices in by_key.items():
            if len(indices) < 2:
                continue
            owners = " and ".join(f"'{self._records[i].distribution}'" for i in indices)
            error = f"{kind} '{name}' is registered by both {owners}"
            for i in indices:
                self._records[i] = dataclasses.replace(self._records[i], status="conflict", error=error)
            self._warn(error + f"; uninstall one or block it with {DISABLE_ENV_VAR}")

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
        """Names that can be looked up for a kind (conflicting names included)."""
        kind_value = PluginKind(kind).value
        return sorted({r.name for r in self.records(kind) if r.kind == kind_value and r.obj is not None})

    def get(self, kind: PluginKind | str, name: str) -> Any:
        """The plugin class registered as ``name`` for ``kind``, or a clear error."""
        kind_value = PluginKind(kind).value
        matches = [r for r in self.records(kind) if r.kind == kind_value and r.name == name]
        ok = [r for r in matches if r.status == "ok"]
        if len(ok) == 1:
            return ok[0].obj
        conflicts = [r for r in matches if r.status == "conflict"]
        if conflicts:
            raise PluginConflictError(
                f"{conflicts[0].error}; uninstall one of them or block one with "
                f"{DISABLE_ENV_VAR}=<distribution>"
            )
        raise self._unknown(kind_value, name)

    def _unknown(self, kind: str, name: str) -> Exception:
        failed = [r for r in self.records(kind) if r.status == "failed" and r.kind in (kind, "*")]
        if failed:
            culprits = "; ".join(
                f"plugin '{r.entry_point}' from '{r.distribution}' failed ({r.error})" for r in failed
            )
            return PluginLoadError(
                f"unknown {kind} '{name}'; it may come from a plugin that failed to load: {culprits}"
            )
        known = self.names(kind)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known_text = ", ".join(known) if known else "none (is sat-toolkit installed? pip install -e .)"
        return UnknownPluginError(f"unknown {kind} '{name}'.{hint} Known {kind}s: {known_text}")


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
