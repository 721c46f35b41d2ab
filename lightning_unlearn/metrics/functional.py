"""Per-sample features that membership-inference attacks are fitted on.

All functions take float logits (any float dtype) and return float64 values (float32 logits are
promoted to float64; natural logarithms; ``0 ln 0 = 0``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor


def softmax64(logits: Tensor) -> Tensor:
    """Softmax over the last dimension, computed in float64.

    Args:
        logits: Logits of shape ``[n, C]``.

    Returns:
        Probabilities ``p`` of shape ``[n, C]`` in float64.
    """
    return torch.softmax(logits.to(torch.float64), dim=-1)


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy ``H = -sum_c p_c ln p_c`` of each row, with ``0 ln 0 = 0``.

    Args:
        probs: Probabilities of shape ``[n, C]``.

    Returns:
        Entropies of shape ``[n]`` (same dtype as ``probs``).
    """
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def true_class_confidence(probs: Tensor, target: Tensor) -> Tensor:
    """Probability ``p_y`` of each sample's stored label.

    Args:
        probs: Probabilities of shape ``[n, C]``.
        target: Integer labels of shape ``[n]``.

    Returns:
        Confidences of shape ``[n]``.
    """
    return probs.gather(1, target.long().unsqueeze(1)).squeeze(1)


def per_sample_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy ``-ln p_y`` of each sample, in float64.

    Args:
        logits: Logits of shape ``[n, C]``.
        target: Integer labels of shape ``[n]``.

    Returns:
        Losses of shape ``[n]`` in float64.
    """
    return F.cross_entropy(logits.to(torch.float64), target.long(), reduction="none")
