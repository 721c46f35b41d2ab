"""Tiny datasets written in torchvision's on-disk formats, and a synthetic in-memory datamodule, for tests.

Nothing here downloads anything. Every writer returns the images it wrote (``N x C x H x W`` uint8) so tests can
check what a datamodule reads back.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from lightning_unlearn.datamodules import RawData, UnlearningDataModule

# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def cyclic_targets(n: int, num_classes: int = 10) -> np.ndarray:
    """``0, 1, ..., C-1, 0, 1, ...`` (n labels)."""
    return np.arange(n, dtype=np.int64) % num_classes


def _images(n: int, shape: Sequence[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: raw idx files (uncompressed), <root>/<Folder>/raw/
# ---------------------------------------------------------------------------------------------------------------


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes())


def write_mnist(
    root: str | os.PathLike[str],
    train_targets: Sequence[int] | np.ndarray,
    test_targets: Sequence[int] | np.ndarray,
    *,
    folder: str = "MNIST",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write MNIST-format idx files (``folder="FashionMNIST"`` for Fashion-MNIST) under ``root``."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    for prefix, targets, offset in (("train", train_targets, 0), ("t10k", test_targets, 1)):
        labels = np.asarray(targets, dtype=np.int64)
        images = _images(len(labels), (28, 28), seed + offset)
        _write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out[f"{'train' if prefix == 'train' else 'test'}_images"] = images[:, None]
    return out


def write_fashion_mnist(
    root: str | os.PathLike[str],
    train_targets: Sequence[int] | np.ndarray,
    test_targets: Sequence[int] | np.ndarray,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write Fashion-MNIST-format idx files under ``root/FashionMNIST/raw``."""
    return write_mnist(root, train_targets, test_targets, folder="FashionMNIST", seed=seed)


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: python pickles
# ---------------------------------------------------------------------------------------------------------------


def _dump(path: Path, obj: Any) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """``N x 3 x 32 x 32`` -> ``N x 3072`` rows (channel-major, as in the CIFAR files)."""
    return images.reshape(len(images), -1)


def write_cifar10(
    root: str | os.PathLike[str],
    train_targets: Sequence[int] | np.ndarray,
    test_targets: Sequence[int] | np.ndarray,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``cifar-10-batches-py`` (5 train batches, test batch, batches.meta) under ``root``."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = np.asarray(train_targets, dtype=np.int64)
    test_labels = np.asarray(test_targets, dtype=np.int64)
    train_images = _images(len(train_labels), (3, 32, 32), seed)
    test_images = _images(len(test_labels), (3, 32, 32), seed + 1)
    chunks = np.array_split(np.arange(len(train_labels)), 5)
    for b, chunk in enumerate(chunks, start=1):
        _dump(
            folder / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "labels": train_labels[chunk].tolist(),
                "data": _cifar_rows(train_images[chunk]),
                "filenames": [f"img_{i}.png" for i in chunk],
            },
        )
    _dump(
        folder / "test_batch",
        {"batch_label": "testing batch 1 of 1", "labels": test_labels.tolist(), "data": _cifar_rows(test_images)},
    )
    from lightning_unlearn.datamodules import CIFAR10_NAMES

    _dump(folder / "batches.meta", {"label_names": list(CIFAR10_NAMES), "num_cases_per_batch": len(chunks[0])})
    return {"train_images": train_images, "test_images": test_images}


def write_cifar100(
    root: str | os.PathLike[str],
    train_fine: Sequence[int] | np.ndarray,
    test_fine: Sequence[int] | np.ndarray,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``cifar-100-python`` (train, test, meta) under ``root``; coarse labels from the fine-to-coarse map."""
    from lightning_unlearn.datamodules import CIFAR20_NAMES, CIFAR100_FINE_TO_COARSE, CIFAR100_NAMES

    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fine_map = np.asarray(CIFAR100_FINE_TO_COARSE)
    out: dict[str, np.ndarray] = {}
    for name, fine, offset in (("train", train_fine, 0), ("test", test_fine, 1)):
        labels = np.asarray(fine, dtype=np.int64)
        images = _images(len(labels), (3, 32, 32), seed + offset)
        _dump(
            folder / name,
            {
                "filenames": [f"img_{i}.png" for i in range(len(labels))],
                "fine_labels": labels.tolist(),
                "coarse_labels": fine_map[labels].tolist(),
                "data": _cifar_rows(images),
            },
        )
        out[f"{name}_images"] = images
    _dump(folder / "meta", {"fine_label_names": list(CIFAR100_NAMES), "coarse_label_names": list(CIFAR20_NAMES)})
    return out


# ---------------------------------------------------------------------------------------------------------------
# SVHN: .mat files
# ---------------------------------------------------------------------------------------------------------------


def write_svhn(
    root: str | os.PathLike[str],
    train_targets: Sequence[int] | np.ndarray,
    test_targets: Sequence[int] | np.ndarray,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``train_32x32.mat`` and ``test_32x32.mat`` under ``root`` (``X``: 32x32x3xN, ``y``: digit 0 as 10)."""
    from scipy.io import savemat

    Path(root).mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    for name, targets, offset in (("train", train_targets, 0), ("test", test_targets, 1)):
        labels = np.asarray(targets, dtype=np.int64)
        images = _images(len(labels), (3, 32, 32), seed + offset)  # N, C, H, W
        x = np.ascontiguousarray(images.transpose(2, 3, 1, 0))  # H, W, C, N
        y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        savemat(str(Path(root) / f"{name}_32x32.mat"), {"X": x, "y": y})
        out[f"{name}_images"] = images
    return out


# ---------------------------------------------------------------------------------------------------------------
# In-memory synthetic datamodule
# ---------------------------------------------------------------------------------------------------------------


class ToyDataModule(UnlearningDataModule):
    """A synthetic 10-class dataset of 1 x 4 x 4 uint8 images; pixel (0, 0, 0) encodes the training index % 256.

    Sizes come from the class attributes ``num_train`` / ``num_test`` (labels cycle through the classes).
    """

    dataset_name: ClassVar[str] = "toy"
    default_class_names: ClassVar[tuple[str, ...]] = tuple(f"c{i}" for i in range(10))
    native_shape: ClassVar[tuple[int, int, int]] = (1, 4, 4)
    num_train: ClassVar[int] = 100
    num_test: ClassVar[int] = 30

    def load_raw(self) -> RawData:
        def make(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.from_numpy(_images(n, self.native_shape, seed))
            images[:, 0, 0, 0] = torch.arange(n, dtype=torch.long).remainder(256).to(torch.uint8)
            return images, torch.from_numpy(cyclic_targets(n, len(self.default_class_names)))

        train_x, train_y = make(self.num_train, 0)
        test_x, test_y = make(self.num_test, 1)
        return RawData(train_x, train_y, test_x, test_y)
