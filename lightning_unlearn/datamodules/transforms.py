"""Pixel transforms by phase: pretraining augmentation, resizing, evaluation.

Every transform maps one float32 ``C x H x W`` image in ``[0, 1]`` to another; normalisation is never applied here
(it is the classifier's first layer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

TrainAugment = Literal["none", "crop_flip", "crop_flip_rotate", "autoaugment_crop_flip", "laf_resized_crop"]
TRAIN_AUGMENTS: tuple[str, ...] = ("none", "crop_flip", "crop_flip_rotate", "autoaugment_crop_flip", "laf_resized_crop")
LAF_IMAGE_SIZE = 224

Transform = Callable[[Tensor], Tensor]

__all__ = [
    "LAF_IMAGE_SIZE",
    "TRAIN_AUGMENTS",
    "TrainAugment",
    "build_eval_transform",
    "build_train_transform",
    "output_size",
]


def check_train_augment(name: str) -> None:
    """``ValueError`` unless ``name`` is one of :data:`TRAIN_AUGMENTS`."""
    if name not in TRAIN_AUGMENTS:
        raise ValueError(f"train_augment must be one of {TRAIN_AUGMENTS}, got {name!r}")


def output_size(name: str, native: tuple[int, int], image_size: int | None) -> tuple[int, int]:
    """Height and width of the images a datamodule yields.

    ``image_size`` (square) when given; ``laf_resized_crop`` defaults to 224; otherwise the native size.
    """
    check_train_augment(name)
    if image_size is not None:
        return (image_size, image_size)
    if name == "laf_resized_crop":
        return (LAF_IMAGE_SIZE, LAF_IMAGE_SIZE)
    return native


class _Compose:
    """Apply transforms in order (picklable, for worker processes)."""

    def __init__(self, transforms: list[Transform]) -> None:
        self.transforms = transforms

    def __call__(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class _AsUint8:
    """Run a uint8-only transform (AutoAugment) on a float image in ``[0, 1]``."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, x: Tensor) -> Tensor:
        as_uint8 = (x * 255).round().clamp(0, 255).to(torch.uint8)
        return self.transform(as_uint8).to(torch.float32) / 255

    def __repr__(self) -> str:
        return f"AsUint8({self.transform!r})"


def _resize(native: tuple[int, int], size: tuple[int, int]) -> list[Transform]:
    from torchvision.transforms import v2

    return [] if size == native else [v2.Resize(list(size), antialias=True)]


def build_train_transform(name: str, native: tuple[int, int], image_size: int | None = None) -> Transform | None:
    """The pretraining augmentation ``name`` (``None`` when it is the identity).

    Args:
        name: One of :data:`TRAIN_AUGMENTS`: ``none``; ``crop_flip`` (RandomCrop pad 4 + horizontal flip; L2UL);
            ``crop_flip_rotate`` (+ RandomRotation(15); JiT/SSD); ``autoaugment_crop_flip`` (AutoAugment CIFAR-10
            policy, RandomCrop pad 4 reflect, flip; Precision); ``laf_resized_crop`` (Resize, RandomResizedCrop,
            flip; LAF on CIFAR-10/SVHN).
        native: Native ``(H, W)`` of the dataset.
        image_size: Output side length; ``None`` keeps the native size (224 for ``laf_resized_crop``).
    """
    from torchvision.transforms import v2

    size = output_size(name, native, image_size)
    steps: list[Transform] = []
    if name == "none":
        steps += _resize(native, size)
    elif name in ("crop_flip", "crop_flip_rotate"):
        steps += _resize(native, size)
        steps += [v2.RandomCrop(list(size), padding=4), v2.RandomHorizontalFlip()]
        if name == "crop_flip_rotate":
            steps.append(v2.RandomRotation(15))
    elif name == "autoaugment_crop_flip":
        steps.append(_AsUint8(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)))
        steps += _resize(native, size)
        pad = min(4, min(size) - 1)  # reflect padding must be smaller than the image (tiny test images)
        steps += [v2.RandomCrop(list(size), padding=pad, padding_mode="reflect"), v2.RandomHorizontalFlip()]
    else:  # laf_resized_crop
        steps += [v2.Resize(list(size), antialias=True), v2.RandomResizedCrop(list(size), antialias=True)]
        steps.append(v2.RandomHorizontalFlip())
    return _Compose(steps) if steps else None


def build_eval_transform(name: str, native: tuple[int, int], image_size: int | None = None) -> Transform | None:
    """The evaluation transform (never augmented): resize to the output size; LAF adds a centre crop."""
    from torchvision.transforms import v2

    size = output_size(name, native, image_size)
    steps = _resize(native, size)
    if name == "laf_resized_crop":
        steps = [v2.Resize(list(size), antialias=True), v2.CenterCrop(list(size))]
    return _Compose(steps) if steps else None
