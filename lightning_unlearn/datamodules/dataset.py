"""Datamodules over the user's own datasets: any map-style ``Dataset`` of ``(image, label)``, or image folders.

Both read the datasets once into memory (one pass, in :meth:`~UnlearningDataModule.setup`) and then behave
exactly like the built-in datamodules: deterministic splits from ``(scenario, seed)``, ``splits.json``, per-phase
training loaders (labelled or not, with sample indices), distributed samplers and named evaluation loaders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_unlearn.datamodules.base import RawData, UnlearningDataModule
from lightning_unlearn.datamodules.scenarios import DatasetInfo
from lightning_unlearn.validation import check_integer

__all__ = ["DatasetDataModule", "ImageFolderDataModule", "image_to_tensor"]

_LOAD_BATCH = 256


def image_to_tensor(image: Any) -> Tensor:
    """Convert one image to a ``C x H x W`` tensor: uint8 (0-255) or float32 (pixels in ``[0, 1]``).

    Accepts a tensor or NumPy array (``H x W`` or ``C x H x W``; uint8 or floating point) or a PIL image
    (converted with ``torchvision.transforms.functional.pil_to_tensor``).

    Raises:
        TypeError: If the image is of another type.
        ValueError: If its shape or dtype is not supported.
    """
    if not isinstance(image, Tensor | np.ndarray):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow ships with torchvision
            Image = None  # type: ignore[assignment]  # noqa: N806
        if Image is not None and isinstance(image, Image.Image):
            from torchvision.transforms.functional import pil_to_tensor

            return pil_to_tensor(image)
        raise TypeError(
            f"dataset images must be tensors, NumPy arrays or PIL images, got {type(image).__name__}; give the "
            "dataset a transform that returns one (e.g. torchvision.transforms.PILToTensor())"
        )
    x = torch.as_tensor(image)
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ValueError(f"dataset images must be H x W or C x H x W, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    if x.is_floating_point():
        return x.to(torch.float32)
    raise ValueError(f"dataset images must be uint8 (0-255) or floating point ([0, 1]), got {x.dtype}")


def _label(value: Any) -> int:
    label = torch.as_tensor(value)
    if label.numel() != 1 or label.is_floating_point() or label.dtype == torch.bool:
        raise ValueError(f"dataset labels must be integer class ids, got {value!r}")
    return int(label.item())


def _collate(batch: list[Any]) -> list[tuple[Tensor, int]]:
    out = []
    for element in batch:
        if not isinstance(element, tuple | list) or len(element) < 2:
            raise ValueError(f"dataset elements must be (image, label) pairs, got {type(element).__name__}")
        out.append((image_to_tensor(element[0]), _label(element[1])))
    return out


def dataset_labels(dataset: Dataset[Any]) -> Tensor:
    """Labels of a map-style dataset: its ``targets`` attribute when present, else read by one pass."""
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        labels = torch.as_tensor(np.asarray(targets)).flatten()
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"dataset.targets must hold integer class ids, got dtype {labels.dtype}")
        return labels.to(torch.long)
    return torch.tensor([_label(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)  # type: ignore[arg-type]


class DatasetDataModule(UnlearningDataModule):
    """Unlearning datamodule over your own map-style datasets yielding ``(image, label)``.

    Any ``torch.utils.data.Dataset`` with ``__len__`` and ``__getitem__`` works (in YAML give it as
    ``class_path``/``init_args``, e.g. ``torchvision.datasets.ImageFolder`` with a ``PILToTensor`` transform, or
    any importable class). Images may be tensors or arrays (uint8 0-255 or float in ``[0, 1]``, ``C x H x W`` or
    ``H x W``) or PIL images, all of one shape. Labels are class ids in ``[0, num_classes)``, read from the
    dataset's ``targets`` attribute when present (cheap), else by one pass at construction.

    Both datasets are read once into memory by :meth:`setup` (so they must fit in RAM), then split
    deterministically from ``(scenario, seed)`` like every built-in datamodule. Classification networks are
    expected to take the yielded pixels (``[0, 1]``) and normalise them themselves.

    Args:
        train: Training set ``D`` (the forget and retain sets are drawn from it).
        test: Test set.
        val: Optional held-out set; when given, the validation loaders evaluate on it in place of ``test`` (the
            test-side splits ``test``, ``test_forget``, ``test_retain`` are drawn from it).
        num_classes: Number of classes; ``None``: ``len(train.classes)`` when the dataset has ``classes``, else
            the largest label + 1.
        class_names: Class names (index = class id, used by ``ClassRemoval(["name"])``); ``None``:
            ``train.classes`` when they are strings, else ``"0"``, ``"1"``, ...
        name: Dataset name written to ``splits.json``.
        **kwargs: :class:`UnlearningDataModule` arguments (``scenario``, ``seed``, ``mode``, ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``labelled``, ``train_augment``, ``image_size``, ...).

    Raises:
        ValueError: If the datasets are empty, their images differ in shape or type, or a label lies outside
            ``[0, num_classes)``.
    """

    def __init__(
        self,
        train: Dataset,  # bare (not Dataset[Any]): jsonargparse then resolves the init_args of subclasses
        test: Dataset,
        val: Dataset | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "dataset",
        **kwargs: Any,
    ) -> None:
        for role, dataset in (("train", train), ("test", test), ("val", val)):
            if dataset is None:
                continue
            if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
                raise TypeError(f"{role} must be a map-style Dataset (with __len__ and __getitem__), got {dataset!r}")
            if len(dataset) == 0:
                raise ValueError(f"the {role} dataset is empty")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.train_dataset = train
        self.test_dataset = test
        self.val_dataset = val
        self._labels = {"train": dataset_labels(train), "test": dataset_labels(test)}
        if val is not None:
            self._labels["val"] = dataset_labels(val)
        classes = getattr(train, "classes", None)
        if num_classes is None:
            if isinstance(classes, Sequence) and not isinstance(classes, str) and len(classes) >= 2:
                num_classes = len(classes)
            else:
                num_classes = int(max(int(t.max()) for t in self._labels.values() if t.numel())) + 1
        check_integer("num_classes", num_classes, 2)
        if class_names is None:
            if (
                isinstance(classes, Sequence)
                and len(classes) == num_classes
                and all(isinstance(c, str) for c in classes)
            ):
                class_names = list(classes)
            else:
                class_names = [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names must hold num_classes={num_classes} names, got {len(class_names)}")
        self._num_classes_given = num_classes
        self._class_names_given = tuple(str(c) for c in class_names)
        first = image_to_tensor(_collate([train[0]])[0][0])
        # Per-instance values of what the built-in datamodules declare per class.
        self.native_shape = (int(first.shape[0]), int(first.shape[1]), int(first.shape[2]))  # type: ignore[misc]
        self.dataset_name = name  # type: ignore[misc]
        super().__init__(**kwargs)
        self.num_classes = self._num_classes_given
        self.class_names = self._class_names_given
        self._val_raw: tuple[Tensor, Tensor] | None = None

    def dataset_info(self) -> DatasetInfo:  # noqa: D102
        return DatasetInfo(
            num_classes=self._num_classes_given, name=self.dataset_name, class_names=self._class_names_given
        )

    # ------------------------------------------------------------------------------------------------ data
    def _read(self, dataset: Dataset[Any], role: str) -> tuple[Tensor, Tensor]:
        loader = DataLoader(
            dataset, batch_size=_LOAD_BATCH, shuffle=False, num_workers=self.num_workers, collate_fn=_collate
        )
        images: list[Tensor] = []
        labels: list[int] = []
        for batch in loader:
            for x, y in batch:
                if tuple(x.shape) != self.native_shape:
                    raise ValueError(
                        f"{type(self).__name__}: every image must have the shape of the first training image "
                        f"{self.native_shape}; {role} image {len(images)} has {tuple(x.shape)} (resize them in the "
                        "dataset's transform)"
                    )
                if images and x.dtype != images[0].dtype:
                    raise ValueError(f"{type(self).__name__}: {role} images mix dtypes {images[0].dtype} and {x.dtype}")
                images.append(x)
                labels.append(y)
        stacked = torch.stack(images)
        if (
            stacked.dtype == torch.float32
            and stacked.numel()
            and (float(stacked.min()) < 0 or float(stacked.max()) > 1)
        ):
            raise ValueError(
                f"{type(self).__name__}: float {role} images must hold pixels in [0, 1] (normalisation is the "
                "classifier's job), got values in "
                f"[{float(stacked.min()):.3g}, {float(stacked.max()):.3g}]"
            )
        return stacked.contiguous(), torch.tensor(labels, dtype=torch.long)

    def load_raw(self) -> RawData:
        """Read the train and test datasets into memory (one pass each)."""
        train_images, train_targets = self._read(self.train_dataset, "train")
        test_images, test_targets = self._read(self.test_dataset, "test")
        if train_images.dtype != test_images.dtype:
            raise ValueError(f"train images are {train_images.dtype} but test images {test_images.dtype}")
        if self.val_dataset is not None:
            self._val_raw = self._read(self.val_dataset, "val")
            self._checked_raw(RawData(train_images[:1], train_targets[:1], *self._val_raw))
        return RawData(train_images, train_targets, test_images, test_targets)

    def val_dataloader(self) -> dict[str, DataLoader]:
        """Evaluation loaders as for :meth:`test_dataloader`, with the test-side splits drawn from ``val``."""
        raw, split = self._require_setup()
        if self._val_raw is None:
            return super().val_dataloader()
        val_images, val_targets = self._val_raw
        full = self.scenario.split(
            raw.train_targets,
            self.num_classes,
            self.class_names,
            self.seed,
            test_targets=val_targets,
            dataset=self.dataset_name,
            preset=self.preset,
        )
        val_split = full if self._request is None else full.for_request(self._request)
        self._raw = RawData(raw.train_images, raw.train_targets, val_images, val_targets)
        self._split = val_split
        try:
            return self._eval_loaders()
        finally:
            self._raw, self._split = raw, split


class ImageFolderDataModule(DatasetDataModule):
    """Unlearning datamodule over image folders in the ``torchvision.datasets.ImageFolder`` layout.

    ``root/<class name>/<image>``, class ids in sorted class-name order. Images are converted to RGB, resized
    to ``image_size x image_size`` and kept as uint8 (yielded as pixels in ``[0, 1]``).

    Args:
        train_root: Folder of the training images.
        test_root: Folder of the test images (same class folders).
        val_root: Optional folder of validation images (see ``DatasetDataModule.val``).
        image_size: Side length the images are resized to when read.
        **kwargs: :class:`UnlearningDataModule` arguments (``scenario``, ``seed``, ``batch_size``, ...).

    Raises:
        ValueError: If the folders hold different classes or ``image_size`` is not a positive integer.
    """

    def __init__(
        self,
        train_root: str | Path,
        test_root: str | Path,
        val_root: str | Path | None = None,
        image_size: int = 32,
        **kwargs: Any,
    ) -> None:
        check_integer("image_size", image_size, 1)
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        transform = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.PILToTensor()])
        train = ImageFolder(str(train_root), transform=transform)
        test = ImageFolder(str(test_root), transform=transform)
        val = None if val_root is None else ImageFolder(str(val_root), transform=transform)
        for role, other in (("test", test), ("val", val)):
            if other is not None and other.classes != train.classes:
                raise ValueError(
                    f"the {role} folder's classes {other.classes} differ from the training folder's {train.classes}"
                )
        kwargs.setdefault("name", Path(train_root).resolve().parent.name or "image_folder")
        super().__init__(train, test, val, **kwargs)
