"""Training objectives: PGD-AT (the default), TRADES, MART and standard training.

Each is a plugin of kind ``objective``, registered from the toolkit's own entry point
(``sat_toolkit.builtin.objectives``) as a third-party package would register its own.
"""

from __future__ import annotations

from typing import Any

from sat_toolkit.objectives.base import Objective, ObjectiveLoss
from sat_toolkit.objectives.mart import MART
from sat_toolkit.objectives.standard import PGDAT, Standard
from sat_toolkit.objectives.trades import TRADES

DEFAULT_OBJECTIVE = PGDAT.name
BUILTIN_OBJECTIVES: tuple[type[Objective], ...] = (PGDAT, TRADES, MART, Standard)


def build_objective(recipe: Any) -> Objective:
    """The recipe's objective, built from its ``[objective]`` section."""
    return recipe.objective.build()


__all__ = [
    "BUILTIN_OBJECTIVES",
    "DEFAULT_OBJECTIVE",
    "MART",
    "PGDAT",
    "TRADES",
    "Objective",
    "ObjectiveLoss",
    "Standard",
    "build_objective",
]
