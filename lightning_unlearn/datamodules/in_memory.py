"""In-memory image data: the raw tensors of a dataset (:class:`RawData`) and views of some rows (:class:`SplitDataset`).

Images are kept as one tensor (uint8 or float32) and converted per batch to float32 pixels in ``[0, 1]``, shape
``C x H x W``; normalisation is the classifier's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_unlearn.datamodules.batches import LabelledBatch, LabelledPair, UnlabelledBatch
from lightning_unlearn.datamodules.transforms import Transform

__all__ = ["RawData", "SplitDataset"]


@dataclass(frozen=True)
class RawData:
    """The in-memory data of a dataset, in its native order.

    Attributes:
        train_images: ``N x C x H x W``, uint8 (0-255) or float32 (``[0, 1]``).
        train_targets: ``N`` int64 labels.
        test_images: Test images, same layout.
        test_targets: Test labels.
        train_fine_targets: Fine labels (CIFAR-20 only).
        test_fine_targets: Fine test labels (CIFAR-20 only).
    """

    train_images: Tensor
    train_targets: Tensor
    test_images: Tensor
    test_targets: Tensor
    train_fine_targets: Tensor | None = None
    test_fine_targets: Tensor | None = None


class SplitDataset(Dataset[Any]):
    """A view of some images of an in-memory image tensor.

    Element ``i`` is a :class:`~lightning_unlearn.datamodules.batches.LabelledPair` ``(input, target)`` (labelled)
    or the input tensor alone (unlabelled); with ``with_index`` it also carries ``index``, the position of the sample
    in this split: :class:`~lightning_unlearn.datamodules.batches.LabelledBatch` ``(input, target, index)`` or
    :class:`~lightning_unlearn.datamodules.batches.UnlabelledBatch` ``(input, index)``. The input is float32
    ``C x H x W`` in ``[0, 1]``.

    Args:
        images: The whole image tensor (uint8 or float32).
        positions: Rows of ``images`` in this split, in split order.
        targets: Label of each element (aligned with ``positions``).
        labelled: Whether elements carry the label.
        with_index: Whether elements carry their position in the split.
        transform: Per-image transform applied after conversion to float.
    """

    def __init__(
        self,
        images: Tensor,
        positions: Tensor,
        targets: Tensor,
        *,
        labelled: bool = True,
        with_index: bool = False,
        transform: Transform | None = None,
    ) -> None:
        if positions.numel() != targets.numel():
            raise ValueError(f"positions ({positions.numel()}) and targets ({targets.numel()}) differ in length")
        self.images = images
        self.positions = positions.to(torch.long)
        self.targets = targets.to(torch.long)
        self.labelled = labelled
        self.with_index = with_index
        self.transform = transform

    def __len__(self) -> int:
        return int(self.positions.numel())

    def _pixels(self, rows: Tensor) -> Tensor:
        x = self.images[rows]
        if x.dtype == torch.uint8:
            return x.to(torch.float32).div_(255)
        return x.to(torch.float32)

    def _element(self, x: Tensor, y: Tensor, index: Tensor) -> Any:
        if self.transform is not None:
            x = self.transform(x)
        if self.labelled:
            return LabelledBatch(x, y, index) if self.with_index else LabelledPair(x, y)
        return UnlabelledBatch(x, index) if self.with_index else x

    def __getitem__(self, i: int) -> Any:
        index = torch.as_tensor(i if i >= 0 else len(self) + i, dtype=torch.long)
        return self._element(self._pixels(self.positions[index]), self.targets[index], index)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x = self._pixels(self.positions[idx])
        y = self.targets[idx]
        if self.transform is not None:
            return [self._element(x[j], y[j], idx[j]) for j in range(idx.numel())]
        # the same elements as _element builds, from one unbind per tensor (per-sample indexing is slow)
        xs, ys, index = x.unbind(0), y.unbind(0), idx.unbind(0)
        if self.labelled:
            if self.with_index:
                return [LabelledBatch(*e) for e in zip(xs, ys, index, strict=True)]
            return [LabelledPair(*e) for e in zip(xs, ys, strict=True)]
        return [UnlabelledBatch(*e) for e in zip(xs, index, strict=True)] if self.with_index else list(xs)
