"""Models: the plugin contract, normalisation-in-the-model, and the built-in architectures.

Contract (see :mod:`sat_toolkit.models.base`): a model plugin is built from keyword
parameters and ``build(info: DatasetInfo, activation) -> nn.Module`` returns a
:class:`NormalizedModel` taking [0, 1] images, with ``sat_config`` set
(:mod:`sat_toolkit.models.config`) so a checkpoint can be rebuilt by
:func:`rebuild_model`.
"""

from sat_toolkit.models.base import ModelBuilder
from sat_toolkit.models.config import SAT_CONFIG_VERSION, make_sat_config, rebuild_model
from sat_toolkit.models.factory import create_model, create_model_builder
from sat_toolkit.models.normalize import Normalize, NormalizedModel
from sat_toolkit.models.preact_resnet import PreActBlock, PreActResNet18
from sat_toolkit.models.small_cnn import SmallCNN
from sat_toolkit.models.timm_model import ActivationSurgeryWarning, TimmModel
from sat_toolkit.models.wide_resnet import WideResNet

BUILTIN_MODELS: tuple[type[ModelBuilder], ...] = (SmallCNN, PreActResNet18, WideResNet, TimmModel)

__all__ = [
    "BUILTIN_MODELS",
    "SAT_CONFIG_VERSION",
    "ActivationSurgeryWarning",
    "ModelBuilder",
    "Normalize",
    "NormalizedModel",
    "PreActBlock",
    "PreActResNet18",
    "SmallCNN",
    "TimmModel",
    "WideResNet",
    "create_model",
    "create_model_builder",
    "make_sat_config",
    "rebuild_model",
]
