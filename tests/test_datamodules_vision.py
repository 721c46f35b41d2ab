"""Torchvision-backed datamodules on tiny generated files in torchvision's on-disk formats (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_unlearn.datamodules import (
    CIFAR10_NAMES,
    CIFAR100_FINE_TO_COARSE,
    CIFAR10DataModule,
    CIFAR20DataModule,
    CIFAR100DataModule,
    ClassRemoval,
    DatasetNotFoundError,
    FashionMNISTDataModule,
    MNISTDataModule,
    SubclassRemoval,
    SVHNDataModule,
)

try:
    from data_factories import (
        cyclic_targets,
        write_cifar10,
        write_cifar100,
        write_fashion_mnist,
        write_mnist,
        write_svhn,
    )
except ImportError:  # pragma: no cover - tests run as a package
    from tests.data_factories import (
        cyclic_targets,
        write_cifar10,
        write_cifar100,
        write_fashion_mnist,
        write_mnist,
        write_svhn,
    )


CASES = [
    (MNISTDataModule, write_mnist, (1, 28, 28), None),
    (FashionMNISTDataModule, write_fashion_mnist, (1, 28, 28), None),
    (CIFAR10DataModule, write_cifar10, (3, 32, 32), (0.4914, 0.4822, 0.4465)),
    (SVHNDataModule, write_svhn, (3, 32, 32), (0.4377, 0.4438, 0.4728)),
]


@pytest.mark.parametrize(("cls", "writer", "shape", "mean"), CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_reads_torchvision_files(tmp_path, cls, writer, shape, mean):
    train_y, test_y = cyclic_targets(40), cyclic_targets(15)
    written = writer(tmp_path, train_y, test_y)
    dm = cls(root=str(tmp_path), scenario=ClassRemoval([0]), batch_size=8)
    assert dm.input_shape == shape and dm.mean == mean and dm.num_classes == 10
    dm.prepare_data()  # download=False: nothing to do
    dm.setup("fit")
    raw = dm._raw
    assert raw is not None
    assert raw.train_images.dtype == torch.uint8 and tuple(raw.train_images.shape) == (40, *shape)
    assert torch.equal(raw.train_images, torch.from_numpy(written["train_images"]))
    assert torch.equal(raw.test_images, torch.from_numpy(written["test_images"]))
    assert raw.train_targets.tolist() == train_y.tolist()  # SVHN's label 10 is digit 0
    assert raw.test_targets.tolist() == test_y.tolist()
    assert dm.forget_indices.tolist() == [0, 10, 20, 30]
    x, y, index = next(iter(dm.val_dataloader()["forget"]))
    assert x.shape == (4, *shape) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(written["train_images"][[0, 10, 20, 30]]).float() / 255)
    batch = next(iter(dm.train_dataloader()))[0]
    assert batch["retain"][0].shape[1:] == shape


def test_class_names_and_cifar100(tmp_path):
    write_cifar10(tmp_path, cyclic_targets(20), cyclic_targets(10))
    dm = CIFAR10DataModule(root=str(tmp_path), scenario=ClassRemoval(["cat", "truck"]))
    dm.setup()
    assert dm.class_names == CIFAR10_NAMES
    assert dm.forget_indices.tolist() == [3, 9, 13, 19]
    write_cifar100(tmp_path, np.arange(200) % 100, np.arange(100))
    dm100 = CIFAR100DataModule(root=str(tmp_path), scenario=ClassRemoval(["rocket"]))
    dm100.setup()
    assert dm100.num_classes == 100 and dm100.forget_indices.tolist() == [69, 169]
    assert dm100.mean == (0.50708, 0.48655, 0.44092)


def test_cifar20_coarse_targets_fine_labels_and_aliases(tmp_path):
    fine_train, fine_test = np.arange(300) % 100, np.arange(100)
    written = write_cifar100(tmp_path, fine_train, fine_test)
    dm = CIFAR20DataModule(root=str(tmp_path), scenario=SubclassRemoval(["rocket", "mushroom"]))
    assert dm.num_classes == 20 and dm.class_names[19] == "vehicles_2"
    dm.setup()
    raw = dm._raw
    assert raw is not None and raw.train_fine_targets is not None
    coarse = torch.tensor(CIFAR100_FINE_TO_COARSE)
    assert torch.equal(raw.train_targets, coarse[torch.from_numpy(fine_train)])
    assert torch.equal(raw.train_fine_targets, torch.from_numpy(fine_train))
    assert torch.equal(raw.train_images, torch.from_numpy(written["train_images"]))
    assert dm.forget_indices.tolist() == [51, 69, 151, 169, 251, 269]
    assert dm.split_targets("forget").tolist() == [4, 19] * 3  # coarse labels
    assert dm.test_forget_indices is not None and dm.test_forget_indices.tolist() == [51, 69]
    assert dm.eval_split_names == ["forget", "retain", "test", "test_forget", "test_retain"]
    by_alias = CIFAR20DataModule(root=str(tmp_path), scenario=ClassRemoval(["vehicle2"]))
    by_alias.setup()
    assert by_alias.forget_indices.numel() == 15  # five fine classes, three samples each
    with pytest.raises(ValueError, match="unknown class name 'spaceship'"):
        CIFAR20DataModule(root=str(tmp_path), scenario=SubclassRemoval(["spaceship"]))


@pytest.mark.parametrize("cls", [MNISTDataModule, CIFAR10DataModule, CIFAR20DataModule, SVHNDataModule])
def test_missing_folder_names_the_path_and_download(tmp_path, cls):
    root = tmp_path / "nowhere"
    dm = cls(root=str(root))
    dm.prepare_data()  # never downloads unless asked
    assert not root.exists() or not any(root.iterdir())
    with pytest.raises(DatasetNotFoundError, match="download=True") as info:
        dm.setup()
    assert str(root) in str(info.value)


def test_corrupt_files_raise_a_clear_error(tmp_path):
    write_cifar10(tmp_path, cyclic_targets(10), cyclic_targets(10))
    Path(tmp_path, "cifar-10-batches-py", "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        CIFAR10DataModule(root=str(tmp_path)).setup()
    write_svhn(tmp_path, cyclic_targets(10), cyclic_targets(10))
    Path(tmp_path, "test_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetNotFoundError, match="test split"):
        SVHNDataModule(root=str(tmp_path)).setup()
