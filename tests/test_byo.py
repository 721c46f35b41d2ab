"""Bring your own classifier and dataset: head detection, ``describe``, ``DatasetDataModule`` and every method."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
import yaml
from torch import Tensor, nn
from torch.utils.data import Dataset
from trainers import quiet_trainer

import lightning_unlearn.methods as methods
from lightning_unlearn.datamodules import (
    ClassRemoval,
    DatasetDataModule,
    Digits8x8DataModule,
    ImageFolderDataModule,
    KInstances,
    NoisyLabels,
    RandomRemoval,
)
from lightning_unlearn.methods.base import MultiStageUnlearningMethod, UnlearningMethod
from lightning_unlearn.models import (
    describe,
    describe_model,
    detect_head_name,
    detect_num_classes,
    final_linear,
    load_classifier,
    representation,
)

NUM_CLASSES = 10


# ---------------------------------------------------------------------------------------------------------------
# user data and models (importable: the YAML case names them by class path)
# ---------------------------------------------------------------------------------------------------------------
class GeneratedImages(Dataset[tuple[Tensor, int]]):
    """A user dataset: ``n`` float images in [0, 1], cyclic labels, no ``targets`` attribute."""

    def __init__(self, n: int = 40, shape: tuple[int, int, int] = (3, 32, 32), seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = [i % NUM_CLASSES for i in range(n)]
        base = torch.rand(NUM_CLASSES, *shape, generator=g)
        noise = torch.rand(n, *shape, generator=g)
        self.images = (0.7 * base[self.labels] + 0.3 * noise).clamp(0, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], self.labels[i]


class TargetsImages(GeneratedImages):
    """The same data with a ``targets`` attribute and uint8 images; counts element reads."""

    def __init__(self, n: int = 40, shape: tuple[int, int, int] = (3, 32, 32), seed: int = 0) -> None:
        super().__init__(n, shape, seed)
        self.targets = torch.tensor(self.labels)
        self.images = (self.images * 255).round().to(torch.uint8)
        self.reads = 0

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        self.reads += 1
        return super().__getitem__(i)


class UserCNN(nn.Module):
    """A user's network: no ``head_name``, no ``num_classes``, a BN layer, a last ``nn.Linear`` child."""

    def __init__(self, in_channels: int = 3, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.hidden = nn.Linear(8 * 16, 32)
        self.out = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        z = self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)
        return self.out(torch.relu(self.hidden(z)))


def user_data(shape: tuple[int, int, int] = (3, 32, 32), **kwargs: Any) -> DatasetDataModule:
    kwargs.setdefault("scenario", ClassRemoval([0]))
    kwargs.setdefault("batch_size", 8)
    return DatasetDataModule(GeneratedImages(40, shape, seed=0), GeneratedImages(20, shape, seed=1), **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# head detection and describe
# ---------------------------------------------------------------------------------------------------------------
def _meta(builder: Any, **kwargs: Any) -> nn.Module:
    with torch.device("meta"):  # structure only: no weight initialisation cost
        return builder(**kwargs)


@pytest.mark.parametrize(
    ("builder", "head", "bn"),
    [
        (torchvision.models.resnet18, "fc", 20),
        (torchvision.models.vgg11, "classifier.6", 0),
        (torchvision.models.vgg11_bn, "classifier.6", 8),
        (torchvision.models.mobilenet_v3_small, "classifier.3", 34),
        (torchvision.models.densenet121, "classifier", 121),
        (torchvision.models.efficientnet_b0, "classifier.1", 49),
        (torchvision.models.convnext_tiny, "classifier.2", 0),
        (torchvision.models.vit_b_16, "heads.head", 0),
    ],
)
def test_head_detected_on_torchvision_models(builder: Any, head: str, bn: int) -> None:
    model = _meta(builder, num_classes=7)
    assert detect_head_name(model) == head
    assert detect_num_classes(model) == 7
    info = describe_model(model)
    assert (info.head_name, info.num_classes, info.batch_norm_layers) == (head, 7, bn)
    assert info.normalize_mean is None
    text = describe(model)
    assert f"'{head}'" in text and "num_classes:    7" in text and f"batch norms:    {bn}" in text


def test_describe_builtin_reports_declared_head_and_normalisation() -> None:
    model = load_classifier("cifar_resnet18", 10)
    info = describe_model(model)
    assert info.head_name == model.head_name and info.num_classes == 10
    assert info.normalize_mean is not None and len(info.normalize_mean) == 3
    assert torch.allclose(torch.tensor(info.normalize_std), model.normalize.std.flatten())
    assert "mean=(" in describe(model)
    assert info.head_parameters + info.extractor_parameters == sum(p.numel() for p in model.parameters())


def test_head_detected_on_user_models_and_timm_style_get_classifier() -> None:
    assert detect_head_name(UserCNN()) == "out"
    assert detect_head_name(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))) == "3"
    dropout_last = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout())
    assert detect_head_name(dropout_last) == "1"  # the last nn.Linear child

    class TimmLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 6)
            self.heads = nn.ModuleDict({"main": nn.Linear(6, 5), "aux": nn.Linear(6, 2)})
            self.num_classes = 0  # timm sets it; not >= 2 here, so the head's out_features is used

        def get_classifier(self) -> nn.Module:
            return self.heads["main"]

        def forward(self, x: Tensor) -> Tensor:
            return self.heads["main"](self.body(x))

    model = TimmLike()
    assert detect_head_name(model) == "heads.main" and detect_num_classes(model) == 5
    assert torch.equal(representation(model, torch.ones(2, 4)), model.body(torch.ones(2, 4)))


def test_head_detection_errors_say_what_was_looked_for() -> None:
    convs = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r"cannot find the classifier head.*get_classifier.*fc / classifier"):
        detect_head_name(convs)
    with pytest.raises(ValueError, match="cannot tell the number of classes"):
        detect_num_classes(convs)
    with pytest.raises(ValueError, match="cannot find the classifier head"):
        methods.PruningLast(convs)
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        methods.ActivationReset(UserCNN(), head_name="nope")
    with pytest.raises(ValueError, match="head_name='fc2'.*no submodule 'fc2'"):
        methods.LAF(torchvision.models.resnet18(num_classes=NUM_CLASSES), head_name="fc2")


def test_explicit_head_name_overrides_detection() -> None:
    model = UserCNN()
    method = methods.PruningLast(model, head_name="hidden")
    assert method.eligible_names() == ["hidden.weight"]
    assert methods.PruningLast(UserCNN()).eligible_names() == ["out.weight"]
    assert final_linear(model, "hidden") is model.hidden


def test_num_classes_read_from_the_detected_head() -> None:
    net = torchvision.models.resnet18(num_classes=7)
    assert methods.L2UL(net).hparams["num_classes"] == 7
    assert methods.RandomLabel(net).num_classes == 7
    assert methods.Poison(net).num_classes == 7
    assert methods.Pruning(UserCNN(num_classes=4)).num_classes == 4


# ---------------------------------------------------------------------------------------------------------------
# DatasetDataModule
# ---------------------------------------------------------------------------------------------------------------
class _RawAsDataset(Dataset[tuple[Tensor, int]]):
    def __init__(self, images: Tensor, targets: Tensor, with_targets: bool) -> None:
        self.images, self._y = images, targets
        if with_targets:
            self.targets = targets.tolist()

    def __len__(self) -> int:
        return len(self._y)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self._y[i])


@pytest.mark.parametrize("scenario", [ClassRemoval([3]), RandomRemoval(0.1), KInstances(16), NoisyLabels()])
def test_same_splits_and_batches_as_the_builtin_datamodule(scenario: Any) -> None:
    builtin = Digits8x8DataModule(scenario=scenario, seed=3, batch_size=32)
    builtin.setup("fit")
    raw = builtin._raw
    assert raw is not None
    ours = DatasetDataModule(
        _RawAsDataset(raw.train_images, raw.train_targets, with_targets=True),
        _RawAsDataset(raw.test_images, raw.test_targets, with_targets=False),
        name="digits8x8",
        scenario=scenario,
        seed=3,
        batch_size=32,
    )
    ours.setup("fit")
    assert ours.num_classes == 10 and ours.input_shape == (1, 8, 8)
    record, expected = ours.split_record(), builtin.split_record()
    assert record == expected
    assert ours.eval_split_names == builtin.eval_split_names
    for labelled in (True, False):
        a = builtin.split_dataset("forget", labelled=labelled, with_index=True)
        b = ours.split_dataset("forget", labelled=labelled, with_index=True)
        for x, y in zip(a.__getitems__([0, 1, 5]), b.__getitems__([0, 1, 5]), strict=True):
            assert all(torch.equal(u, v) for u, v in zip(x, y, strict=True))


def test_labels_from_targets_float_images_label_free_batches_and_splits_file(tmp_path: Path) -> None:
    data = user_data(labelled=False)
    assert data.num_classes == NUM_CLASSES and data.class_names[:2] == ("0", "1")
    assert data.input_shape == (3, 32, 32)
    data.setup()
    assert data.split_indices("forget").tolist() == list(range(0, 40, NUM_CLASSES))
    batch = next(iter(data.train_dataloader()))[0]
    assert set(batch) == {"forget", "retain"} and isinstance(batch["forget"], Tensor)
    assert batch["forget"].shape == (4, 3, 32, 32) and float(batch["forget"].max()) <= 1.0
    x, y, index = next(iter(data.val_dataloader()["test"]))
    assert torch.equal(y, torch.arange(20) % NUM_CLASSES) and torch.equal(index, torch.arange(20))
    path = data.save_splits(tmp_path / "splits.json")
    assert json.loads(path.read_text())["dataset"] == "dataset"


def test_val_dataset_replaces_test_in_validation_loaders() -> None:
    data = DatasetDataModule(
        GeneratedImages(40), GeneratedImages(20, seed=1), val=GeneratedImages(30, seed=2), batch_size=8
    )
    data.setup("fit")
    val, test = data.val_dataloader(), data.test_dataloader()
    assert len(val["test"].dataset) == 30 and len(test["test"].dataset) == 20
    assert len(val["test_forget"].dataset) == 3 and len(test["test_forget"].dataset) == 2
    assert torch.equal(val["forget"].dataset.positions, test["forget"].dataset.positions)


def test_labels_read_from_targets_without_a_pass() -> None:
    train, test = TargetsImages(40), TargetsImages(20, seed=1)
    data = DatasetDataModule(train, test, scenario=ClassRemoval([1]))
    assert (train.reads, test.reads) == (1, 0)  # the first image only, for the input shape
    data.setup()
    assert train.reads == 41 and data._raw is not None and data._raw.train_images.dtype == torch.uint8
    assert data.split_indices("forget").tolist() == list(range(1, 40, NUM_CLASSES))


def test_dataset_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="empty"):
        DatasetDataModule(GeneratedImages(0), GeneratedImages(4))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        DatasetDataModule(GeneratedImages(4), GeneratedImages(4), num_classes=1)
    mixed = DatasetDataModule(GeneratedImages(10), GeneratedImages(10, shape=(3, 16, 16)))
    with pytest.raises(ValueError, match=r"shape of the first training image \(3, 32, 32\)"):
        mixed.setup()
    with pytest.raises(ValueError, match="scenario|class"):
        DatasetDataModule(GeneratedImages(10), GeneratedImages(10), scenario=ClassRemoval([12]))


def test_image_folder_datamodule(tmp_path: Path) -> None:
    from PIL import Image

    for split, n in (("train", 3), ("test", 1)):
        for c, name in enumerate(["cat", "dog"]):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 10), (40 * c + i, 100, 200)).save(folder / f"{i}.png")
    data = ImageFolderDataModule(tmp_path / "train", tmp_path / "test", image_size=8, scenario=ClassRemoval(["dog"]))
    assert data.class_names == ("cat", "dog") and data.input_shape == (3, 8, 8)
    data.setup()
    assert data.split_indices("forget").tolist() == [3, 4, 5]
    x, y, _ = next(iter(data.test_dataloader()["test"]))
    assert x.shape == (2, 3, 8, 8) and torch.allclose(x[1, 2], torch.full((8, 8), 200 / 255))
    assert y.tolist() == [0, 1]


# ---------------------------------------------------------------------------------------------------------------
# every exported method on a torchvision ResNet-18 and on a user CNN
# ---------------------------------------------------------------------------------------------------------------
NOT_METHODS = {"Classifier", "RetrainOracle"}
#: Required non-architecture arguments per method (none today); a new method with a required argument fails
#: below until it is listed here.
REQUIRED: dict[str, dict[str, Any]] = {}
#: Budget arguments made tiny wherever a method has them (epochs, adversarial passes).
TINY = {
    "epochs": 1,
    "retain_epochs": 1,
    "overfit_epochs": 1,
    "forget_epochs": 1,
    "vae_epochs": 1,
    "unlearn_epochs": 1,
    "repair_epochs": 1,
    "max_epochs_forget": 1,
    "max_epochs": 1,
    "pgd_iters": 1,
    "num_adv_per_instance": 1,
    "no_l1_epochs": 0,
    "impair_epochs": 1,
    "noise_steps": 2,
    "noise_copies": 2,
    "retain_per_class": 2,
}


def method_names() -> list[str]:
    names = []
    for name in methods.__all__:
        obj = getattr(methods, name)
        if not inspect.isclass(obj) or not issubclass(obj, UnlearningMethod) or name in NOT_METHODS:
            continue
        if obj.__module__ == "lightning_unlearn.methods.base":
            continue  # the regime bases
        names.append(name)
    return names


def tiny_arguments(name: str) -> dict[str, Any]:
    """The method's required non-architecture arguments and tiny budgets: all a user would have to give."""
    params = inspect.signature(getattr(methods, name).__init__).parameters
    required = [
        p
        for p, v in params.items()
        if v.default is inspect.Parameter.empty
        and p not in ("self", "model")
        and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)
    ]
    missing = [p for p in required if p not in REQUIRED.get(name, {})]
    assert not missing, f"{name} has required arguments {missing}: add them to REQUIRED in tests/test_byo.py"
    kwargs = {k: v for k, v in TINY.items() if k in params} | REQUIRED.get(name, {})
    if "lr_decay_epochs" in params:
        kwargs["lr_decay_epochs"] = []
    return kwargs


def build(name: str, model: nn.Module) -> UnlearningMethod:
    return getattr(methods, name)(model, **tiny_arguments(name))


def fit_end_to_end(method: UnlearningMethod, data: DatasetDataModule, tmp_path: Path) -> None:
    if isinstance(method, MultiStageUnlearningMethod):
        epochs = sum(stage.epochs for stage in method.stages())
        extra: dict[str, Any] = {"reload_dataloaders_every_n_epochs": 1}
    else:
        epochs = int(method.hparams.get("epochs", 1))
        extra = {}
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    trainer = quiet_trainer(
        tmp_path, max_epochs=epochs, limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0, **extra
    )
    trainer.fit(method, datamodule=data)
    after = method.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("name", method_names())
def test_every_method_fits_a_torchvision_resnet18(name: str, tmp_path: Path) -> None:
    # 40 x 40 inputs leave layer4 2 x 2 positions, so batch norm also trains on a last batch of one sample.
    # Slow: 10-50 s per method on a busy 2-core CPU.
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    fit_end_to_end(build(name, model), user_data((3, 40, 40)), tmp_path)


def test_a_method_fits_a_torchvision_resnet18_untouched(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    data = DatasetDataModule(GeneratedImages(16, (3, 16, 16)), GeneratedImages(10, (3, 16, 16), seed=1), batch_size=8)
    method = methods.PruningLast(model, overfit_epochs=1, retain_epochs=1)
    assert method.head_name == "fc" and method.num_classes == NUM_CLASSES
    fit_end_to_end(method, data, tmp_path)


@pytest.mark.parametrize("name", method_names())
def test_every_method_fits_a_user_cnn_on_a_user_dataset(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    fit_end_to_end(build(name, UserCNN()), user_data(), tmp_path)


def test_yaml_config_with_user_dataset_and_model(tmp_path: Path) -> None:
    from lightning_unlearn.main import main

    config = {
        "seed_everything": 0,
        "model": {
            "class_path": "lightning_unlearn.methods.PruningLast",
            "init_args": {
                "model": {"class_path": "test_byo.UserCNN"},
                "overfit_epochs": 1,
                "retain_epochs": 1,
            },
        },
        "data": {
            "class_path": "lightning_unlearn.datamodules.DatasetDataModule",
            "init_args": {
                "train": {"class_path": "test_byo.GeneratedImages", "init_args": {"n": 40}},
                "test": {"class_path": "test_byo.GeneratedImages", "init_args": {"n": 20, "seed": 1}},
                "scenario": {"class_path": "lightning_unlearn.datamodules.ClassRemoval", "init_args": {"classes": [0]}},
                "batch_size": 8,
            },
        },
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 2,
            "reload_dataloaders_every_n_epochs": 1,
            "limit_train_batches": 2,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path),
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "logs"), "name": "byo"},
            },
        },
    }
    path = tmp_path / "byo.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(path)])
    assert isinstance(cli.datamodule, DatasetDataModule) and isinstance(cli.model.model, UserCNN)
    splits = list(tmp_path.rglob("splits.json"))
    assert splits and json.loads(splits[0].read_text())["forget_indices"] == list(range(0, 40, NUM_CLASSES))


@pytest.mark.slow  # one command-line fit per method
@pytest.mark.parametrize("name", method_names())
def test_every_method_fits_a_user_cnn_and_dataset_from_yaml(name: str, tmp_path: Path) -> None:
    from lightning_unlearn.main import main
    from lightning_unlearn.methods.budget import declares_budget

    cls = getattr(methods, name)
    init_args = tiny_arguments(name)
    init_args["model"] = {"class_path": "test_byo.UserCNN"}  # nothing but the model: no head_name, no num_classes
    trainer: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "limit_train_batches": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
    }
    if not declares_budget(cls):
        trainer["max_epochs"] = 1  # the trainer's epochs are the budget; budget-declaring methods set their own
    config = {
        "seed_everything": 0,
        "model": {"class_path": f"lightning_unlearn.methods.{name}", "init_args": init_args},
        "data": {
            "class_path": "lightning_unlearn.datamodules.DatasetDataModule",
            "init_args": {
                "train": {"class_path": "test_byo.GeneratedImages", "init_args": {"n": 40}},
                "test": {"class_path": "test_byo.GeneratedImages", "init_args": {"n": 20, "seed": 1}},
                "scenario": {"class_path": "lightning_unlearn.datamodules.ClassRemoval", "init_args": {"classes": [0]}},
                "batch_size": 8,
            },
        },
        "trainer": trainer,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(path)])
    assert isinstance(cli.model, cls) and isinstance(cli.model.model, UserCNN)
    assert cli.trainer.current_epoch == cli.trainer.max_epochs >= 1
    assert (tmp_path / "classifier.pt").is_file()
