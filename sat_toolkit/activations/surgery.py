"""Model surgery: put the chosen activation everywhere a model has one.

Two routes, usable together:

* :func:`replace_activations` walks any ``nn.Module`` (timm models included) and swaps
  every activation *module* for a fresh instance of the chosen activation.
* :func:`create_timm_model` hands timm an :class:`ActivationFactory` as ``act_layer`` at
  creation, then sweeps with :func:`replace_activations` for layers timm hard-codes.

Module surgery cannot reach ``F.relu(x)`` written inside a ``forward``. Those calls are
found by :func:`find_functional_activations`, which runs one forward pass under a
``TorchFunctionMode`` and names the module that made each call, so they are reported
instead of silently left behind.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from sat_toolkit.activations.base import Activation
from sat_toolkit.activations.factory import ActivationFactory, ActivationSpec
from sat_toolkit.errors import SatError

#: Module types that surgery treats as activations. Gates (Sigmoid, Hardsigmoid) are not
#: activations in this sense: squeeze-excite blocks need them as they are.
TORCH_ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Hardswish,
    nn.Hardtanh,
)

#: Functional calls that surgery cannot replace; any made outside an activation module
#: is reported. The functional twin of every module type above (gates such as sigmoid
#: are left out, as they are there), in each spelling torch offers.
FUNCTIONAL_ACTIVATIONS: dict[Callable[..., Any], str] = {
    **{getattr(F, name): f"torch.nn.functional.{name}" for name in (
        "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "prelu", "rrelu", "rrelu_",
        "elu", "elu_", "celu", "celu_", "selu", "selu_", "gelu", "silu", "mish", "softplus",
        "hardswish", "hardtanh", "hardtanh_",
    )},
    **{getattr(torch, name): f"torch.{name}" for name in (
        "relu", "relu_", "prelu", "rrelu", "rrelu_", "selu", "selu_", "celu", "celu_",
    )},
    **{getattr(torch.Tensor, name): f"Tensor.{name}" for name in ("relu", "relu_")},
}  # fmt: skip


def _timm_activation_types() -> tuple[type[nn.Module], ...]:
    try:
        from timm.layers import activations as timm_acts
    except ImportError:  # timm is a dependency, but surgery works on plain torch too
        return ()
    names = ("Swish", "Mish", "GELU", "GELUTanh", "QuickGELU", "HardSwish", "HardMish", "PReLU", "Tanh")
    return tuple(getattr(timm_acts, n) for n in names if hasattr(timm_acts, n) and n != "Tanh")


def activation_types() -> tuple[type[nn.Module], ...]:
    """Every module type surgery replaces: torch's, timm's and all registered activations."""
    from sat_toolkit.plugins import PluginKind, get_plugin_host

    registered = tuple(
        record.obj
        for record in get_plugin_host().records(PluginKind.ACTIVATION)
        if record.obj is not None and isinstance(record.obj, type)
    )
    return TORCH_ACTIVATION_TYPES + _timm_activation_types() + registered + (Activation,)


def is_activation(module: nn.Module) -> bool:
    return isinstance(module, activation_types())


@dataclasses.dataclass
class SurgeryReport:
    """What surgery changed and what it could not reach."""

    replaced: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> old type
    functional_calls: list[str] = dataclasses.field(default_factory=list)  # "path: fn"
    functional_checked: bool = False
    #: Places that already held the activation (timm built them with it as ``act_layer``).
    already: int = 0

    @property
    def replaced_counts(self) -> dict[str, int]:
        return dict(collections.Counter(self.replaced.values()))

    def summary(self) -> str:
        counts = ", ".join(f"{n} x{c}" for n, c in sorted(self.replaced_counts.items())) or "nothing"
        text = f"replaced {len(self.replaced)} activation modules ({counts})"
        if self.already:  # "replaced 0 (nothing)" read as if the model kept its ReLUs
            text += f"; {self.already} already were the activation"
        if not self.functional_checked:
            return text + "; functional calls not checked (no example input)"
        if self.functional_calls:
            return text + "; functional activations surgery cannot reach: " + ", ".join(self.functional_calls)
        return text + "; no functional activation calls"


def replace_activations(
    model: nn.Module,
    activation: ActivationSpec,
    *,
    example_input: torch.Tensor | None = None,
    strict: bool = False,
    report: SurgeryReport | None = None,
) -> SurgeryReport:
    """Replace every activation module in ``model`` (in place) with ``activation``.

    Args:
        model: any module; timm's fused ``BatchNormAct2d`` layers are reached too.
        activation: a registered name or ``{"name": ..., **params}``.
        example_input: if given, one forward pass finds functional ReLU calls.
        strict: raise instead of reporting when functional calls remain.
    """
    factory = ActivationFactory(activation)
    report = report or SurgeryReport()
    targets = activation_types()
    # Every place a module sits, not only its first: one ReLU instance reused at two places
    # (nn.Sequential(lin, relu, lin, relu)) was replaced at the first and left at the second.
    candidates = [
        (path, module)
        for path, module in model.named_modules(remove_duplicate=False)
        if path and isinstance(module, targets)
    ]
    # A module nested in an activation (the surrogate's smooth function) goes with its parent;
    # collect first, then swap: mutating while iterating named_modules would skip children.
    outer = [(path, module) for path, module in candidates if not _inside_activation(path, candidates)]
    found = [(path, module) for path, module in outer if not _already(module, factory)]
    report.already += len(outer) - len(found)
    replacements: dict[int, nn.Module] = {}  # shared before, shared after (a learnable one stays one)
    for path, module in found:
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if id(module) not in replacements:
            replacements[id(module)] = factory()
            replacements[id(module)].train(module.training)
        replacement = replacements[id(module)]
        if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
            parent[int(attr)] = replacement
        else:
            setattr(parent, attr, replacement)
        report.replaced.setdefault(path, type(module).__name__)
    if example_input is not None:
        report.functional_calls = find_functional_activations(model, example_input)
        report.functional_checked = True
        if strict and report.functional_calls:
            raise SatError(
                "activation surgery cannot replace functional calls in: "
                + ", ".join(report.functional_calls)
                + "; build the model with the activation as act_layer or edit its forward"
            )
    return report


def _already(module: nn.Module, factory: ActivationFactory) -> bool:
    """True when ``module`` is exactly what the factory would build (nothing to do)."""
    if not isinstance(module, type(factory.prototype)):
        return False
    hparams = getattr(module, "hparams", None)
    return hparams is None or hparams() == factory.prototype.hparams()


def _inside_activation(path: str, found: Iterable[tuple[str, nn.Module]]) -> bool:
    """A module nested in an activation being replaced goes with its parent."""
    return any(path.startswith(other + ".") for other, _ in found)


class _FunctionalActivationRecorder(TorchFunctionMode):
    def __init__(self, stack: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.stack = stack
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        label = FUNCTIONAL_ACTIVATIONS.get(func)
        if label is not None:
            owner_path, owner = self.stack[-1] if self.stack else ("<model>", None)
            if owner is None or not is_activation(owner):
                entry = f"{owner_path or '<root>'}: {label}"
                if entry not in self.calls:
                    self.calls.append(entry)
        return func(*args, **kwargs)


def find_functional_activations(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Run one forward pass and list ``"module.path: function"`` for each functional activation.

    Calls made inside activation modules (ours or torch's) are not reported: those modules
    are what surgery replaces.
    """
    stack: list[tuple[str, nn.Module]] = []

    def enter(path: str, module: nn.Module) -> None:
        stack.append((path, module))

    def leave() -> None:  # a forward hook's return value would replace the output
        stack.pop()

    handles = []
    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda mod, _inp, p=path: enter(p, mod)))
        handles.append(module.register_forward_hook(lambda *_args: leave()))
    was_training = model.training
    recorder = _FunctionalActivationRecorder(stack)
    try:
        model.eval()
        with torch.no_grad(), recorder:
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return recorder.calls


def count_modules(model: nn.Module, types: tuple[type[nn.Module], ...]) -> int:
    return sum(isinstance(m, types) for m in model.modules())


def create_timm_model(
    architecture: str,
    activation: ActivationSpec,
    *,
    example_input: torch.Tensor | None = None,
    strict: bool = False,
    **timm_kwargs: Any,
) -> tuple[nn.Module, SurgeryReport]:
    """``timm.create_model`` with ``act_layer`` set to the activation (never downloads).

    timm builds its blocks with our activation; a surgery sweep then replaces any layer
    the architecture hard-codes, and the report says what was swapped afterwards. Some
    architectures have no ``act_layer`` argument (``dla34``, ``legacy_xception``) and some
    refuse what is given there (older timm's norm-act layers asserted a class or function):
    those are built plain and the sweep alone swaps every activation module.
    ``model.surgery_route`` says which (``"act_layer+sweep"`` or ``"sweep"``).
    """
    import timm

    timm_kwargs.setdefault("pretrained", False)
    if timm_kwargs["pretrained"]:
        raise SatError("create_timm_model: pretrained weights would be downloaded; set pretrained=false")
    factory = ActivationFactory(activation)
    try:
        model = timm.create_model(architecture, act_layer=factory.layer, **timm_kwargs)
        route = "act_layer+sweep"
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):
            raise
        raise SatError(f"unknown timm architecture '{architecture}'.{_similar(architecture)}") from None
    except (TypeError, AssertionError):  # act_layer refused: build plain and rely on the sweep
        try:
            model = timm.create_model(architecture, **timm_kwargs)
        except TypeError as exc:
            raise SatError(f"timm architecture '{architecture}': {exc}") from None
        route = "sweep"
    model.surgery_route = route
    report = replace_activations(model, activation, example_input=example_input, strict=strict)
    return model, report


def _similar(architecture: str) -> str:
    """`` Similar: a, b`` from timm's names containing ``architecture``, else the closest spellings."""
    import difflib

    import timm

    close = timm.list_models(f"*{architecture}*")[:5] or difflib.get_close_matches(
        architecture, timm.list_models(), n=5
    )
    return f" Similar: {', '.join(close)}" if close else ""
