"""An example sat-toolkit plugin package: Mish and PSSiLU, the MI-FGSM attack, a triangular lr schedule."""

from sat_extra_activations.activations import Mish, PSSiLU
from sat_extra_activations.attacks import MIFGSM
from sat_extra_activations.schedules import Triangular

__all__ = ["MIFGSM", "Mish", "PSSiLU", "Triangular"]
