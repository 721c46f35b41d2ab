"""Torchvision-backed datamodules: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, CIFAR-20, SVHN (scenarios spec §4).

Each reads torchvision's on-disk format under ``root``; ``prepare_data`` downloads only when ``download=True``.
The arrays torchvision exposes (``.data``) are kept in memory as one uint8 tensor, so no image is decoded per item.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from lightning_unlearn.datamodules.base import RawData, UnlearningDataModule
from lightning_unlearn.datamodules.classes import (
    CIFAR10_NAMES,
    CIFAR20_ALIASES,
    CIFAR20_NAMES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR100_NAMES,
    DIGIT_NAMES,
    FASHION_MNIST_NAMES,
)

__all__ = [
    "CIFAR10DataModule",
    "CIFAR20DataModule",
    "CIFAR100DataModule",
    "DatasetNotFoundError",
    "FashionMNISTDataModule",
    "MNISTDataModule",
    "SVHNDataModule",
    "TorchvisionDataModule",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.50708, 0.48655, 0.44092)
CIFAR100_STD = (0.26733, 0.25644, 0.27615)
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1201, 0.1231, 0.1052)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are missing or unreadable under ``root``."""


class TorchvisionDataModule(UnlearningDataModule):
    """Base of the torchvision-backed datamodules.

    Args:
        root: Folder holding (or receiving) the torchvision files.
        download: Let ``prepare_data`` download the dataset into ``root`` (never done otherwise).
        **kwargs: :class:`UnlearningDataModule` arguments (``scenario``, ``seed``, ``mode``, ``batch_size``, ...).
    """

    def __init__(self, root: str = "data", download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = str(root)
        self.download = bool(download)

    def prepare_data(self) -> None:
        """Download the dataset when ``download=True`` (rank 0 only, by Lightning); otherwise do nothing."""
        if self.download:
            for split in ("train", "test"):
                self._dataset(split, download=True, relaxed=False)

    def load_raw(self) -> RawData:  # noqa: D102
        return self._to_raw(self._open("train"), self._open("test"))

    def _dataset(self, split: str, *, download: bool, relaxed: bool) -> Any:
        raise NotImplementedError

    def _to_raw(self, train: Any, test: Any) -> RawData:
        raise NotImplementedError

    def _open(self, split: str) -> Any:
        root = Path(self.root).expanduser().resolve()
        try:
            return self._dataset(split, download=False, relaxed=True)
        except Exception as err:  # torchvision raises RuntimeError, OSError, pickle and scipy errors
            raise DatasetNotFoundError(
                f"{type(self).__name__}: could not load the {split} split of {self.dataset_name!r} from "
                f"{str(root)!r} ({type(err).__name__}: {err}). Set download=True (data.init_args.download: true) "
                "to fetch it, or point root at a folder holding the torchvision files."
            ) from err


def _from_uint8_hwc(data: Any) -> Tensor:
    """``N x H x W x C`` uint8 array -> contiguous ``N x C x H x W`` uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(data, dtype=np.uint8).transpose(0, 3, 1, 2)))


def _targets(values: Any) -> Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.long).flatten()


class MNISTDataModule(TorchvisionDataModule):
    """MNIST digits (60,000 / 10,000, 1 x 28 x 28), from ``torchvision.datasets.MNIST``; no normalisation stats."""

    dataset_name: ClassVar[str] = "mnist"
    default_class_names: ClassVar[tuple[str, ...]] = DIGIT_NAMES
    native_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def _factory(self) -> Callable[..., Any]:
        from torchvision.datasets import MNIST

        return MNIST

    def _dataset(self, split: str, *, download: bool, relaxed: bool) -> Any:
        return self._factory()(self.root, train=split == "train", download=download)

    def _to_raw(self, train: Any, test: Any) -> RawData:
        return RawData(
            train.data.to(torch.uint8).unsqueeze(1).contiguous(),
            _targets(train.targets),
            test.data.to(torch.uint8).unsqueeze(1).contiguous(),
            _targets(test.targets),
        )


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (60,000 / 10,000, 1 x 28 x 28), from ``torchvision.datasets.FashionMNIST``."""

    dataset_name: ClassVar[str] = "fashion_mnist"
    default_class_names: ClassVar[tuple[str, ...]] = FASHION_MNIST_NAMES

    def _factory(self) -> Callable[..., Any]:
        from torchvision.datasets import FashionMNIST

        return FashionMNIST


def _relaxed_cifar(base: type) -> type:
    """A torchvision CIFAR class that checks files exist instead of their MD5 (parse errors still surface)."""

    class _Relaxed(base):  # type: ignore[valid-type,misc]
        def _check_integrity(self) -> bool:
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, name)) for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            self.classes: list[str] = []
            self.class_to_idx: dict[str, int] = {}

    return _Relaxed


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10 (50,000 / 10,000, 3 x 32 x 32); default stats are Precision's/L2UL's."""

    dataset_name: ClassVar[str] = "cifar10"
    default_class_names: ClassVar[tuple[str, ...]] = CIFAR10_NAMES
    native_shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)
    default_mean: ClassVar[tuple[float, ...] | None] = CIFAR10_MEAN
    default_std: ClassVar[tuple[float, ...] | None] = CIFAR10_STD

    def _factory(self) -> type:
        from torchvision.datasets import CIFAR10

        return CIFAR10

    def _dataset(self, split: str, *, download: bool, relaxed: bool) -> Any:
        factory = _relaxed_cifar(self._factory()) if relaxed else self._factory()
        return factory(self.root, train=split == "train", download=download)

    def _to_raw(self, train: Any, test: Any) -> RawData:
        return RawData(
            _from_uint8_hwc(train.data), _targets(train.targets), _from_uint8_hwc(test.data), _targets(test.targets)
        )


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 with its 100 fine labels (50,000 / 10,000); default stats are JiT/SSD's CIFAR-100 ones."""

    dataset_name: ClassVar[str] = "cifar100"
    default_class_names: ClassVar[tuple[str, ...]] = CIFAR100_NAMES
    default_mean: ClassVar[tuple[float, ...] | None] = CIFAR100_MEAN
    default_std: ClassVar[tuple[float, ...] | None] = CIFAR100_STD

    def _factory(self) -> type:
        from torchvision.datasets import CIFAR100

        return CIFAR100


class CIFAR20DataModule(CIFAR100DataModule):
    """CIFAR-100 images with the 20 coarse labels as targets (spec §2.2); fine labels kept for sub-class removal.

    Classes may be named by coarse name or by the JiT/SSD aliases (``vehicle2``, ``veg``, ``people``,
    ``electrical_devices``, ``natural_scenes``); :class:`SubclassRemoval` names fine CIFAR-100 classes.
    """

    dataset_name: ClassVar[str] = "cifar20"
    default_class_names: ClassVar[tuple[str, ...]] = CIFAR20_NAMES
    class_aliases: ClassVar[dict[str, int]] = CIFAR20_ALIASES
    fine_class_names: ClassVar[tuple[str, ...] | None] = CIFAR100_NAMES

    def _to_raw(self, train: Any, test: Any) -> RawData:
        fine_map = torch.tensor(CIFAR100_FINE_TO_COARSE, dtype=torch.long)
        fine_train, fine_test = _targets(train.targets), _targets(test.targets)
        return RawData(
            _from_uint8_hwc(train.data),
            fine_map[fine_train],
            _from_uint8_hwc(test.data),
            fine_map[fine_test],
            train_fine_targets=fine_train,
            test_fine_targets=fine_test,
        )


class SVHNDataModule(TorchvisionDataModule):
    """SVHN digits (73,257 / 26,032, 3 x 32 x 32; digit 0 is label 0; ``extra`` unused); SalUn's stats."""

    dataset_name: ClassVar[str] = "svhn"
    default_class_names: ClassVar[tuple[str, ...]] = DIGIT_NAMES
    native_shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)
    default_mean: ClassVar[tuple[float, ...] | None] = SVHN_MEAN
    default_std: ClassVar[tuple[float, ...] | None] = SVHN_STD

    def _dataset(self, split: str, *, download: bool, relaxed: bool) -> Any:
        from torchvision.datasets import SVHN

        if relaxed:

            class _Relaxed(SVHN):
                def _check_integrity(self) -> bool:
                    return os.path.isfile(os.path.join(self.root, self.filename))

            return _Relaxed(self.root, split=split, download=download)
        return SVHN(self.root, split=split, download=download)

    def _to_raw(self, train: Any, test: Any) -> RawData:
        return RawData(
            torch.from_numpy(np.ascontiguousarray(train.data, dtype=np.uint8)),
            _targets(train.labels),
            torch.from_numpy(np.ascontiguousarray(test.data, dtype=np.uint8)),
            _targets(test.labels),
        )
