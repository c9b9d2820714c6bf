"""Exponential moving average of the weights, checkpointed with the run as safetensors."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from sat_toolkit.errors import SatError, first_line

EMA_FILE = "ema.safetensors"


class WeightEMA:
    """timm's ``ModelEmaV3`` does the averaging; this wrapper saves and loads the averaged
    weights as a safetensors file of the checkpoint.

    Not a pickle handed to ``accelerator.register_for_checkpointing``: accelerate loads
    those with ``torch.load(weights_only=False)``, so a crafted checkpoint would run code on
    ``--resume``. A safetensors file holds tensors and nothing else.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=decay, stochastic_rounding=False)

    def update(self, model: nn.Module, step: int) -> None:
        self.ema.update(model, step=step)

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def save(self, checkpoint_dir: Path) -> Path:
        """Write the averaged weights and buffers to ``checkpoint_dir/ema.safetensors``."""
        from safetensors.torch import save_model

        path = Path(checkpoint_dir) / EMA_FILE
        # save_model (not save_file) drops tied duplicates that safetensors cannot store.
        save_model(self.ema.module, str(path))
        return path

    def load(self, checkpoint_dir: Path) -> None:
        """Read ``checkpoint_dir/ema.safetensors`` back, exactly (no dtype or value change)."""
        from safetensors.torch import load_model

        path = Path(checkpoint_dir) / EMA_FILE
        if not path.is_file():
            raise SatError(
                f"{path}: missing, but the recipe keeps an EMA (optimizer.ema); the checkpoint is "
                f"incomplete: delete {Path(checkpoint_dir)} to resume from the one before it, "
                "or start afresh in a new run.output_dir"
            )
        try:
            load_model(self.ema.module, str(path), strict=True)
        except Exception as error:  # a damaged header, another architecture, missing tensors
            raise SatError(
                f"{path}: not the EMA weights of this recipe's model ({first_line(error)}); delete "
                f"{Path(checkpoint_dir)} to resume from the checkpoint before it"
            ) from error
