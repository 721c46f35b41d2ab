"""A tiny CNN for tests and the 8x8 digits (library decision)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.models.base import ClassifierBase


class TinyCNN(ClassifierBase):
    """A few-thousand-parameter CNN for any input size (arch id ``tiny_cnn``).

    ``conv`` Conv(in, 8, 3, pad 1) -> [``bn`` BatchNorm2d(8) when ``batch_norm``] -> ReLU -> AdaptiveAvgPool(4)
    -> flatten 128 -> ``fc1`` Linear(128, 32) -> ReLU (the representation, 32) -> head ``fc2`` Linear(32, C).
    4,538 parameters for one input channel and C = 10 (4,554 with ``batch_norm``). The BatchNorm option lets tests
    cover BN-mode handling.

    Args:
        num_classes: Number of classes.
        in_channels: Number of input channels.
        mean: Per-channel input mean, or ``None``.
        std: Per-channel input std, or ``None``.
        batch_norm: Insert a BatchNorm2d after the convolution.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(num_classes, in_channels, 32, "fc2", mean, std)
        self.conv = nn.Conv2d(in_channels, 8, kernel_size=3, padding=1)
        self.bn: nn.Module | None = nn.BatchNorm2d(8) if batch_norm else None
        self.fc1 = nn.Linear(128, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the 32-d post-ReLU ``fc1`` output."""
        x = self.conv(self.normalize(x))
        if self.bn is not None:
            x = self.bn(x)
        x = F.adaptive_avg_pool2d(F.relu(x), 4)
        return F.relu(self.fc1(torch.flatten(x, 1)))

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits ``fc2(z)``."""
        return self.fc2(z)
