"""VGG networks: JiT's "VGG16" (a torchvision VGG-11) and SalUn's VGG-16-BN for 32x32 inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models import vgg11

from lightning_unlearn.models.base import ClassifierBase

#: VGG configuration D without the last max-pool (SalUn's ``cfgs["D"]``); ``"M"`` is a 2x2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip


class JiTVGG11(ClassifierBase):
    """The network JiT's code calls ``VGG16``: torchvision ``vgg11()`` (no BN) plus ``fc`` (arch ``jit_vgg11``).

    ``model`` = randomly initialised torchvision VGG-11 (``features``, ``avgpool`` 7x7, ``classifier`` with two
    Dropout(0.5) layers) with 1,000 outputs (the representation, no activation) -> head ``fc`` Linear(1000, C).
    The JiT README notes that its "VGG16" is a VGG-11. 132,873,346 parameters for C = 10.

    Args:
        num_classes: Number of classes.
        in_channels: Number of input channels (the first convolution is rebuilt when it is not 3).
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
        super().__init__(num_classes, in_channels, 1000, "fc", mean, std)
        self.model = vgg11()
        if in_channels != 3:
            first = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(first.weight, mode="fan_out", nonlinearity="relu")
            if first.bias is not None:
                nn.init.zeros_(first.bias)
            self.model.features[0] = first
        self.fc = nn.Linear(1000, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the 1000-d output of the VGG classifier."""
        return self.model(self.normalize(x))

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits ``fc(z)``."""
        return self.fc(z)


class VGG16BN(ClassifierBase):
    """SalUn's VGG-16-BN for 32x32 inputs (arch id ``vgg16_bn``).

    ``features``: configuration D without the last max-pool, each Conv 3x3 pad 1 (no bias) -> BN -> ReLU (512x2x2
    at 32x32); ``avgpool`` AdaptiveAvgPool(2x2) -> flatten 2048 -> ``classifier`` = Linear(2048, 256) -> ReLU ->
    Linear(256, 256) -> ReLU (the representation, 256) -> head ``classifier.4`` Linear(256, C). Convs Kaiming
    fan_out, BN 1/0, Linear N(0, 0.01) with zero bias. 15,311,818 parameters for C = 10. SalUn normalises
    inside the model with buffers ``normalize.mean/std``, as here.

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
        super().__init__(num_classes, in_channels, 256, "classifier.4", mean, std)
        layers: list[nn.Module] = []
        channels = in_channels
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                width = int(v)
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 2 * 2, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the 256-d output of the second hidden ReLU."""
        x = torch.flatten(self.avgpool(self.features(self.normalize(x))), 1)
        return self.classifier[:4](x)

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits ``classifier[4](z)``."""
        return self.classifier[4](z)
