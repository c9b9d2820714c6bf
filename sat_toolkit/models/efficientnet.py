"""``efficientnet`` (B0..B8, L1, L2) and ``efficientnet_l1``: the paper's scaling experiment.

SAT's headline result is EfficientNet-L1 (82.2 % clean / 58.6 % PGD robust on ImageNet):
EfficientNet scaled by width 3.9 and depth 3.7 at 600 px with dropout 0.5, the
Noisy-Student L1. timm registers B0..B8 and L2 but no L1, so every variant here is
built by calling timm's own EfficientNet generator
(``timm.models.efficientnet._gen_efficientnet``) with the multipliers from
:data:`SCALING`: the block definitions, channel rounding and depth rounding stay timm's,
and B0 here is parameter-for-parameter timm's ``efficientnet_b0``. Random init only.

The activation goes in as timm's ``act_layer`` (:attr:`ActivationFactory.layer`), which
reaches every block, stem/head BatchNorm-act and squeeze-excite reduction; the SE gates
stay sigmoids. A surgery sweep afterwards must find nothing; if a future timm hard-codes
an activation, the sweep replaces it and an :class:`ActivationSurgeryWarning` says so.
There is no functional-call probe (a forward pass of L1 costs seconds): timm's
EfficientNet blocks apply activations only as modules, which the tests check on B0.

``sat_config`` records everything that decides the architecture: variant, width and
depth multipliers, resolution, dropout, drop-path rate, TF compatibility, the timm
version, and the number of parameters built. A checkpoint rebuilt under another timm
whose generator gives a different parameter count fails loudly instead of meaning
something else; :func:`sat_toolkit.models.rebuild_model` passes ``num_params`` back in.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from torch import nn

from sat_toolkit.activations.factory import ActivationFactory, ActivationSpec
from sat_toolkit.activations.surgery import replace_activations
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.errors import SatError
from sat_toolkit.models.base import DropRate, ModelBuilder, PositiveFloat, PositiveInt
from sat_toolkit.models.normalize import NormalizedModel
from sat_toolkit.models.pinning import check_pin, pin_build, timm_version
from sat_toolkit.models.timm_model import ActivationSurgeryWarning

#: variant -> (width multiplier, depth multiplier, resolution, dropout).
#: B0..B8 and L2 are timm's table (``_gen_efficientnet``'s docstring, from the TF
#: reference); L1 is Noisy Student's (Xie et al. 2020), as SAT uses it.
SCALING: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
    "b8": (2.2, 3.6, 672, 0.5),
    "l1": (3.9, 3.7, 600, 0.5),
    "l2": (4.3, 5.3, 800, 0.5),
}
#: Stochastic depth of the TF reference and timm's training notes.
DROP_PATH_RATE = 0.2
#: BatchNorm epsilon of the TF reference (and the official SAT code); PyTorch's is 1e-5.
TF_BN_EPS = 1e-3
TIMM_GENERATOR = "timm.models.efficientnet._gen_efficientnet"


class EfficientNet(ModelBuilder):
    """EfficientNet by variant, scaled with timm's generator (see the module docstring).

    Args:
        variant: ``"b0"`` .. ``"b8"``, ``"l1"`` or ``"l2"`` (default ``"b0"``); picks the
            defaults below.
        width_multiplier: channel multiplier (default: the variant's).
        depth_multiplier: per-stage repeat multiplier, rounded up (default: the variant's).
        resolution: the training/evaluation image size this model is meant for (default:
            the variant's). Recorded for the recipe; the network itself takes any size.
        dropout: dropout before the classifier (default: the variant's).
        drop_path_rate: stochastic-depth rate, scaled linearly over the blocks.
        tf_compatible: TF's BatchNorm epsilon (1e-3) and "same" padding, as in the
            official SAT (TensorFlow) code; slower in PyTorch. Same parameter count.
        timm_version: the timm version a checkpoint was built with (recorded; on rebuild
            a different installed version warns unless ``num_params`` confirms the build).
        num_params: the parameter count a checkpoint was built with; a build that
            differs is an error.
    """

    name = "efficientnet"
    description = "EfficientNet B0..B8/L1/L2 via timm's generator (width/depth/resolution/dropout table)"
    #: Variants this plugin accepts.
    variants: ClassVar[tuple[str, ...]] = tuple(SCALING)
    #: The variant built when the recipe names none.
    default_variant: ClassVar[str] = "b0"

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """A variant this class builds (the L1 plugin builds only ``l1``)."""
        variant = params.get("variant")
        if variant is not None and variant not in cls.variants:
            hint = "; model 'efficientnet' builds it" if variant in SCALING else ""
            known = ", ".join(cls.variants)
            raise SatError(f"variant: unknown variant {variant!r}; use one of {known}{hint}")

    def __init__(
        self,
        variant: str | None = None,
        width_multiplier: PositiveFloat | None = None,
        depth_multiplier: PositiveFloat | None = None,
        resolution: PositiveInt | None = None,
        dropout: DropRate | None = None,
        drop_path_rate: DropRate = DROP_PATH_RATE,
        tf_compatible: bool = False,
        timm_version: str | None = None,
        num_params: int | None = None,
    ) -> None:
        variant = self.default_variant if variant is None else variant
        width, depth, size, drop = SCALING[variant]
        self.variant = variant
        self.width_multiplier = width if width_multiplier is None else width_multiplier
        self.depth_multiplier = depth if depth_multiplier is None else depth_multiplier
        self.resolution = size if resolution is None else resolution
        self.dropout = drop if dropout is None else dropout
        self.drop_path_rate = drop_path_rate
        self.tf_compatible = tf_compatible
        self.expected_timm_version = timm_version
        self.num_params = check_pin(self.name, num_params)

    @property
    def timm_variant(self) -> str:
        """The name timm's generator gets (timm's registered name for B0..B8 and L2)."""
        return f"{'tf_' if self.tf_compatible else ''}efficientnet_{self.variant}"

    def params(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "width_multiplier": self.width_multiplier,
            "depth_multiplier": self.depth_multiplier,
            "resolution": self.resolution,
            "dropout": self.dropout,
            "drop_path_rate": self.drop_path_rate,
            "tf_compatible": self.tf_compatible,
            "timm_version": timm_version(),
            "num_params": self.num_params,
        }

    def timm_kwargs(self, info: DatasetInfo) -> dict[str, Any]:
        """Everything passed to timm's generator besides ``act_layer``."""
        kwargs: dict[str, Any] = {
            "channel_multiplier": self.width_multiplier,
            "depth_multiplier": self.depth_multiplier,
            "pretrained": False,
            # Our own config: no registry lookup (L1 has no entry), nothing to download.
            "pretrained_cfg": {
                "architecture": self.timm_variant,
                "input_size": (info.channels, self.resolution, self.resolution),
                "interpolation": "bicubic",
                "crop_pct": 0.875,
                "mean": info.mean,
                "std": info.std,
                "num_classes": info.num_classes,
            },
            "num_classes": info.num_classes,
            "in_chans": info.channels,
            "drop_rate": self.dropout,
            "drop_path_rate": self.drop_path_rate,
        }
        if self.tf_compatible:
            kwargs.update(bn_eps=TF_BN_EPS, pad_type="same")
        return kwargs

    def build_body(self, info: DatasetInfo, activation: ActivationSpec) -> nn.Module:
        try:
            from timm.models.efficientnet import _gen_efficientnet
        except ImportError:
            raise SatError(
                f"model '{self.name}': timm {timm_version()} has no {TIMM_GENERATOR}; install the "
                f"timm version the model was built with ({self.expected_timm_version or 'any 1.0.x'})"
            ) from None
        factory = ActivationFactory(activation)
        body = _gen_efficientnet(self.timm_variant, act_layer=factory.layer, **self.timm_kwargs(info))
        report = replace_activations(body, activation)
        if report.replaced:
            warnings.warn(
                f"model '{self.name}' ({self.variant}): timm hard-codes activations act_layer did not reach; "
                f"the sweep {report.summary()}",
                ActivationSurgeryWarning,
                stacklevel=3,
            )
        body.surgery_report = report
        body.surgery_route = "act_layer+sweep"
        return body

    def build(self, info: DatasetInfo, activation: ActivationSpec) -> NormalizedModel:
        """As :meth:`ModelBuilder.build`; records and checks the parameter count."""
        model = super().build(info, activation)
        pin_build(model, f"{self.name} {self.variant}", self.num_params, self.expected_timm_version)
        model.surgery_report = model.body.surgery_report
        return model


class EfficientNetL1(EfficientNet):
    """EfficientNet-L1 (width 3.9, depth 3.7, 600 px, dropout 0.5): SAT's largest model.

    Args:
        variant: must stay ``"l1"`` (recorded in ``sat_config``); use ``efficientnet``
            for other variants.
        width_multiplier, depth_multiplier, resolution, dropout, drop_path_rate,
        tf_compatible, timm_version, num_params: as for ``efficientnet``.
    """

    name = "efficientnet_l1"
    description = (
        "EfficientNet-L1 (Noisy Student scaling w3.9 d3.7, 600 px, dropout 0.5), SAT's headline model"
    )
    variants = ("l1",)
    default_variant = "l1"
