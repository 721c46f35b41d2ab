"""Base class of the built-in classifiers: normalisation, representation extractor, head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lightning_unlearn.models.normalize import Normalize
from lightning_unlearn.validation import check_integer


class ClassifierBase(nn.Module):
    """An image classifier cut into representation extractor and head.

    ``forward(x)`` is exactly ``forward_head(forward_features(x))``. ``forward_features`` applies ``normalize``
    first and returns the representation (``B x embedding_dim``); ``forward_head`` applies the single head
    submodule named ``head_name`` to it and returns the logits (``B x num_classes``). Every parameter outside the
    head belongs to the extractor.

    Subclasses call ``super().__init__`` first (so ``normalize`` comes first in the ``state_dict``), build their
    layers under the authors' module names and implement :meth:`forward_features`.

    Args:
        num_classes: Number of classes ``C``.
        in_channels: Number of input channels.
        embedding_dim: Width ``D`` of the representation.
        head_name: Name of the head submodule (dotted for nested modules, e.g. ``classifier.4``).
        mean: Per-channel input mean, or ``None`` (no shift).
        std: Per-channel input std, or ``None`` (no scaling).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        embedding_dim: int,
        head_name: str,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        check_integer("num_classes", num_classes, 1)
        self.normalize = Normalize(in_channels, mean, std)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.embedding_dim = embedding_dim
        self.head_name = head_name

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits (``B x num_classes``) of pixels ``x`` in [0, 1]."""
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the representation (``B x embedding_dim``), the input of the head."""
        raise NotImplementedError

    def forward_head(self, z: Tensor) -> Tensor:
        """Return the logits of a representation ``z``."""
        head: nn.Module = self.get_submodule(self.head_name)
        return head(z)
