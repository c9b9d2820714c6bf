"""``timm``: any timm architecture, randomly initialised, with the chosen activation.

The activation goes in twice over: timm builds its blocks with it as ``act_layer``, and a
surgery sweep replaces what the architecture hard-codes (see
:func:`sat_toolkit.activations.create_timm_model`). A forward pass on one example then
lists functional activation calls (``F.relu``, ``F.gelu``, ... inside a ``forward``, e.g.
dm_nfnet_f0's ``GammaAct``) that no surgery can reach.
Those are not an error, since some architectures are meant to mix activations, but the
report is kept on the model as ``model.surgery_report`` and a warning names the calls.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Annotated, Any

import torch
from torch import nn

from sat_toolkit.activations.factory import ActivationSpec
from sat_toolkit.activations.surgery import (
    SurgeryReport,
    create_timm_model,
    find_functional_activations,
)
from sat_toolkit.data.info import DatasetInfo
from sat_toolkit.errors import SatError, first_line
from sat_toolkit.models.base import ModelBuilder
from sat_toolkit.models.init_from import load_initial_weights
from sat_toolkit.models.normalize import NormalizedModel
from sat_toolkit.models.pinning import check_pin, pin_build
from sat_toolkit.params import Param

#: timm arguments that the dataset and the activation decide.
RESERVED_KWARGS = ("in_chans", "num_classes", "act_layer")
#: timm arguments that make ``timm.create_model`` read or fetch weights. A model file's
#: ``sat_config`` and ``eval --arch NAME:key=value`` reach these keyword arguments, and
#: timm reads ``checkpoint_path`` with ``torch.load`` (older versions without
#: ``weights_only``), so a crafted model file could name a pickle to run.
FILE_KWARGS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


class ActivationSurgeryWarning(UserWarning):
    """The chosen activation could not be put everywhere the model applies a ReLU."""


class TimmModel(ModelBuilder):
    """A timm architecture by name; extra keyword parameters go to ``timm.create_model``.

    Args:
        architecture: a timm model name (``timm.list_models()``), e.g. ``"resnet18"``.
        pretrained: must stay false: weights are never downloaded.
        timm_version, num_params: what a checkpoint was built with (recorded in
            ``sat_config`` by every build); a rebuild that counts a different number of
            parameters is refused (:mod:`sat_toolkit.models.pinning`).
        init_from: a local ``.safetensors`` file to start from instead of random weights
            (fine-tuning; :mod:`sat_toolkit.models.init_from`). Not part of the rebuilt
            model's config: the trained weights replace it.
        init_head: also load the classifier from ``init_from``; false keeps a new,
            randomly initialised head (another number of classes).
        **timm_kwargs: passed on, e.g. ``drop_rate = 0.2`` or ``img_size = 32`` for ViTs.
    """

    name = "timm"
    description = "any timm architecture by name, random init, activation via act_layer + surgery"

    def __init__(
        self,
        architecture: str,
        pretrained: bool = False,
        timm_version: str | None = None,
        num_params: int | None = None,
        init_from: Annotated[str | None, Param(local="file")] = None,
        init_head: bool = True,
        **timm_kwargs: Any,
    ) -> None:
        import timm

        if not isinstance(architecture, str) or not timm.is_model(architecture):
            known = timm.list_models()
            close = (
                difflib.get_close_matches(str(architecture), known, n=3)
                or timm.list_models(f"*{architecture}*")[:3]
            )
            hint = f"; similar: {', '.join(close)}" if close else "; see timm.list_models()"
            raise SatError(f"model 'timm': unknown architecture {architecture!r}{hint}")
        if pretrained:
            raise SatError(
                "model 'timm': pretrained = true would download weights; remove it (random init only)"
            )
        reading = [key for key in timm_kwargs if key in FILE_KWARGS]
        if reading:
            raise SatError(
                f"model 'timm': parameter '{reading[0]}' would make timm read or fetch weights, which the "
                "toolkit never lets it do; remove it (to start from a file: init_from = a .safetensors file)"
            )
        reserved = [key for key in timm_kwargs if key in RESERVED_KWARGS]
        if reserved:
            raise SatError(
                f"model 'timm': parameter '{reserved[0]}' is set by the toolkit "
                "(in_chans/num_classes from the dataset, act_layer from the activation); remove it"
            )
        self.architecture = architecture
        self.timm_kwargs = dict(timm_kwargs)
        self.expected_timm_version = timm_version
        self.num_params = check_pin(self.name, num_params)
        self.init_from = init_from
        self.init_head = init_head

    def params(self) -> dict[str, Any]:
        return {"architecture": self.architecture, **self.timm_kwargs}

    def build_body(self, info: DatasetInfo, activation: ActivationSpec) -> nn.Module:
        body, report = self._create(info, activation)
        example = torch.rand(1, *info.input_shape)
        try:
            report.functional_calls = find_functional_activations(body, example)
        except Exception as exc:  # a shape mismatch is the usual cause: say which input failed
            size = "x".join(str(v) for v in info.input_shape)
            raise SatError(
                f"model 'timm' ({self.architecture}) fails on a {size} input "
                f"({first_line(exc, with_type=True)}); "
                "pass img_size if the architecture takes it, or pick another architecture"
            ) from None
        report.functional_checked = True
        body.surgery_report = report
        if self.init_from is not None:
            load_initial_weights(body, self.init_from, head=self.init_head)
        return body

    def _create(self, info: DatasetInfo, activation: ActivationSpec) -> tuple[nn.Module, SurgeryReport]:
        """``act_layer`` + sweep where timm takes our factory as ``act_layer``; else sweep only
        (:func:`~sat_toolkit.activations.surgery.create_timm_model` decides, and
        ``body.surgery_route`` says which)."""
        kwargs = {"in_chans": info.channels, "num_classes": info.num_classes, **self.timm_kwargs}
        return create_timm_model(self.architecture, activation, **kwargs)

    def build(self, info: DatasetInfo, activation: ActivationSpec) -> NormalizedModel:
        """As :meth:`ModelBuilder.build`, plus ``model.surgery_report`` (a :class:`SurgeryReport`)."""
        model = super().build(info, activation)
        pin_build(model, f"{self.name} {self.architecture}", self.num_params, self.expected_timm_version)
        report: SurgeryReport = model.body.surgery_report
        model.surgery_report = report
        if report.functional_calls:
            warnings.warn(
                f"model 'timm' ({self.architecture}): {report.summary()}",
                ActivationSurgeryWarning,
                stacklevel=2,
            )
        return model
