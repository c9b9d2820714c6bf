"""Which phase a forward/backward pass belongs to: the attacker's or the optimiser's.

SAT's gradient study (PAPER.md, Result 1) swaps ReLU's gradient for a smooth one in the
attacker's backward passes, the optimiser's, or both. The surrogate activation therefore
needs to know, for each backward pass, which of the two it serves.

The phase is held in a :class:`contextvars.ContextVar`, so it is private to each thread
(and asyncio task), and :func:`attack_phase` restores the previous value on exit, also
when the body raises. Activations read the phase during the *forward* pass and store it
with the autograd node: an autograd graph built inside ``attack_phase()`` is an attacker
graph, whichever thread autograd later runs its backward on.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
from collections.abc import Iterator


class Phase(str, enum.Enum):
    """The two consumers of gradients in adversarial training."""

    ATTACK = "attack"
    TRAIN = "train"


_current_phase: contextvars.ContextVar[Phase] = contextvars.ContextVar(
    "sat_toolkit_phase", default=Phase.TRAIN
)
_surrogates_on: contextvars.ContextVar[bool] = contextvars.ContextVar("sat_toolkit_surrogates", default=True)


def current_phase() -> Phase:
    """The phase of the code running now; ``Phase.TRAIN`` outside any attack."""
    return _current_phase.get()


@contextlib.contextmanager
def attack_phase() -> Iterator[None]:
    """Mark everything inside as the attacker's work (inner maximisation)."""
    token = _current_phase.set(Phase.ATTACK)
    try:
        yield
    finally:
        _current_phase.reset(token)


@contextlib.contextmanager
def train_phase() -> Iterator[None]:
    """Mark everything inside as the optimiser's work, even within an attack."""
    token = _current_phase.set(Phase.TRAIN)
    try:
        yield
    finally:
        _current_phase.reset(token)


def surrogate_gradients_enabled() -> bool:
    """False inside :func:`true_gradients`: every surrogate back-propagates its real gradient."""
    return _surrogates_on.get()


@contextlib.contextmanager
def true_gradients() -> Iterator[None]:
    """Switch every surrogate gradient off: attacks inside see the gradient of the function
    the model really computes.

    The evaluation runs its attacks in here (and, for models trained with a surrogate for
    the attacker, once more outside it), so a robustness number never rests on a gradient
    the training run chose.
    """
    token = _surrogates_on.set(False)
    try:
        yield
    finally:
        _surrogates_on.reset(token)
