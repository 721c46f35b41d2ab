"""ResNets for 32x32 inputs: Precision's / SSD's ResNet-18, L2UL's ResNet-18 with max-pool and ResNet-50."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18

from lightning_unlearn.models.base import ClassifierBase


class CifarBasicBlock(nn.Module):
    """Basic residual block of the CIFAR ResNet-18 (``conv1``/``bn1``/``conv2``/``bn2`` + ``shortcut``).

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of ``conv1`` and of the projection shortcut.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Return ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(ClassifierBase):
    """ResNet-18 for 32x32 images of Precision (Strozzi et al.), the same network as SSD's (arch ``cifar_resnet18``).

    ``conv1`` 3x3/64 stride 1 -> ``bn1`` -> ReLU, no max-pool; ``layer1``..``layer4`` of two
    :class:`CifarBasicBlock` each (widths 64-512, first strides 1, 2, 2, 2); global average pool -> flatten 512
    (the representation, post-ReLU) -> head ``linear`` Linear(512, C). The authors pool with ``avg_pool2d(4)``,
    identical to the adaptive pool used here at 32x32. PyTorch's default initialisation. 11,173,962 parameters
    for C = 10. Checkpoints in the weiaicunzai layout (SSD, JiT, L2UL's CIFAR-100 ResNet-18) are renamed on load
    by :func:`~lightning_unlearn.models.load_classifier`.

    Args:
        num_classes: Number of classes.
        in_channels: Number of input channels.
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
        super().__init__(num_classes, in_channels, 512, "linear", mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        layers = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(CifarBasicBlock(in_planes, planes, stride), CifarBasicBlock(planes, planes)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the globally pooled 512-d features (post-ReLU)."""
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits ``linear(z)``."""
        return self.linear(z)


class ResNet18MaxPool(ClassifierBase):
    """L2UL's CIFAR-10 ResNet-18: torchvision ResNet-18 with a 3x3 stem and the max-pool kept (``resnet18_maxpool``).

    ``conv1`` 3x3/64 stride 1 -> ``bn1`` -> ``relu`` -> ``maxpool`` 3/2/1 (32 -> 16) -> ``layer1``..``layer4``
    (torchvision names, ``downsample.0/1`` projections) -> ``avgpool`` -> flatten 512 (the representation) -> head
    ``fc`` Linear(512, C). torchvision initialisation (Kaiming normal fan_out convs, BN 1/0, no zero-init
    residual). 11,173,962 parameters for C = 10.

    Args:
        num_classes: Number of classes.
        in_channels: Number of input channels.
        mean: Per-channel input mean, or ``None``.
        std: Per-channel input std, or ``None``.
    """

    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    relu: nn.ReLU
    maxpool: nn.MaxPool2d
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential
    avgpool: nn.AdaptiveAvgPool2d
    fc: nn.Linear

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, 512, "fc", mean, std)
        net = resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        for name, child in net.named_children():
            self.add_module(name, child)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the globally pooled 512-d features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits ``fc(z)``."""
        return self.fc(z)


class CifarBottleneck(nn.Module):
    """Bottleneck block in the weiaicunzai/pytorch-cifar100 layout (``residual_function`` + ``shortcut``).

    Args:
        in_channels: Input channels.
        out_channels: Bottleneck width; the block outputs ``4 * out_channels``.
        stride: Stride of the 3x3 convolution and of the projection shortcut.
    """

    expansion = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        width = out_channels * self.expansion
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, width, kernel_size=1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != width:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, width, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(width),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Return ``relu(residual_function(x) + shortcut(x))``."""
        return F.relu(self.residual_function(x) + self.shortcut(x))


class CifarResNet50(ClassifierBase):
    """L2UL's CIFAR-100 ResNet-50 in the weiaicunzai layout (arch id ``cifar_resnet50``).

    ``conv1`` = Conv 3x3/64 + BN + ReLU (no max-pool); ``conv2_x``..``conv5_x`` of 3, 4, 6, 3
    :class:`CifarBottleneck` blocks (widths 64-512, output x4, first strides 1, 2, 2, 2); ``avg_pool`` -> flatten
    2048 (the representation) -> head ``fc`` Linear(2048, C). PyTorch's default initialisation. 23,520,842
    parameters for C = 10, 23,705,252 for C = 100.

    Args:
        num_classes: Number of classes.
        in_channels: Number of input channels.
        mean: Per-channel input mean, or ``None``.
        std: Per-channel input std, or ``None``.
    """

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, 2048, "fc", mean, std)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        in_planes = 64
        stages = []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(CifarBottleneck(in_planes, planes, s))
                in_planes = planes * CifarBottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.conv2_x, self.conv3_x, self.conv4_x, self.conv5_x = stages
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the globally pooled 2048-d features."""
        x = self.conv1(self.normalize(x))
        x = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(x))))
        return torch.flatten(self.avg_pool(x), 1)

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits ``fc(z)``."""
        return self.fc(z)
