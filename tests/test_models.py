"""Tests of lightning_unlearn.models: architectures, the extractor / head cut and load_classifier."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_unlearn.models import (
    ARCHITECTURES,
    CifarResNet18,
    ClassifierBase,
    FeatureHeadClassifier,
    Normalize,
    build_classifier,
    export_classifier,
    extractor_parameters,
    final_linear,
    head_parameters,
    load_classifier,
    normalization_stats,
    representation,
    representation_and_logits,
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def resnet18() -> CifarResNet18:
    torch.manual_seed(0)
    model = CifarResNet18(num_classes=10)
    # non-trivial BN statistics so a round trip checks buffers too
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    return model.eval()


# --------------------------------------------------------------------------------------------- architectures

CHEAP = [
    ("laf_cnn", {}, 449_098),
    ("laf_cnn", {"input_size": 8}, 32 * 2 * 2 * 256 + 256 + 416 + 12_832 + 32_896 + 1_290),
    ("cifar_resnet18", {}, 11_173_962),
    ("resnet18_maxpool", {}, 11_173_962),
    ("tiny_cnn", {}, 4_538),
    ("tiny_cnn", {"batch_norm": True}, 4_554),
]


@pytest.mark.parametrize(("arch", "kwargs", "expected"), CHEAP)
def test_parameter_counts(arch: str, kwargs: dict, expected: int) -> None:
    assert n_params(build_classifier(arch, 10, **kwargs)) == expected


def test_parameter_counts_other_num_classes() -> None:
    assert n_params(build_classifier("cifar_resnet18", 20)) == 11_179_092
    assert n_params(build_classifier("cifar_resnet18", 100)) == 11_220_132


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("laf_resnet18", 11_310_410),
        ("cifar_resnet50", 23_520_842),
        ("jit_vgg11", 132_873_346),
        ("vgg16_bn", 15_311_818),
    ],
)
def test_parameter_counts_big(arch: str, expected: int) -> None:
    torch.manual_seed(0)
    model = build_classifier(arch, 10).eval()
    assert n_params(model) == expected
    x = torch.rand(2, 3, 32, 32)  # one tiny batch: cheap even for the VGG-11
    with torch.no_grad():
        z = model.forward_features(x)
        assert z.shape == (2, model.embedding_dim)
        assert torch.equal(model(x), model.forward_head(z))
        assert torch.equal(representation(model, x), z)
    assert final_linear(model).out_features == 10
    del model


ARCH_INPUTS = {
    "laf_cnn": (1, 28, 28),
    "cifar_resnet18": (3, 32, 32),
    "resnet18_maxpool": (3, 32, 32),
    "tiny_cnn": (1, 8, 8),
}


def test_registry_ids() -> None:
    assert set(ARCHITECTURES) == {
        "laf_cnn",
        "laf_resnet18",
        "cifar_resnet18",
        "resnet18_maxpool",
        "cifar_resnet50",
        "jit_vgg11",
        "vgg16_bn",
        "tiny_cnn",
    }


@pytest.mark.parametrize("arch", sorted(ARCH_INPUTS))
def test_forward_is_head_of_features(arch: str) -> None:
    torch.manual_seed(0)
    c, h, w = ARCH_INPUTS[arch]
    model = build_classifier(arch, 7, in_channels=c, mean=(0.5,) * c, std=(0.25,) * c).eval()
    x = torch.rand(3, c, h, w)
    with torch.no_grad():
        logits = model(x)
        z = model.forward_features(x)
        assert z.shape == (3, model.embedding_dim)
        assert torch.equal(logits, model.forward_head(z))
        rep, logits2 = representation_and_logits(model, x)
        assert torch.equal(rep, z)
        assert torch.equal(logits2, logits)
        assert torch.equal(representation(model, x), z)
    assert logits.shape == (3, 7)
    assert model.num_classes == 7
    assert isinstance(model.get_submodule(model.head_name), nn.Module)


def test_laf_cnn_structure() -> None:
    model = build_classifier("laf_cnn", 10)
    keys = list(model.state_dict())
    assert keys[:2] == ["normalize.mean", "normalize.std"]
    assert {k.rsplit(".", 1)[0] for k in keys} == {"normalize", "conv1.0", "conv2.0", "fc1", "fc2.0", "fc2.1"}
    assert model.head_name == "fc2" and model.embedding_dim == 256
    assert final_linear(model) is model.fc2[1]
    small = build_classifier("laf_cnn", 10, input_size=8)
    assert small.fc1.in_features == 128
    assert small(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert build_classifier("laf_cnn", 10, input_size=(28, 12)).fc1.in_features == 32 * 7 * 3


def test_cifar_resnet18_structure(resnet18: CifarResNet18) -> None:
    keys = list(resnet18.state_dict())
    assert keys[-2:] == ["linear.weight", "linear.bias"]  # Precision finds the last layer by key position
    assert final_linear(resnet18) is resnet18.linear
    convs = [n for n, m in resnet18.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    assert len([n for n in convs if "conv" in n.rsplit(".", 1)[-1]]) == 17
    assert sorted(n for n in convs if n.endswith("shortcut.0")) == [
        "layer2.0.shortcut.0",
        "layer3.0.shortcut.0",
        "layer4.0.shortcut.0",
    ]


def test_resnet18_maxpool_names() -> None:
    keys = set(build_classifier("resnet18_maxpool", 10).state_dict())
    assert "layer2.0.downsample.0.weight" in keys and "fc.weight" in keys and "maxpool" not in keys


def test_tiny_cnn_batch_norm() -> None:
    model = build_classifier("tiny_cnn", 3, batch_norm=True)
    assert isinstance(model.bn, nn.BatchNorm2d)
    assert model(torch.rand(4, 1, 5, 7)).shape == (4, 3)
    with pytest.raises(ValueError, match="tiny_cnn"):
        build_classifier("laf_cnn", 3, batch_norm=True)


# --------------------------------------------------------------------------------------------- normalize


def test_normalize_buffers() -> None:
    layer = Normalize(3)
    assert torch.equal(layer.mean, torch.zeros(3)) and torch.equal(layer.std, torch.ones(3))
    assert layer.is_identity
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(layer(x), x)
    layer = Normalize(3, (0.1, 0.2, 0.3), (0.5, 0.5, 0.25))
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.5, 0.25]).view(1, 3, 1, 1)
    assert torch.allclose(layer(x), expected)
    assert set(layer.state_dict()) == {"mean", "std"}
    with pytest.raises(ValueError, match="in_channels=3"):
        Normalize(3, (0.1, 0.2))
    with pytest.raises(ValueError, match="positive"):
        Normalize(1, None, (0.0,))
    model = build_classifier("cifar_resnet18", 10, mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616))
    stats = normalization_stats(model)
    assert stats is not None and torch.allclose(stats[0], torch.tensor([0.4914, 0.4822, 0.4465]))
    assert normalization_stats(nn.Linear(2, 2)) is None


def test_in_channels_from_mean() -> None:
    model = build_classifier("tiny_cnn", 4, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    assert model.conv.in_channels == 3


# --------------------------------------------------------------------------------------------- cut helpers


def test_head_and_extractor_parameters() -> None:
    model = build_classifier("laf_cnn", 10)
    head = head_parameters(model)
    extractor = extractor_parameters(model)
    assert [id(p) for p in head] == [id(p) for p in model.fc2.parameters()]
    assert len(head) + len(extractor) == len(list(model.parameters()))
    assert not {id(p) for p in head} & {id(p) for p in extractor}
    assert [id(p) for p in head_parameters(model, "fc1")] == [id(p) for p in model.fc1.parameters()]


def test_user_model_head_detected_or_named() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert [id(p) for p in head_parameters(net)] == [id(p) for p in net[3].parameters()]  # detected: last Linear
    convs = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten())
    with pytest.raises(ValueError, match="head_name"):
        head_parameters(convs)
    with pytest.raises(ValueError, match="head_name"):
        representation(convs, torch.rand(1, 1, 2, 2))
    assert final_linear(net, "3") is net[3]
    assert torch.equal(representation(net, torch.ones(1, 4), head_name="3"), net[:3](torch.ones(1, 4)))
    with pytest.raises(ValueError, match="no submodule 'head'"):
        final_linear(net, "head")
    with pytest.raises(ValueError, match="no nn.Linear"):
        final_linear(net, "2")


def test_head_called_twice_is_rejected() -> None:
    class Twice(nn.Module):
        head_name = "fc"

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(x))

    with pytest.raises(ValueError, match="2 times"):
        representation(Twice(), torch.rand(1, 2))


def test_feature_head_classifier() -> None:
    extractor = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU())
    head = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    model = FeatureHeadClassifier(extractor, head, normalize=Normalize(3, (0.5,) * 3, (0.5,) * 3))
    assert model.num_classes == 3 and model.embedding_dim == 5 and model.head_name == "head"
    x = torch.rand(2, 3, 2, 2)
    assert torch.equal(model(x), model.forward_head(model.forward_features(x)))
    assert torch.equal(representation(model, x), model.forward_features(x))
    assert final_linear(model) is head[2]
    assert len(head_parameters(model)) == 4 and len(extractor_parameters(model)) == 2
    plain = FeatureHeadClassifier(nn.Flatten(), nn.Linear(12, 2))
    assert torch.equal(plain.forward_features(x), x.flatten(1))
    with pytest.raises(ValueError, match="num_classes"):
        FeatureHeadClassifier(nn.Flatten(), nn.Identity())


# --------------------------------------------------------------------------------------------- loading


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_fresh_model_without_checkpoint() -> None:
    model = load_classifier("tiny_cnn", 10)
    assert model.normalize.is_identity and model.num_classes == 10


def test_round_trip_raw_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_classifier("laf_cnn", 10, input_size=8, mean=(0.5,), std=(0.3,))
    path = export_classifier(src, tmp_path / "sub" / "model.pt")
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert isinstance(torch.load(path, weights_only=True), dict)
    loaded = load_classifier("laf_cnn", 10, str(path), input_size=8)
    _assert_same(src, loaded)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(src(x), loaded(x))
    # normalisation from the file when the caller gives none; identical values are accepted
    assert torch.allclose(loaded.normalize.mean, torch.tensor([0.5]))
    load_classifier("laf_cnn", 10, path, input_size=8, mean=(0.5,), std=(0.3,))


def test_lightning_checkpoint_with_teacher(tmp_path: Path, resnet18: CifarResNet18) -> None:
    teacher = build_classifier("tiny_cnn", 10)
    state = {f"model.{k}": v for k, v in resnet18.state_dict().items()}
    state.update({f"teacher.{k}": v for k, v in teacher.state_dict().items()})
    ckpt = {"state_dict": state, "epoch": 3, "global_step": 12, "hyper_parameters": {"lr": 0.1}}
    torch.save(ckpt, tmp_path / "run.ckpt")
    _assert_same(resnet18, load_classifier("cifar_resnet18", 10, str(tmp_path / "run.ckpt")))


def test_prefixes_module_and_model(tmp_path: Path, resnet18: CifarResNet18) -> None:
    # DDP of a LightningModule holding the net as ``model`` (Precision saves such raw ``model.*`` dicts)
    torch.save({f"module.model.{k}": v for k, v in resnet18.state_dict().items()}, tmp_path / "ddp.pt")
    _assert_same(resnet18, load_classifier("cifar_resnet18", 10, str(tmp_path / "ddp.pt")))
    torch.save({f"_orig_mod.{k}": v for k, v in resnet18.state_dict().items()}, tmp_path / "compiled.pt")
    _assert_same(resnet18, load_classifier("cifar_resnet18", 10, str(tmp_path / "compiled.pt")))


class _FakeJiT(ClassifierBase):
    """Tiny stand-in with the JiT VGG key layout: ``model.*`` beside ``fc.*``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, mean=None, std=None) -> None:
        super().__init__(num_classes, in_channels, 3, "fc", mean, std)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(4 * in_channels, 3))
        self.fc = nn.Linear(3, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def test_jit_style_keys_load_as_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ARCHITECTURES, "fake_jit", _FakeJiT)
    src = build_classifier("fake_jit", 4)
    raw = {k: v for k, v in src.state_dict().items() if not k.startswith("normalize.")}  # as JiT saves it
    torch.save(raw, tmp_path / "jit.pth")
    _assert_same(src, load_classifier("fake_jit", 4, str(tmp_path / "jit.pth")))
    # the library's Lightning checkpoint of the same network, beside a frozen copy
    state = {f"model.{k}": v for k, v in src.state_dict().items()}
    state.update({f"original.{k}": v for k, v in src.state_dict().items()})
    torch.save({"state_dict": state}, tmp_path / "jit.ckpt")
    _assert_same(src, load_classifier("fake_jit", 4, str(tmp_path / "jit.ckpt")))
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "solo.ckpt")
    _assert_same(src, load_classifier("fake_jit", 4, str(tmp_path / "solo.ckpt")))


def _to_weiaicunzai(key: str) -> str:
    parts = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4"}
    if key.startswith("conv1."):
        return "conv1.0." + key[len("conv1.") :]
    if key.startswith("bn1."):
        return "conv1.1." + key[len("bn1.") :]
    if key.startswith("linear."):
        return "fc." + key[len("linear.") :]
    m = re.match(r"layer(\d)\.(\d)\.(conv1|bn1|conv2|bn2)\.(.+)", key)
    if m:
        return f"conv{int(m[1]) + 1}_x.{m[2]}.residual_function.{parts[m[3]]}.{m[4]}"
    m = re.match(r"layer(\d)\.(\d)\.shortcut\.(\d)\.(.+)", key)
    if m:
        return f"conv{int(m[1]) + 1}_x.{m[2]}.shortcut.{m[3]}.{m[4]}"
    return key


def test_weiaicunzai_remap(tmp_path: Path, resnet18: CifarResNet18) -> None:
    state = {_to_weiaicunzai(k): v for k, v in resnet18.state_dict().items() if not k.startswith("normalize.")}
    assert "conv2_x.0.residual_function.0.weight" in state and "conv3_x.0.shortcut.1.running_var" in state
    torch.save(state, tmp_path / "ssd.pth")
    loaded = load_classifier("cifar_resnet18", 10, str(tmp_path / "ssd.pth")).eval()
    _assert_same(resnet18, loaded)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(resnet18(x), loaded(x))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_classifier("tiny_cnn", 10, str(path))


def test_truncated_file(tmp_path: Path) -> None:
    path = export_classifier(build_classifier("tiny_cnn", 10), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_classifier("tiny_cnn", 10, str(path))
    legacy = tmp_path / "legacy.pt"
    torch.save(build_classifier("tiny_cnn", 10).state_dict(), legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_classifier("tiny_cnn", 10, str(legacy))


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"state_dict": {"fc2.weight": torch.zeros(1)}, "x": _Evil(str(marker))}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match="refused to load"):
        load_classifier("tiny_cnn", 10, str(path))
    assert not marker.exists()


def test_malicious_pickle_message(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save(_Evil(str(marker)), tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused to load"):
        load_classifier("tiny_cnn", 10, str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match=r"unknown arch 'resnet1000'.*cifar_resnet18.*tiny_cnn"):
        load_classifier("resnet1000", 10)


def test_wrong_num_classes(tmp_path: Path) -> None:
    path = export_classifier(build_classifier("tiny_cnn", 10), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"fc2\.weight: checkpoint \(10, 32\) vs tiny_cnn \(5, 32\)"):
        load_classifier("tiny_cnn", 5, str(path))


def test_normalize_mismatch(tmp_path: Path) -> None:
    path = export_classifier(build_classifier("tiny_cnn", 10, mean=(0.1307,), std=(0.3081,)), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"normalize\.mean.*0\.1307.*mean=\(0\.5,\)"):
        load_classifier("tiny_cnn", 10, str(path), mean=(0.5,))
    # a file without normalize.* keeps the constructor's values
    bare = {k: v for k, v in build_classifier("tiny_cnn", 10).state_dict().items() if not k.startswith("normalize")}
    torch.save(bare, tmp_path / "bare.pt")
    model = load_classifier("tiny_cnn", 10, str(tmp_path / "bare.pt"), mean=(0.5,), std=(0.2,))
    assert torch.allclose(model.normalize.mean, torch.tensor([0.5]))


def test_strict_and_non_strict(tmp_path: Path) -> None:
    src = build_classifier("tiny_cnn", 10)
    state = dict(src.state_dict())
    del state["fc1.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"missing keys \[fc1\.bias\]; unexpected keys \[extra\.weight\]"):
        load_classifier("tiny_cnn", 10, str(tmp_path / "partial.pt"))
    with pytest.warns(UserWarning, match="fc1.bias"):
        model = load_classifier("tiny_cnn", 10, str(tmp_path / "partial.pt"), strict=False)
    assert torch.equal(model.fc1.weight, src.fc1.weight)


def test_other_architecture_lists_keys(tmp_path: Path) -> None:
    path = export_classifier(build_classifier("tiny_cnn", 10), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"does not match laf_cnn.*missing keys \[conv1\.0\.bias.*unexpected keys"):
        load_classifier("laf_cnn", 10, str(path))


def test_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        load_classifier("tiny_cnn", 10, str(tmp_path / "odd.pt"))


# --------------------------------------------------------------------------------------------- configs


def test_class_path_in_jsonargparse() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=nn.Module)
    cfg = parser.parse_object(
        {
            "model": {
                "class_path": "lightning_unlearn.models.load_classifier",
                "init_args": {"arch": "laf_cnn", "num_classes": 10, "input_size": 8, "mean": [0.5], "std": [0.2]},
            }
        }
    )
    model = parser.instantiate(cfg).model
    assert type(model).__name__ == "LAFCNN" and model.fc1.in_features == 128
    assert torch.allclose(model.normalize.std, torch.tensor([0.2]))


def test_class_path_in_lightning_cli(tmp_path: Path) -> None:
    from lightning.pytorch import LightningModule
    from lightning.pytorch.cli import LightningCLI

    class Wrapper(LightningModule):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

    path = export_classifier(build_classifier("tiny_cnn", 3, batch_norm=True), tmp_path / "tiny.pt")
    config = tmp_path / "config.yaml"
    config.write_text(
        "model:\n"
        "  model:\n"
        "    class_path: lightning_unlearn.models.load_classifier\n"
        f"    init_args: {{arch: tiny_cnn, num_classes: 3, batch_norm: true, ckpt_path: '{path}'}}\n"
        "trainer:\n"
        "  logger: false\n"
        "  enable_checkpointing: false\n"
        "  enable_progress_bar: false\n"
        "  enable_model_summary: false\n"
        f"  default_root_dir: '{tmp_path}'\n"
    )
    cli = LightningCLI(Wrapper, run=False, args=["--config", str(config)], save_config_callback=None)
    assert type(cli.model.model).__name__ == "TinyCNN"
    _assert_same(cli.model.model, load_classifier("tiny_cnn", 3, str(path), batch_norm=True))


def test_real_lightning_checkpoint(tmp_path: Path) -> None:
    import copy

    from lightning.pytorch import LightningModule, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    class Method(LightningModule):
        def __init__(self, model: nn.Module, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters(ignore=["model"])
            self.model = model
            self.teacher = copy.deepcopy(model).requires_grad_(False)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.model.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    method = Method(load_classifier("tiny_cnn", 3, batch_norm=True, mean=(0.5,), std=(0.2,)))
    data = DataLoader(TensorDataset(torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))), batch_size=4)
    trainer = Trainer(
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(method, data)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    loaded = load_classifier("tiny_cnn", 3, str(tmp_path / "last.ckpt"), batch_norm=True)
    _assert_same(method.model, loaded)
    assert not torch.equal(method.model.fc2.weight, method.teacher.fc2.weight)
