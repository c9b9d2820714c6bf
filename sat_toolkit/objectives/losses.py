"""The divergences TRADES and MART add to cross-entropy, written once for both phases."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_per_sample(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) || softmax(adv)) per sample: sum_j p_j (log p_j - log q_j)."""
    log_p = F.log_softmax(clean_logits.float(), dim=1)
    log_q = F.log_softmax(adv_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)
