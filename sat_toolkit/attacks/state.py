"""The model-state guarantee: an attack leaves the model exactly as it found it.

The attacker borrows the model in the middle of a training step. Whatever it does (and
also when it raises half-way) the model must come back with the same train/eval flag on
every submodule, the same ``requires_grad`` and ``.grad`` on every parameter, and the
same BatchNorm running statistics. :func:`preserve_model_state` is the one place that
implements this; every attack runs inside it.

Inside, parameters have ``requires_grad=False``: attacks differentiate w.r.t. the input
only, so autograd never builds (or accumulates into) parameter gradients.

Modes (``bn_mode``) for normalisation layers with running statistics:

* ``"eval"``: running statistics, as the official SAT code computes its attack.
* ``"train"``: batch statistics; the running averages are updated by the attack's
  forward passes, as in a model left in train mode, and rolled back on exit.
* ``"train_frozen"``: batch statistics without touching the running averages
  (``track_running_stats`` is switched off for the duration, so BatchNorm updates
  nothing; the buffers are still saved and restored, for layers such as InstanceNorm
  that update them regardless of the flag).

``train`` and ``train_frozen`` therefore give the same adversarial examples; the second
is cheaper. Every other module (dropout, drop-path) is put in eval mode: a stochastic
attacker is a weaker, irreproducible one.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

#: How BatchNorm behaves while the attack runs; see the module docstring.
BnMode = Literal["eval", "train", "train_frozen"]
BN_MODES: tuple[str, ...] = typing.get_args(BnMode)


def _norm_layers(model: nn.Module) -> list[_NormBase]:
    return [m for m in model.modules() if isinstance(m, _NormBase)]


@contextlib.contextmanager
def preserve_model_state(model: nn.Module, bn_mode: str = "eval") -> Iterator[nn.Module]:
    """Put ``model`` in attack mode for the body and restore every bit of its state after.

    Args:
        model: the model being attacked.
        bn_mode: ``"eval"``, ``"train"`` or ``"train_frozen"`` (see the module docstring).
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}; got {bn_mode!r}")
    modules = list(model.modules())
    flags = [m.training for m in modules]
    params = list(model.parameters())
    param_state = [(p.requires_grad, p.grad) for p in params]
    norms = _norm_layers(model) if bn_mode != "eval" else []
    tracking = [m.track_running_stats for m in norms]
    saved_buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
    for m in norms:  # empty in eval mode, where nothing can change them
        for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
            if buf is not None:
                saved_buffers.append((buf, buf.detach().clone()))
    try:
        for p in params:
            p.requires_grad_(False)
        # Set the attribute directly: Module.train() recurses and may be overridden
        # (e.g. to keep frozen BN in eval), and we restore it the same direct way.
        for m in modules:
            m.training = False
        for m in norms:
            m.training = True
            if bn_mode == "train_frozen":
                m.track_running_stats = False
        yield model
    finally:
        with torch.no_grad():
            for buf, saved in saved_buffers:
                buf.copy_(saved)
        for m, was_tracking in zip(norms, tracking, strict=True):
            m.track_running_stats = was_tracking
        for m, flag in zip(modules, flags, strict=True):
            m.training = flag
        for p, (requires_grad, grad) in zip(params, param_state, strict=True):
            p.requires_grad_(requires_grad)
            if p.grad is not grad:
                p.grad = grad
