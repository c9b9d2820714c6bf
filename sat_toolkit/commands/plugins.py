"""``sat-toolkit plugins``: what is installed, where it came from, and whether it works."""

from __future__ import annotations

import json

import click

from sat_toolkit.commands.table import format_table
from sat_toolkit.plugins import DISABLE_ENV_VAR, PluginKind, PluginRecord, get_plugin_host


@click.command("plugins")
@click.option("--kind", type=click.Choice([k.value for k in PluginKind]), help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_command(kind: str | None, as_json: bool) -> None:
    """List plugins: kind, name, source distribution, version, status.

    Set SAT_TOOLKIT_DISABLE_PLUGINS to a comma-separated list of plugin or distribution
    names (or '*' for every external plugin) to rule out a bad install.
    """
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


def _status(record: PluginRecord) -> str:
    """The status column: why a plugin is not ``ok``, and for a shadowed one how to reach it."""
    if record.status in ("shadowed", "conflict"):
        return f"{record.status} ({record.error}; use '{record.qualified_name}')"
    return record.status + (f" ({record.error})" if record.error else "")
