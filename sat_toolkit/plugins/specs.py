"""The hook specifications: one ``sat_register_*`` hook per plugin kind.

A plugin package exposes a module through the ``sat_toolkit`` entry-point group and
implements any of these hooks. Each hook returns a list of classes; every class carries
its registry name in a ``name`` class attribute (lower snake case, e.g. ``"mish"``) and
is built from keyword parameters by the toolkit. The built-in plugins register through
exactly these hooks, from the toolkit's own entry points.
"""

from __future__ import annotations

import enum

import pluggy

PROJECT_NAME = "sat_toolkit"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class PluginKind(str, enum.Enum):
    """The kinds of plugin the toolkit discovers."""

    ACTIVATION = "activation"
    ATTACK = "attack"
    MODEL = "model"
    SCHEDULE = "schedule"
    DATASET = "dataset"
    OBJECTIVE = "objective"

    @property
    def hook_name(self) -> str:
        return f"sat_register_{self.value}s"


@hookspec
def sat_register_activations() -> list[type]:
    """Activation classes: ``nn.Module`` subclasses built from keyword parameters."""


@hookspec
def sat_register_attacks() -> list[type]:
    """Attack classes: built from keyword parameters (eps, steps, ...)."""


@hookspec
def sat_register_models() -> list[type]:
    """Model builders: classes whose instances build an ``nn.Module``."""


@hookspec
def sat_register_schedules() -> list[type]:
    """Schedules for the learning rate or the attack's epsilon."""


@hookspec
def sat_register_datasets() -> list[type]:
    """Dataset sources that yield images in [0, 1] and integer labels."""


@hookspec
def sat_register_objectives() -> list[type]:
    """Training objectives: the inner maximisation and the outer loss of one step (PGD-AT, TRADES, ...)."""
