"""Activations: the smooth family, the gradient surrogate, factories and model surgery."""

from sat_toolkit.activations.base import Activation
from sat_toolkit.activations.builtin import (
    CELU,
    ELU,
    GELU,
    ParametricSoftplus,
    ReLU,
    SiLU,
    SmoothReLU,
    Softplus,
)
from sat_toolkit.activations.factory import (
    ActivationFactory,
    create_activation,
    resolve_activation,
)
from sat_toolkit.activations.surgery import (
    SurgeryReport,
    create_timm_model,
    find_functional_activations,
    replace_activations,
)
from sat_toolkit.activations.surrogate import SmoothGradientReLU

__all__ = [
    "CELU",
    "ELU",
    "GELU",
    "Activation",
    "ActivationFactory",
    "ParametricSoftplus",
    "ReLU",
    "SiLU",
    "SmoothGradientReLU",
    "SmoothReLU",
    "Softplus",
    "SurgeryReport",
    "create_activation",
    "create_timm_model",
    "find_functional_activations",
    "replace_activations",
    "resolve_activation",
]
