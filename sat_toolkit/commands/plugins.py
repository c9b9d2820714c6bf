"""``sat-toolkit plugins``: what is installed, where it came from, and whether it works."""

from __future__ import annotations

import difflib
import json

import click

from sat_toolkit.commands.plugin_params_view import parameter_rows
from sat_toolkit.commands.table import format_table
from sat_toolkit.errors import SatError
from sat_toolkit.plugins import DISABLE_ENV_VAR, PluginKind, PluginRecord, get_plugin_host
from sat_toolkit.plugins.manager import PluginHost, split_qualified


@click.command("plugins")
@click.option("--kind", type=click.Choice([k.value for k in PluginKind]), help="Only this kind.")
@click.option("--show", "show", metavar="NAME", help="A plugin's parameters: type, default, bounds, doc.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_command(kind: str | None, show: str | None, as_json: bool) -> None:
    """List plugins: kind, name, source distribution, version, status.

    Set SAT_TOOLKIT_DISABLE_PLUGINS to a comma-separated list of plugin or distribution
    names (or '*' for every external plugin) to rule out a bad install.
    """
    if show is not None:
        _show(show, kind, as_json)
        return
    records = get_plugin_host().records(kind)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "kind": r.kind,
                        "name": r.name,
                        "qualified_name": r.qualified_name if r.kind != "*" else None,
                        "distribution": r.distribution,
                        "version": r.version,
                        "entry_point": r.entry_point,
                        "status": r.status,
                        "error": r.error,
                    }
                    for r in records
                ],
                indent=2,
            )
        )
        return
    rows = [(r.kind, r.name, r.distribution, r.version, _status(r)) for r in records]
    click.echo(format_table(("kind", "name", "distribution", "version", "status"), rows))
    if any(r.status in ("shadowed", "conflict") for r in records):
        click.echo("\na shadowed or conflicting plugin is used by its qualified name: <distribution>:<name>")
    if any(r.status in ("failed", "conflict") for r in records):
        click.echo(f"\nblock a plugin with {DISABLE_ENV_VAR}=<name>[,<name>...] ('*' blocks all external)")


def _show(name: str, kind: str | None, as_json: bool) -> None:
    """The parameters of plugin ``name`` (of ``kind``, needed when several kinds use the name)."""
    host = get_plugin_host()
    # Every kind with a plugin of that name, usable or not: a name two packages share, or
    # whose plugin failed to load, then gets host.get's message saying so (not "no plugin").
    bare = split_qualified(name)[1]
    kinds = [kind] if kind else [k.value for k in PluginKind if _has_name(host, k.value, bare)]
    if len(kinds) > 1:
        raise SatError(
            f"--show {name}: plugins of several kinds are called that ({', '.join(kinds)}); add --kind"
        )
    if not kinds:
        known = sorted({n for k in PluginKind for n in host.names(k.value)})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "; sat-toolkit plugins lists them"
        raise SatError(f"--show {name}: no plugin has that name{hint}")
    cls = host.get(kinds[0], name)  # an unknown name of --kind: one line with the closest match
    record = next((r for r in host.records(kinds[0]) if r.obj is cls), None)
    rows = parameter_rows(kinds[0], cls)
    if as_json:
        click.echo(
            json.dumps({"kind": kinds[0], "name": name, "parameters": [r.to_dict() for r in rows]}, indent=2)
        )
        return
    source = f" from {record.distribution} {record.version}" if record is not None else ""
    click.echo(f"{kinds[0]} '{name}'{source}: {getattr(cls, 'description', '') or cls.__name__}\n")
    if not rows:
        click.echo("no parameters")
        return
    table = [(r.name, r.type, r.default, r.bounds, r.doc) for r in rows]
    click.echo(format_table(("parameter", "type", "default", "bounds", "doc"), table))


def _has_name(host: PluginHost, kind: str, bare: str) -> bool:
    return any(r.kind == kind and r.name == bare for r in host.records(kind))


def _status(record: PluginRecord) -> str:
    """The status column: why a plugin is not ``ok``, and for a shadowed one how to reach it."""
    if record.status in ("shadowed", "conflict"):
        return f"{record.status} ({record.error}; use '{record.qualified_name}')"
    return record.status + (f" ({record.error})" if record.error else "")
