"""Hostile and bad input (issue #10): each is answered with a clear error and nothing is written over.

Covered elsewhere and not repeated here: ``tests/test_models.py`` (malicious pickles refused by ``load_classifier``,
truncated files, wrong class count, another architecture), ``tests/test_cli.py`` (``--model NoSuchMethod``),
``tests/test_datamodules_scenarios.py`` (scenario validation on ``Scenario.split``) and
``tests/test_datamodules_vision.py`` (missing folders, a garbage CIFAR-10 batch, a garbage SVHN file).
"""

from __future__ import annotations

import builtins
import copy
import inspect
import math
import pickle
import re
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from data_factories import ToyDataModule, cyclic_targets, write_cifar10, write_cifar100, write_mnist, write_svhn
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from test_cli import tiny_config
from trainers import quiet_trainer

import lightning_unlearn.methods as methods
from lightning_unlearn.datamodules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    ClassFraction,
    ClassRemoval,
    Continual,
    DatasetCorruptError,
    DatasetNotFoundError,
    Indices,
    KInstances,
    MNISTDataModule,
    RandomRemoval,
    SVHNDataModule,
)
from lightning_unlearn.main import main
from lightning_unlearn.methods import SSD, Finetune, Hybrid, UnlearningMethod
from lightning_unlearn.models import build_classifier, export_classifier, load_classifier
from lightning_unlearn.presets import CONFIG_ROOT

BASES = {"UnlearningMethod", "GradientUnlearningMethod", "MultiStageUnlearningMethod", "OnePassUnlearningMethod"}
QUICKSTART = CONFIG_ROOT / "quickstart.yaml"


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1)


class _WritesMarker:
    """A pickle payload that creates ``marker`` when unpickled (``builtins.exec``, no shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-shaped checkpoint whose unpickling would run code."""
    torch.save({"state_dict": tiny_model().state_dict(), "payload": _WritesMarker(marker)}, path)
    return path


def _config(tmp_path: Path, edit: Any = None) -> Path:
    """The quickstart config made tiny (``tiny_config``), optionally edited by ``edit(cfg)``."""
    path = tiny_config(QUICKSTART, tmp_path)
    if edit is not None:
        cfg = yaml.safe_load(path.read_text())
        edit(cfg)
        path.write_text(yaml.safe_dump(cfg))
    return path


def _assert_no_classifier_exported(tmp_path: Path) -> None:
    assert not list(tmp_path.rglob("classifier.pt"))


# --------------------------------------------------------------------------------------------- 1. code in a pickle
def test_payload_is_live_when_unpickled_unsafely(tmp_path):
    """Control: the payload used below really runs when a file is unpickled without restrictions."""
    marker = tmp_path / "pwned"
    path = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def test_cli_refuses_a_malicious_ckpt_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    config = _config(tmp_path)
    with pytest.raises(ValueError, match=f"cannot use checkpoint {evil}.*refused"):
        main(["fit", "--config", str(config), "--ckpt_path", str(evil)])
    assert not marker.exists()
    _assert_no_classifier_exported(tmp_path)


def test_cli_names_a_truncated_resume_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path)
    main(["fit", "--config", str(config)])
    last = next(tmp_path.rglob("last.ckpt"))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"cannot use checkpoint {truncated}.*truncated"):
        main(["fit", "--config", str(config), "--ckpt_path", str(truncated)])


def test_cli_refuses_a_malicious_classifier_checkpoint_in_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)

    def point_at_evil(cfg: dict) -> None:
        assert cfg["model"]["init_args"]["model"]["class_path"] == "lightning_unlearn.models.load_classifier"
        cfg["model"]["init_args"]["model"]["init_args"]["ckpt_path"] = str(evil)

    with pytest.raises(ValueError, match=rf"refused to load {re.escape(str(evil))}.*arbitrary code"):
        main(["fit", "--config", str(_config(tmp_path, point_at_evil))])
    assert not marker.exists()
    _assert_no_classifier_exported(tmp_path)


# --------------------------------------------------------------------------------------------- 2. truncated file
def test_truncated_classifier_names_the_file_directly_and_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = export_classifier(tiny_model(), tmp_path / "original.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expected = rf"cannot read checkpoint {re.escape(str(path))}: the file is truncated or corrupt"
    with pytest.raises(ValueError, match=expected):
        load_classifier("tiny_cnn", 10, str(path), in_channels=1)

    def point_at_truncated(cfg: dict) -> None:
        cfg["model"]["init_args"]["model"]["init_args"]["ckpt_path"] = str(path)

    with pytest.raises(ValueError, match=expected):
        main(["fit", "--config", str(_config(tmp_path, point_at_truncated))])
    assert path.read_bytes() == data[: len(data) // 2]  # the input was not touched
    _assert_no_classifier_exported(tmp_path)


# --------------------------------------------------------------------------------------------- 3. other network
@pytest.mark.parametrize(
    ("saved", "loaded", "match"),
    [
        # another input-channel count: the shapes are named
        (dict(arch="tiny_cnn", num_classes=10, in_channels=3), dict(in_channels=1), r"conv\.weight: checkpoint "),
        # another architecture: missing and unexpected keys are named
        (
            dict(arch="laf_cnn", num_classes=10),
            {},
            r"does not match tiny_cnn.*missing keys \[.*fc2\.weight.*unexpected",
        ),
    ],
)
def test_classifier_of_another_network_is_refused(tmp_path, saved, loaded, match):
    path = export_classifier(build_classifier(**saved), tmp_path / "other.pt")
    with pytest.raises(ValueError, match=match):
        load_classifier("tiny_cnn", 10, str(path), **loaded)


def test_method_checkpoint_of_another_class_count_names_the_shape_mismatch(tmp_path):
    """A Lightning checkpoint of a fitted method (keys under ``model.``) with 5 classes, loaded for 10 classes."""
    method = Finetune(load_classifier("tiny_cnn", 5, in_channels=1))
    torch.save({"state_dict": method.state_dict(), "epoch": 1}, tmp_path / "method.ckpt")
    with pytest.raises(ValueError, match=r"fc2\.weight: checkpoint \(5, 32\) vs tiny_cnn \(10, 32\).*num_classes"):
        load_classifier("tiny_cnn", 10, str(tmp_path / "method.ckpt"), in_channels=1)


# --------------------------------------------------------------------------------------------- 4. bad configuration
def test_config_naming_an_unknown_method_class_exits_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def unknown(cfg: dict) -> None:
        cfg["model"]["class_path"] = "lightning_unlearn.methods.DoesNotExist"

    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(_config(tmp_path, unknown))])
    assert info.value.code != 0
    assert "lightning_unlearn.methods.DoesNotExist" in capsys.readouterr().err
    _assert_no_classifier_exported(tmp_path)


def _exported_methods() -> list[type[UnlearningMethod]]:
    found = []
    for name in methods.__all__:
        obj = getattr(methods, name)
        if inspect.isclass(obj) and issubclass(obj, UnlearningMethod) and name not in BASES:
            found.append(obj)
    return found


METHODS = _exported_methods()
REQUIRED = {"num_classes": 10}  # L2UL


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _sweep_cases() -> list[Any]:
    """Every numeric, ``Literal`` and preset argument of every exported method, each with bad values."""
    cases = []
    for cls in METHODS:
        hints = typing.get_type_hints(cls.__init__)
        for param in list(inspect.signature(cls.__init__).parameters.values())[2:]:
            members = _union_members(hints.get(param.name))
            literal = any(typing.get_origin(m) is typing.Literal for m in members)
            bad: list[Any] = []
            if float in members:
                bad += [-1.0, math.nan, math.inf]
            elif int in members:
                bad += [-1, 2.5]
            if literal or param.name == "preset":
                bad.append("no_such_value")
            for value in bad:
                cases.append(pytest.param(cls, param.name, value, id=f"{cls.__name__}.{param.name}={value!r}"))
    return cases


@pytest.mark.parametrize(("cls", "name", "value"), _sweep_cases())
def test_every_method_rejects_bad_values_naming_the_parameter(cls, name, value):
    kwargs = {k: v for k, v in REQUIRED.items() if k in inspect.signature(cls.__init__).parameters and k != name}
    with pytest.raises(ValueError, match=re.escape(name)):
        cls(tiny_model(), **kwargs, **{name: value})


#: Parameters whose 0 is a meaningful setting, although other methods' same-named knob must be > 0: SCRUB's
#: ``alpha`` weighs the distillation term of its min-steps (0: cross-entropy only) and L1Sparse's ``alpha`` is the
#: l1 strength (0: plain finetuning). For these, a negative value is the one that must be refused.
ZERO_ALLOWED = {("SCRUB", "alpha"), ("L1Sparse", "alpha")}


def _range_cases() -> list[Any]:
    """Values of the right type outside the documented range: zero learning rates, fractions outside (0, 1)."""
    rules: dict[str, list[float]] = {
        "sigma": [0.0],
        "quantile": [0.0, 1.0, 1.5],
        "toll": [0.0, 1.0],
        "retain_fraction": [0.0, 1.5],
        "momentum": [1.0],
        "label_smoothing": [1.0],
        "alpha": [0.0],
        "lambda_": [0.0],
        "temperature": [0.0],
        "pgd_eps": [0.0],
        "pgd_step": [0.0],
        "forget_weight": [0.0],
    }
    cases = []
    for cls in METHODS:
        hints = typing.get_type_hints(cls.__init__)
        for name in inspect.signature(cls.__init__).parameters:
            # every learning rate must be > 0 (PruningComplex's retain_overfit_lr may be 0: the reference preset)
            is_float = float in _union_members(hints.get(name))
            is_lr = is_float and (name == "lr" or name.endswith("_lr") or name.startswith("lr_"))
            values = [0.0] if is_lr and name != "retain_overfit_lr" else rules.get(name, [])
            if (cls.__name__, name) in ZERO_ALLOWED:
                values = [-1.0 if v == 0.0 else v for v in values]
            for value in values:
                cases.append(pytest.param(cls, name, value, id=f"{cls.__name__}.{name}={value!r}"))
    return cases


@pytest.mark.parametrize(("cls", "name", "value"), _range_cases())
def test_every_method_rejects_out_of_range_values_naming_the_parameter(cls, name, value):
    kwargs = {k: v for k, v in REQUIRED.items() if k in inspect.signature(cls.__init__).parameters}
    with pytest.raises(ValueError, match=re.escape(name)):
        cls(tiny_model(), **kwargs, **{name: value})


def test_the_sweeps_cover_every_exported_method_and_the_named_cases():
    swept = {p.values[0] for p in _sweep_cases()} | {p.values[0] for p in _range_cases()}
    assert swept == set(METHODS) and len(METHODS) >= 17
    ids = {p.id for p in _sweep_cases() + _range_cases()}
    for case in (
        "JiT.sigma=0.0",
        "JiT.lr=0.0",
        "Finetune.lr=-1.0",
        "Pruning.quantile=1.5",
        "ActivationReset.toll=0.0",
        "PruningComplex.retain_fraction=1.5",
        "LAF.vae_epochs=-1",
        "PoisonFull.epochs=-1",
        "Hybrid.preset='no_such_value'",
        "L2UL.variant='no_such_value'",
    ):
        assert case in ids


def test_method_specific_bad_values():
    with pytest.raises(ValueError, match="head_name='nope'.*no submodule 'nope'"):
        methods.LAF(tiny_model(), head_name="nope")
    with pytest.raises(ValueError, match=r"relabel_targets must lie in \[0, 10\)"):
        methods.L2UL(tiny_model(), num_classes=10, relabel_targets=[3, 10])
    with pytest.raises(ValueError, match="clip_range"):
        methods.L2UL(tiny_model(), num_classes=10, clip_range=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="full_importance_path"):
        SSD(tiny_model(), full_importance_path="")


def test_cli_reports_a_bad_hyperparameter_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got 0\.0"):
        main(["fit", "--config", str(_config(tmp_path)), "--model.init_args.lr", "0"])
    _assert_no_classifier_exported(tmp_path)


def test_ssd_refuses_a_malicious_or_truncated_importance_cache(tmp_path):
    marker = tmp_path / "pwned"
    cache = tmp_path / "importance.pt"
    torch.save({"x": _WritesMarker(marker)}, cache)
    method = SSD(tiny_model(), full_importance_path=str(cache))
    with pytest.raises(ValueError, match=rf"cannot read the cached full-set importance {re.escape(str(cache))}"):
        quiet_trainer(tmp_path).fit(method, datamodule=ToyDataModule(scenario=ClassRemoval([0])))
    assert not marker.exists()
    torch.save({n: torch.ones(3) for n, _ in tiny_model().named_parameters()}, cache)  # wrong shapes
    method = SSD(tiny_model(), full_importance_path=str(cache))
    with pytest.raises(ValueError, match="shaped like it"):
        quiet_trainer(tmp_path).fit(method, datamodule=ToyDataModule(scenario=ClassRemoval([0])))


# --------------------------------------------------------------------------------------------- 5. bad forget sets
@pytest.mark.parametrize(
    ("scenario", "match"),
    [
        (lambda: Indices([]), "Indices: the index list is empty"),
        (lambda: Indices([5, 5]), "Indices: duplicate indices: 5"),
        (lambda: Indices([10**6]), r"Indices: indices out of range \[0, 100\): 1000000"),
        (lambda: ClassRemoval(classes=[99]), r"ClassRemoval: unknown class id 99; allowed ids 0\.\.9"),
        (lambda: RandomRemoval(fraction=0), r"RandomRemoval: fraction must be a number in \(0, 1\), got 0"),
        (lambda: RandomRemoval(fraction=1.5), r"RandomRemoval: fraction must be a number in \(0, 1\), got 1\.5"),
        (lambda: KInstances(1000), r"KInstances: cannot forget 1000 samples out of 100.*\(k must be < N\)"),
        (lambda: KInstances(100), r"KInstances: cannot forget 100 samples.*retain set would be empty"),
        (lambda: ClassFraction({3: 0.0}), r"fraction of class 3 must be in \(0, 1\]"),
        (lambda: Continual([Indices([1, 2]), Indices([2, 3])]), r"request 1.*overlapping requests\): 2"),
    ],
)
def test_bad_forget_set_fails_at_datamodule_setup(tmp_path, scenario, match):
    with pytest.raises(ValueError, match=match):
        datamodule = ToyDataModule(scenario=scenario())
        datamodule.setup("fit")


def test_cli_reports_an_out_of_range_forget_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def out_of_range(cfg: dict) -> None:
        cfg["data"]["init_args"]["scenario"] = {
            "class_path": "lightning_unlearn.datamodules.Indices",
            "init_args": {"indices": [3, 10**6]},
        }

    with pytest.raises(ValueError, match=r"Indices: indices out of range \[0, \d+\): 1000000"):
        main(["fit", "--config", str(_config(tmp_path, out_of_range))])
    _assert_no_classifier_exported(tmp_path)


# --------------------------------------------------------------------------------------------- 6. corrupt datasets
def _mnist(tmp_path: Path) -> Path:
    write_mnist(tmp_path, cyclic_targets(40), cyclic_targets(15))
    return tmp_path / "MNIST" / "raw"


def _redownload_advice(message: str) -> None:
    assert "delete it and download the dataset again" in message and "download: true" in message


def test_mnist_truncated_images_file_is_named(tmp_path):
    images = _mnist(tmp_path) / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(DatasetCorruptError, match=rf"{re.escape(str(images))}' is truncated: 1000 bytes") as info:
        MNISTDataModule(root=str(tmp_path)).setup()
    assert "40 x 28 x 28 = 31376 bytes" in str(info.value)
    _redownload_advice(str(info.value))


def test_mnist_garbage_labels_file_is_named(tmp_path):
    labels = _mnist(tmp_path) / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DatasetCorruptError, match=r"t10k-labels-idx1-ubyte' is not an idx file of uint8") as info:
        MNISTDataModule(root=str(tmp_path)).setup()
    _redownload_advice(str(info.value))


def test_mnist_label_count_mismatch_is_named(tmp_path):
    raw = _mnist(tmp_path)
    write_mnist(tmp_path / "other", cyclic_targets(30), cyclic_targets(15))
    (raw / "train-labels-idx1-ubyte").write_bytes((tmp_path / "other/MNIST/raw/train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DatasetCorruptError, match=r"train-labels-idx1-ubyte' holds 30 labels for 40 images"):
        MNISTDataModule(root=str(tmp_path)).setup()


def test_mnist_corrupt_files_are_reported_even_when_download_is_on(tmp_path):
    """torchvision never replaces existing MNIST files, so ``download=True`` must say to delete them (no network)."""
    images = _mnist(tmp_path) / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes() + b"junk")
    with pytest.raises(DatasetCorruptError, match="has trailing bytes"):
        MNISTDataModule(root=str(tmp_path), download=True).prepare_data()


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b"\x00garbage\xff" * 10, r"data_batch_2' is not a readable CIFAR batch"),
        (lambda b: b[: len(b) // 2], r"data_batch_2' is not a readable CIFAR batch \((.*truncated|EOFError)"),
        (lambda b: pickle.dumps({"data": np.zeros((2, 10)), "labels": [0, 1]}), r"holds 'data' of float64 \(2, 10\)"),
        (lambda b: pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "holds 2 images but labels 1"),
    ],
    ids=["garbage", "truncated", "wrong-shape", "label-count"],
)
def test_cifar10_damaged_batch_is_named(tmp_path, damage, match):
    write_cifar10(tmp_path, cyclic_targets(20), cyclic_targets(10))
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(damage(batch.read_bytes()))
    with pytest.raises(DatasetCorruptError, match=match) as info:
        CIFAR10DataModule(root=str(tmp_path)).setup()
    assert str(batch) in str(info.value)
    _redownload_advice(str(info.value))


@pytest.mark.parametrize(
    ("cls", "writer", "name"),
    [(CIFAR10DataModule, write_cifar10, "data_batch_1"), (CIFAR100DataModule, write_cifar100, "train")],
)
def test_cifar_batch_that_runs_code_is_refused(tmp_path, cls, writer, name):
    writer(tmp_path, cyclic_targets(100, 100 if cls is CIFAR100DataModule else 10), cyclic_targets(100, 10))
    marker = tmp_path / "pwned"
    batch = next(tmp_path.glob(f"cifar-*/{name}"))
    payload = pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _WritesMarker(marker)})
    batch.write_bytes(payload)
    with pytest.raises(DatasetCorruptError, match=r"was refused: global builtins\.exec is not allowed") as info:
        cls(root=str(tmp_path)).setup()
    assert "could run arbitrary code" in str(info.value) and str(batch) in str(info.value)
    assert not marker.exists()
    pickle.loads(payload)  # control: an unrestricted unpickler (torchvision's) would have run it
    assert marker.exists()


def test_cifar_batches_in_the_original_python2_format_still_load(tmp_path):
    """The real files are protocol-2 pickles naming ``numpy.core.multiarray``: the restricted reader accepts them."""
    written = write_cifar10(tmp_path, cyclic_targets(20), cyclic_targets(10))
    for batch in (tmp_path / "cifar-10-batches-py").glob("*_batch*"):
        with open(batch, "rb") as fh:
            entry = pickle.load(fh)
        legacy = pickle.dumps(entry, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray\n_reconstruct" in legacy
        batch.write_bytes(legacy)
    datamodule = CIFAR10DataModule(root=str(tmp_path))
    datamodule.setup()
    raw = datamodule._raw
    assert raw is not None
    assert torch.equal(raw.train_images, torch.from_numpy(written["train_images"]))
    assert raw.train_targets.tolist() == cyclic_targets(20).tolist()


def test_svhn_garbage_file_is_named_with_the_redownload_advice(tmp_path):
    write_svhn(tmp_path, cyclic_targets(10), cyclic_targets(10))
    (tmp_path / "train_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetNotFoundError, match="train split") as info:
        SVHNDataModule(root=str(tmp_path)).setup()
    message = str(info.value)
    assert str(tmp_path / "train_32x32.mat") in message and "truncated or corrupt" in message
    assert "Delete them and download the dataset again" in message


# --------------------------------------------------------------------------------------------- 7. NaN during unlearning
class _Snapshots(Callback):
    """Copies of the classifier's parameters after every training batch (i.e. after every optimiser step)."""

    def __init__(self) -> None:
        self.after_step: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.after_step.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})


class _NaNLossFinetune(Finetune):
    """Finetune whose loss becomes NaN at optimiser step ``nan_step`` (1-based)."""

    nan_step = 3

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * math.nan if self.trainer.global_step + 1 == self.nan_step else loss


def _assert_state_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key
        assert torch.isfinite(actual[key].float()).all(), key


def _checkpointing_trainer(tmp_path: Path, snapshots: _Snapshots, **kwargs: Any) -> Any:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True, save_top_k=-1)
    return quiet_trainer(tmp_path, enable_checkpointing=True, callbacks=[snapshots, checkpoint], **kwargs)


def test_nan_loss_stops_before_the_step_with_last_good_weights_and_checkpoint(tmp_path):
    snapshots = _Snapshots()
    method = _NaNLossFinetune(tiny_model(), lr=0.05)
    data = ToyDataModule(scenario=ClassRemoval([0]), batch_size=16)  # 90 retain samples: 6 steps per epoch
    with pytest.raises(FloatingPointError) as info:
        _checkpointing_trainer(tmp_path, snapshots, max_epochs=2).fit(method, datamodule=data)
    message = str(info.value)
    assert "_NaNLossFinetune at epoch 0, optimiser step 3" in message
    assert "non-finite gradient (NaN/inf) of 'model.conv.weight'" in message
    assert "The step was not applied" in message and "original classifier file are untouched" in message
    assert len(snapshots.after_step) == 2  # steps 1 and 2 ran, step 3 did not
    _assert_state_equal(method.model.state_dict(), snapshots.after_step[-1])
    last = tmp_path / "ckpt" / "last.ckpt"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "epoch=0-step=1.ckpt",
        "epoch=0-step=2.ckpt",
        "last.ckpt",
    ]
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2
    reloaded = load_classifier("tiny_cnn", 10, str(last), in_channels=1)
    _assert_state_equal(reloaded.state_dict(), snapshots.after_step[-1])


class _NaNGradientAt(Callback):
    """Replaces the gradient of ``parameter`` by ``value`` (NaN) during optimiser step ``step`` (1-based)."""

    value = math.nan

    def __init__(self, parameter: str, step: int) -> None:
        self.parameter, self.step = parameter, step
        self.handle: Any = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step + 1 == self.step:
            param = pl_module.get_parameter(self.parameter)
            self.handle = param.register_hook(lambda grad: torch.full_like(grad, self.value))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def test_nan_gradient_under_manual_optimisation_names_stage_and_parameter(tmp_path):
    """Hybrid (two manual-optimisation stages): a NaN gradient in its second stage stops the run before the step."""
    snapshots = _Snapshots()
    method = Hybrid(tiny_model(), forget_epochs=1, retain_epochs=1)
    data = ToyDataModule(scenario=ClassRemoval([0]), batch_size=16)  # forget: 10 samples (1 step), retain: 6 steps
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=2,
        reload_dataloaders_every_n_epochs=1,
        enable_checkpointing=True,
        callbacks=[
            snapshots,
            _NaNGradientAt("model.fc2.bias", step=4),
            ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True),
        ],
    )
    with pytest.raises(FloatingPointError) as info:
        trainer.fit(method, datamodule=data)
    message = str(info.value)
    assert "Hybrid (stage 'recover') at epoch 1, optimiser step 4" in message
    assert "non-finite gradient (NaN/inf) of 'model.fc2.bias';" in message  # only that parameter
    assert "The step was not applied" in message
    assert len(snapshots.after_step) == 3
    _assert_state_equal(method.model.state_dict(), snapshots.after_step[-1])
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3
    reloaded = load_classifier("tiny_cnn", 10, str(tmp_path / "ckpt" / "last.ckpt"), in_channels=1)
    _assert_state_equal(reloaded.state_dict(), snapshots.after_step[-1])


class _HugeGradientAt(_NaNGradientAt):
    """A finite but huge gradient, so that the update itself overflows to inf."""

    value = 3e38


def test_update_overflowing_to_inf_stops_before_anything_is_saved(tmp_path):
    snapshots = _Snapshots()
    method = Finetune(tiny_model(), lr=10.0, momentum=0.0, weight_decay=0.0)
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        enable_checkpointing=True,
        callbacks=[
            snapshots,
            _HugeGradientAt("model.fc1.weight", step=2),
            ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True),
        ],
    )
    with pytest.raises(FloatingPointError, match=r"optimiser step 2: the optimiser step made 'model\.fc1\.weight' "):
        trainer.fit(method, datamodule=ToyDataModule(scenario=ClassRemoval([0]), batch_size=16))
    assert len(snapshots.after_step) == 1  # no callback saw the inf weights
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 1
    reloaded = load_classifier("tiny_cnn", 10, str(tmp_path / "ckpt" / "last.ckpt"), in_channels=1)
    _assert_state_equal(reloaded.state_dict(), snapshots.after_step[0])


class _NaNEditSSD(SSD):
    """SSD whose edit leaves a NaN in the head."""

    def apply_edit(self) -> None:
        super().apply_edit()
        self.model.fc2.weight[0, 0] = math.nan


def test_one_pass_edit_producing_nan_is_undone_and_raises(tmp_path):
    method = _NaNEditSSD(tiny_model())
    original = copy.deepcopy(method.model.state_dict())
    with pytest.raises(FloatingPointError) as info:
        quiet_trainer(tmp_path).fit(method, datamodule=ToyDataModule(scenario=ClassRemoval([0])))
    message = str(info.value)
    assert "_NaNEditSSD (stage 'statistics') at epoch 0, after 0 optimiser step(s)" in message
    assert "the end of stage 'statistics' (its edit) made 'model.fc2.weight' non-finite" in message
    assert "The edit was undone" in message
    _assert_state_equal(method.model.state_dict(), original)
    assert not bool(method.fitted) and int(method.completed_stages) == 0


def test_guard_can_be_turned_off(tmp_path):
    method = _NaNLossFinetune(tiny_model(), lr=0.05)
    method.check_finite = False
    quiet_trainer(tmp_path).fit(method, datamodule=ToyDataModule(scenario=ClassRemoval([0]), batch_size=16))
    assert not torch.isfinite(method.model.conv.weight).all()
