"""Per-channel input normalisation as the first layer of every classifier."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_unlearn.validation import check_integer


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on ``B x C x H x W`` pixels in [0, 1].

    The statistics live in the buffers ``mean`` and ``std`` (shape ``[in_channels]``), so they are saved with the
    model's ``state_dict``. Without statistics the layer is the identity (mean zeros, std ones).

    Args:
        in_channels: Number of input channels ``C``.
        mean: Per-channel mean, ``in_channels`` numbers, or ``None`` for zeros.
        std: Per-channel standard deviation, ``in_channels`` positive numbers, or ``None`` for ones.

    Raises:
        ValueError: If ``in_channels < 1``, a statistic has the wrong length, or a std is not positive.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        in_channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        check_integer("in_channels", in_channels, 1)
        self.in_channels = in_channels
        self.register_buffer("mean", _channel_stat("mean", mean, in_channels, 0.0))
        self.register_buffer("std", _channel_stat("std", std, in_channels, 1.0))
        if not bool((self.std > 0).all()):
            raise ValueError(f"std must be positive, got {tuple(self.std.tolist())}")

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` (``B x C x ...``) channel-wise."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    @property
    def is_identity(self) -> bool:
        """Whether the layer leaves its input unchanged (mean zeros, std ones)."""
        return bool((self.mean == 0).all() and (self.std == 1).all())

    def extra_repr(self) -> str:
        """Show the statistics in ``repr``."""
        mean = tuple(round(v, 4) for v in self.mean.tolist())
        std = tuple(round(v, 4) for v in self.std.tolist())
        return f"mean={mean}, std={std}"


def _channel_stat(name: str, values: Sequence[float] | None, in_channels: int, fill: float) -> Tensor:
    if values is None:
        return torch.full((in_channels,), fill, dtype=torch.float32)
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of {in_channels} numbers, got {values!r}")
    tensor = torch.as_tensor(values, dtype=torch.float32).flatten().clone()
    if tensor.numel() != in_channels:
        raise ValueError(f"{name} must have in_channels={in_channels} values, got {tuple(tensor.tolist())}")
    return tensor


def normalization_stats(model: nn.Module) -> tuple[Tensor, Tensor] | None:
    """Return ``(mean, std)`` of the model's ``normalize`` layer, or ``None`` when it has none.

    Methods acting in normalised space (e.g. adding noise after normalisation) use this to map between pixel and
    normalised space. A model whose ``normalize`` is not a :class:`Normalize` (or which has none) is treated as
    taking its inputs unnormalised and ``None`` is returned.
    """
    layer = getattr(model, "normalize", None)
    if isinstance(layer, Normalize):
        return layer.mean, layer.std
    return None
