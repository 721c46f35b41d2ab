"""The two networks of LAF (Shen et al., "Label-Agnostic Forgetting", AAAI 2024), authors' module names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models import resnet18

from lightning_unlearn.models.base import ClassifierBase
from lightning_unlearn.validation import is_integer


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, bool):
        raise ValueError(f"input_size must be an integer or a (height, width) pair, got {size!r}")
    if isinstance(size, int):
        return size, size
    values = tuple(size)
    if len(values) != 2 or not all(is_integer(v) for v in values):
        raise ValueError(f"input_size must be an integer or a (height, width) pair, got {size!r}")
    return values[0], values[1]


class LAFCNN(ClassifierBase):
    """LAF's MNIST / Fashion-MNIST CNN (arch id ``laf_cnn``).

    ``conv1`` = Conv(in, 16, 5, pad 2) -> ReLU -> MaxPool(2); ``conv2`` = Conv(16, 32, 5, pad 2) -> ReLU ->
    MaxPool(2); flatten -> ``fc1`` Linear(flat, 256) (the representation, no activation) -> head ``fc2`` =
    Linear(256, 128) -> Linear(128, C), with no nonlinearity in between (as in the authors' code). The flatten
    size is ``32 * (H // 4) * (W // 4)``: 1,568 at 28x28, 128 at 8x8. 449,098 parameters for 1x28x28, C = 10.

    Args:
        num_classes: Number of classes.
        in_channels: Number of input channels.
        input_size: Input height and width (an integer for square inputs), at least 4.
        mean: Per-channel input mean, or ``None``.
        std: Per-channel input std, or ``None``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int | tuple[int, int] = 28,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, 256, "fc2", mean, std)
        height, width = _pair(input_size)
        if height < 4 or width < 4:
            raise ValueError(f"laf_cnn needs inputs of at least 4x4 pixels, got input_size={input_size!r}")
        self.input_size = (height, width)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 16, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
        flat = 32 * (height // 2 // 2) * (width // 2 // 2)
        self.fc1 = nn.Linear(flat, 256)
        self.fc2 = nn.Sequential(nn.Linear(256, 128), nn.Linear(128, num_classes))

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the ``fc1`` output (256, no activation)."""
        x = self.conv2(self.conv1(self.normalize(x)))
        return self.fc1(torch.flatten(x, 1))

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits ``fc2(z)``."""
        return self.fc2(z)


class LAFResNet18(ClassifierBase):
    """LAF's CIFAR-10 / SVHN network at 224x224 (arch id ``laf_resnet18``).

    ``feature_extractor`` = the children of a randomly initialised torchvision ``resnet18()`` except ``fc``
    (ImageNet stem with max-pool, adaptive average pool), flatten 512 -> ``fc1`` Linear(512, 256) (the
    representation, no activation) -> head ``fc2`` Linear(256, C). Any input size works (adaptive pooling).
    11,310,410 parameters for C = 10.

    Args:
        num_classes: Number of classes.
        in_channels: Number of input channels (the stem is rebuilt when it is not 3).
        mean: Per-channel input mean, or ``None``.
        std: Per-channel input std, or ``None``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, 256, "fc2", mean, std)
        backbone = resnet18()
        if in_channels != 3:
            backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.feature_extractor = nn.Sequential(*list(backbone.children())[:-1])
        self.fc1 = nn.Linear(512, 256)
        self.fc2 = nn.Linear(256, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the ``fc1`` output (256, no activation)."""
        x = self.feature_extractor(self.normalize(x))
        return self.fc1(torch.flatten(x, 1))

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits ``fc2(z)``."""
        return self.fc2(z)
