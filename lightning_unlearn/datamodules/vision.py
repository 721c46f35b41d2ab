"""Torchvision-backed datamodules: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, CIFAR-20, SVHN.

Each reads torchvision's on-disk format under ``root``; ``prepare_data`` downloads only when ``download=True``.
The arrays torchvision exposes (``.data``) are kept in memory as one uint8 tensor, so no image is decoded per item.

Hostile or damaged files: MNIST idx files are checked (magic number, sizes) before torchvision parses them, and
CIFAR batches are unpickled by :class:`_CIFARUnpickler`, which only resolves the numpy globals a CIFAR batch holds
(torchvision's own reader calls ``pickle.load`` and would run any code a crafted file carries). A damaged file
raises :class:`DatasetCorruptError` naming it.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
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
    "DatasetCorruptError",
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


class DatasetCorruptError(DatasetNotFoundError):
    """A dataset file exists but is truncated, garbage or refused (a pickle referencing code); it names the file."""


def _corrupt(owner: str, dataset: str, path: Path, problem: str) -> DatasetCorruptError:
    return DatasetCorruptError(
        f"{owner}: the {dataset!r} file {str(path)!r} {problem}. The dataset folder {str(path.parent)!r} is damaged: "
        "delete it and download the dataset again (data.init_args.download: true), or point root at a good copy."
    )


# ------------------------------------------------------------------------------------------------ MNIST idx files
_IDX_UBYTE = 0x08


def _check_idx_file(owner: str, dataset: str, path: Path, ndim: int) -> int:
    """Check an uncompressed idx file (uint8 data, ``ndim`` dims) against its header; return its item count."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise _corrupt(owner, dataset, path, f"is truncated ({size} bytes, shorter than its header)")
    magic = int.from_bytes(header[:4], "big")
    if magic != (_IDX_UBYTE << 8) | ndim:
        raise _corrupt(
            owner, dataset, path, f"is not an idx file of uint8 with {ndim} dimension(s) (magic number {magic:#010x})"
        )
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + math.prod(dims)
    if size != expected:
        what = "is truncated" if size < expected else "has trailing bytes"
        shape = " x ".join(map(str, dims))
        raise _corrupt(owner, dataset, path, f"{what}: {size} bytes, its header announces {shape} = {expected} bytes")
    return dims[0]


# ------------------------------------------------------------------------------------------------ CIFAR pickles
_CIFAR_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _CIFARUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy array globals of a CIFAR batch; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy.core."):  # numpy >= 2 renamed numpy.core to numpy._core
            try:
                return getattr(importlib.import_module("numpy._core." + module[len("numpy.core.") :]), name)
            except ImportError:  # pragma: no cover - numpy < 2
                pass
        return getattr(importlib.import_module(module), name)


def _read_cifar_batch(owner: str, dataset: str, path: Path) -> tuple[np.ndarray, list[int]]:
    """Unpickle one CIFAR batch safely and check its content: ``(data N x 3072 uint8, labels)``."""
    try:
        with open(path, "rb") as fh:
            entry = _CIFARUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if "is not allowed in a CIFAR batch" in str(err):
            raise _corrupt(
                owner, dataset, path, f"was refused: {err} (unpickling it could run arbitrary code)"
            ) from err
        raise _corrupt(owner, dataset, path, f"is not a readable CIFAR batch ({err})") from err
    except Exception as err:  # EOFError (truncated), ValueError, TypeError, MemoryError, ...
        raise _corrupt(owner, dataset, path, f"is not a readable CIFAR batch ({type(err).__name__}: {err})") from err
    if not isinstance(entry, dict) or "data" not in entry:
        raise _corrupt(owner, dataset, path, "holds no CIFAR batch (a dict with 'data' and labels)")
    data = entry["data"]
    labels = entry.get("labels", entry.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(owner, dataset, path, f"holds 'data' of {got}, expected uint8 rows of 3072 pixels")
    if not isinstance(labels, list | tuple | np.ndarray) or len(labels) != len(data):
        count = len(labels) if isinstance(labels, list | tuple | np.ndarray) else type(labels).__name__
        raise _corrupt(owner, dataset, path, f"holds {len(data)} images but labels {count}")
    return data, [int(v) for v in labels]


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

    def load_raw(self) -> RawData:  # noqa: D102
        return self._to_raw(self._open("train"), self._open("test"))

    def _dataset(self, split: str, *, download: bool, relaxed: bool) -> Any:
        raise NotImplementedError

    def _to_raw(self, train: Any, test: Any) -> RawData:
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Download the dataset when ``download=True`` (rank 0 only, by Lightning); otherwise do nothing."""
        if self.download:
            for split in ("train", "test"):
                try:
                    self._dataset(split, download=True, relaxed=False)
                except DatasetCorruptError:
                    raise
                except Exception as err:
                    raise self._not_loaded(split, err) from err

    def split_files(self, split: str) -> list[Path]:
        """The files torchvision reads for ``split`` (``"train"`` or ``"test"``), named in error messages."""
        return []

    def _open(self, split: str) -> Any:
        try:
            return self._dataset(split, download=False, relaxed=True)
        except DatasetCorruptError:
            raise
        except Exception as err:  # torchvision raises RuntimeError, OSError, pickle and scipy errors
            raise self._not_loaded(split, err) from err

    def _not_loaded(self, split: str, err: Exception) -> DatasetNotFoundError:
        root = Path(self.root).expanduser().resolve()
        files = self.split_files(split)
        missing = [str(f) for f in files if not f.is_file()]
        if files and not missing:
            state = f"its files {[str(f) for f in files]} exist but could not be parsed: they are truncated or corrupt"
            advice = "Delete them and download the dataset again (data.init_args.download: true)"
        else:
            state = f"missing files: {missing}" if missing else "the files are missing or unreadable"
            advice = "Set download=True (data.init_args.download: true) to fetch it"
        return DatasetNotFoundError(
            f"{type(self).__name__}: could not load the {split} split of {self.dataset_name!r} from {str(root)!r} "
            f"({type(err).__name__}: {err}); {state}. {advice}, or point root at a folder holding the torchvision "
            "files."
        )


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

    def split_files(self, split: str) -> list[Path]:
        """The uncompressed idx files under ``root/<MNIST|FashionMNIST>/raw`` (images, labels)."""
        raw = Path(self.root).expanduser() / self._factory().__name__ / "raw"
        prefix = "train" if split == "train" else "t10k"
        return [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]

    def _dataset(self, split: str, *, download: bool, relaxed: bool) -> Any:
        images, labels = self.split_files(split)
        if images.is_file() and labels.is_file():  # torchvision never replaces existing files, even to download
            owner = type(self).__name__
            n_images = _check_idx_file(owner, self.dataset_name, images, 3)
            n_labels = _check_idx_file(owner, self.dataset_name, labels, 1)
            if n_images != n_labels:
                raise _corrupt(owner, self.dataset_name, labels, f"holds {n_labels} labels for {n_images} images")
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

    def split_files(self, split: str) -> list[Path]:
        """The pickled batches of ``split`` under ``root/<base_folder>``."""
        factory: Any = self._factory()
        names = factory.train_list if split == "train" else factory.test_list
        return [Path(self.root).expanduser() / factory.base_folder / name for name, _ in names]

    def _dataset(self, split: str, *, download: bool, relaxed: bool) -> Any:
        if not relaxed:  # downloading: torchvision checks the MD5 of every file before it unpickles them
            return self._factory()(self.root, train=split == "train", download=download)
        files = self.split_files(split)
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"missing {missing}")
        batches = [_read_cifar_batch(type(self).__name__, self.dataset_name, f) for f in files]
        data = np.vstack([d for d, _ in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return SimpleNamespace(data=data, targets=[y for _, labels in batches for y in labels])

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
    """CIFAR-100 images with the 20 coarse labels as targets; fine labels kept for sub-class removal.

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

    def split_files(self, split: str) -> list[Path]:
        """``root/<split>_32x32.mat``."""
        return [Path(self.root).expanduser() / f"{split}_32x32.mat"]

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
