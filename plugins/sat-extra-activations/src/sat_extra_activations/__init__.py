"""Mish and the parametric shifted SiLU as sat-toolkit activation plugins."""

from sat_extra_activations.activations import Mish, PSSiLU

__all__ = ["Mish", "PSSiLU"]
