"""User-facing errors.

Every mistake a user can make (a bad recipe key, an unknown plugin name, a missing data
path) raises a :class:`SatError`. The CLI prints it as one line and exits with code 2,
without a traceback; library callers can catch it like any other exception.
"""

from __future__ import annotations

import click


class SatError(click.ClickException):
    """A problem the user can fix; the message says what and how."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message


class PluginError(SatError):
    """A plugin could not be found, loaded or told apart from another one."""


class UnknownPluginError(PluginError):
    """No plugin of the requested kind carries the requested name."""


class PluginConflictError(PluginError):
    """Two distributions register a plugin of the same kind under the same name."""


class PluginLoadError(PluginError):
    """The plugin that would provide a name failed on import or registration."""
