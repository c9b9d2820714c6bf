"""User-facing errors.

Every mistake a user can make (a bad recipe key, an unknown plugin name, a missing data
path) raises a :class:`SatError`. The CLI prints it as one line and exits with code 2,
without a traceback; library callers can catch it like any other exception.
"""

from __future__ import annotations

import re

import click

#: torch re-raises an error from a DataLoader worker as the same class with this message:
#: "Caught SatError in DataLoader worker process 0.\nOriginal Traceback ...\n<module.Class>: <message>".
_WORKER_TRACEBACK = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")
_QUALIFIED_CLASS = re.compile(r"^[\w.]+: ")


def _without_worker_traceback(message: str) -> str:
    """The one line a SatError raised in a data-loading worker was made with, not the worker's traceback."""
    if not isinstance(message, str) or not _WORKER_TRACEBACK.match(message):
        return message
    last = message.strip().splitlines()[-1]
    return _QUALIFIED_CLASS.sub("", last, count=1)


def first_line(error: BaseException, *, with_type: bool = False) -> str:
    """An error's message reduced to its first line (160 characters at most), for one-line reports.

    A first line that is a header ending in ":" ("Error(s) in loading state_dict for X:")
    keeps its first item too, which is what names the problem. A message-less error reads
    as its class name; ``with_type`` prefixes the class name where the message alone would
    not say what failed (a library's ``KeyError: 'x'``).
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = lines[0][:160]
    if line.endswith(":") and len(lines) > 1:  # a header ("Error(s) in loading state_dict for X:")
        line = f"{line} {lines[1][:200]}"
    return f"{type(error).__name__}: {line}" if with_type else line


class SatError(click.ClickException):
    """A problem the user can fix; the message says what and how."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(_without_worker_traceback(message))

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
