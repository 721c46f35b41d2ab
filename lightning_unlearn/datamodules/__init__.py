"""Datamodules, unlearning scenarios and training plans.

Every split is a deterministic function of (dataset, scenario, seed); datamodules yield pixels in ``[0, 1]``
(normalisation is the classifier's first layer), dict training batches keyed by split name, and named evaluation
loaders whose batches carry each sample's index. Elements and batches are named tuples
(:class:`LabelledBatch`, :class:`LabelledPair`, :class:`UnlabelledBatch`).
"""

from lightning_unlearn.datamodules.base import (
    DEFAULT_PLAN_EPOCHS,
    MODES,
    RawData,
    SplitDataset,
    UnlearningDataModule,
)
from lightning_unlearn.datamodules.batches import Batch, LabelledBatch, LabelledPair, UnlabelledBatch, unpack_batch
from lightning_unlearn.datamodules.classes import (
    CIFAR10_NAMES,
    CIFAR20_ALIASES,
    CIFAR20_FINE_CLASSES,
    CIFAR20_NAMES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR100_NAMES,
    DIGIT_NAMES,
    FASHION_MNIST_NAMES,
)
from lightning_unlearn.datamodules.dataset import DatasetDataModule, ImageFolderDataModule, image_to_tensor
from lightning_unlearn.datamodules.embedded import Digits8x8DataModule, MNIST5kDataModule, positional_test_mask
from lightning_unlearn.datamodules.phases import PHASE_MODES, Phase, phase_at, plan_epochs
from lightning_unlearn.datamodules.samplers import (
    ReplicatedDistributedSampler,
    UnrepeatedDistributedSampler,
    global_batch_shards,
    global_batch_share,
)
from lightning_unlearn.datamodules.scenarios import (
    ClassFraction,
    ClassRemoval,
    Continual,
    DatasetInfo,
    Indices,
    KInstances,
    NoisyLabels,
    RandomRemoval,
    RequestSplit,
    Scenario,
    SplitResult,
    SubclassRemoval,
    floor_fraction,
    indices_sha256,
    take,
)
from lightning_unlearn.datamodules.transforms import TRAIN_AUGMENTS, build_eval_transform, build_train_transform
from lightning_unlearn.datamodules.vision import (
    CIFAR10DataModule,
    CIFAR20DataModule,
    CIFAR100DataModule,
    DatasetCorruptError,
    DatasetNotFoundError,
    FashionMNISTDataModule,
    MNISTDataModule,
    SVHNDataModule,
    TorchvisionDataModule,
)

__all__ = [
    "CIFAR10_NAMES",
    "CIFAR20_ALIASES",
    "CIFAR20_FINE_CLASSES",
    "CIFAR20_NAMES",
    "CIFAR100_FINE_TO_COARSE",
    "CIFAR100_NAMES",
    "DEFAULT_PLAN_EPOCHS",
    "DIGIT_NAMES",
    "FASHION_MNIST_NAMES",
    "MODES",
    "PHASE_MODES",
    "TRAIN_AUGMENTS",
    "Batch",
    "CIFAR10DataModule",
    "CIFAR20DataModule",
    "CIFAR100DataModule",
    "ClassFraction",
    "ClassRemoval",
    "Continual",
    "DatasetDataModule",
    "DatasetInfo",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "Digits8x8DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "Indices",
    "KInstances",
    "LabelledBatch",
    "LabelledPair",
    "MNIST5kDataModule",
    "MNISTDataModule",
    "NoisyLabels",
    "Phase",
    "RandomRemoval",
    "RawData",
    "RequestSplit",
    "SVHNDataModule",
    "Scenario",
    "SplitDataset",
    "SplitResult",
    "SubclassRemoval",
    "TorchvisionDataModule",
    "UnlabelledBatch",
    "UnlearningDataModule",
    "ReplicatedDistributedSampler",
    "UnrepeatedDistributedSampler",
    "build_eval_transform",
    "build_train_transform",
    "floor_fraction",
    "global_batch_share",
    "global_batch_shards",
    "image_to_tensor",
    "indices_sha256",
    "phase_at",
    "plan_epochs",
    "positional_test_mask",
    "take",
    "unpack_batch",
]
