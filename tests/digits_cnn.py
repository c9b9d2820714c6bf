"""A small SiLU CNN trained in about a second on the 8x8 digits, for evaluation tests.

Trained on the first 1200 digits; images from index 1200 on are held out. Some of them are
robust at eps 0.1 and some are not, which is what tests of an evaluation need.
"""

from __future__ import annotations

import torch
from torch import nn

TRAIN_IMAGES = 1200


def trained_digits_cnn(steps: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(the model in eval mode, all digits as [N, 1, 8, 8] in [0, 1], their labels)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.SiLU(), nn.Flatten(), nn.Linear(8 * 64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[:TRAIN_IMAGES]), y[:TRAIN_IMAGES]).backward()
        optimizer.step()
    return model.eval(), x, y
