"""The command line on every shipped config, completeness of the configs, and the checkpoint round trip."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from data_factories import cyclic_targets, write_cifar10, write_cifar100, write_fashion_mnist, write_mnist, write_svhn

import lightning_unlearn.methods as methods
from lightning_unlearn.main import main
from lightning_unlearn.models import load_classifier
from lightning_unlearn.presets import CONFIG_ROOT, config_path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in CONFIG_ROOT.rglob("*.yaml") if p.relative_to(CONFIG_ROOT).parts[0] != "trainer")
BASES = {
    "UnlearningMethod",
    "GradientUnlearningMethod",
    "MultiStageUnlearningMethod",
    "OnePassUnlearningMethod",
}


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _write_tiny_dataset(cls, root: Path) -> None:
    n_train, n_test = 1200, 60
    name = cls.__name__
    if name in ("MNISTDataModule", "FashionMNISTDataModule"):
        writer = write_mnist if name == "MNISTDataModule" else write_fashion_mnist
        writer(root, cyclic_targets(n_train), cyclic_targets(n_test))
    elif name == "CIFAR10DataModule":
        write_cifar10(root, cyclic_targets(n_train), cyclic_targets(n_test))
    elif name in ("CIFAR100DataModule", "CIFAR20DataModule"):
        write_cifar100(root, cyclic_targets(500, 100), cyclic_targets(200, 100))
    elif name == "SVHNDataModule":
        write_svhn(root, cyclic_targets(n_train), cyclic_targets(n_test))


def tiny_config(config: Path, tmp_path: Path) -> Path:
    """The shipped config with a tiny classifier, tiny on-disk data, few batches and logs in ``tmp_path``."""
    cfg = yaml.safe_load(config.read_text())
    data = cfg["data"]
    data_cls = _import(data["class_path"])
    init = data.setdefault("init_args", {}) or {}
    data["init_args"] = init
    if "root" in inspect.signature(data_cls.__init__).parameters or "root" in init:
        root = tmp_path / "data"
        _write_tiny_dataset(data_cls, root)
        init["root"] = str(root)
        init["download"] = False
    if "num_workers" in init:
        init["num_workers"] = 0
    probe = data_cls(**({"root": init["root"]} if "root" in init else {}))
    cfg["model"]["init_args"]["model"] = {
        "class_path": "lightning_unlearn.models.load_classifier",
        "init_args": {"arch": "tiny_cnn", "num_classes": probe.num_classes, "in_channels": probe.input_shape[0]},
    }
    method_args = cfg["model"]["init_args"]
    for name, tiny in (("pgd_iters", 2), ("num_adv_per_instance", 2)):
        if name in method_args:  # keep adversarial pre-passes tiny
            method_args[name] = tiny
    trainer = cfg.setdefault("trainer", {}) or {}
    cfg["trainer"] = trainer
    if "vae_epochs" in method_args or "unlearn_epochs" in method_args:  # LAF: one epoch per stage
        method_args.update(vae_epochs=1, unlearn_epochs=1, repair_epochs=1)
    if init.get("image_size"):  # keep upscaling configs (LAF at 224 x 224) at their native size
        init["image_size"] = None
    if "max_epochs" in trainer:
        # Methods whose budget is the trainer's, and pretraining: two epochs exercise the loop.
        trainer["max_epochs"] = min(int(trainer["max_epochs"]), 2)
    if "epochs" in method_args:
        # Methods that declare their budget from ``epochs``: the trainer's max_epochs follows (not set here).
        method_args["epochs"] = min(int(method_args["epochs"]), 2)
    trainer.update(
        {
            "accelerator": "cpu",
            "devices": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 2,
            "default_root_dir": str(tmp_path),
            "enable_model_summary": False,
        }
    )
    trainer["logger"] = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(tmp_path / "runs"), "name": "test"},
    }
    out = tmp_path / config.name
    out.write_text(yaml.safe_dump(cfg))
    return out


def _config_params() -> list[Any]:
    """Every shipped config; the fast suite runs one per method class (the first by name, CIFAR/SVHN-scale LAF
    configs excepted), the others are marked ``slow`` (``.ci/run`` runs them as its second step)."""
    seen: set[str] = set()
    params = []
    for path in CONFIGS:
        method = (yaml.safe_load(path.read_text()).get("model") or {}).get("class_path", "")
        representative = method not in seen and path.relative_to(CONFIG_ROOT).parts[0] != "laf"
        seen |= {method} if representative else set()
        marks = () if representative else (pytest.mark.slow,)
        params.append(pytest.param(path, marks=marks, id=path.relative_to(CONFIG_ROOT).as_posix()))
    return params


@pytest.mark.parametrize("config", _config_params())
def test_every_shipped_config_runs_through_the_cli(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    cli = main(["fit", "--config", str(tiny_config(config, tmp_path))])
    log_dir = Path(cli.trainer.log_dir)
    assert (log_dir / "config.yaml").exists()
    assert (log_dir / "classifier.pt").exists()
    assert list(log_dir.glob("events.out.tfevents.*"))
    assert cli.trainer.current_epoch == cli.trainer.max_epochs
    if cli.datamodule.mode == "unlearn":
        assert (log_dir / "splits.json").exists()


def test_every_unlearning_method_has_a_config():
    exported = {
        name
        for name in methods.__all__
        if inspect.isclass(getattr(methods, name))
        and issubclass(getattr(methods, name), methods.UnlearningMethod)
        and name not in BASES
    }
    used = set()
    for config in CONFIGS:
        used.update(re.findall(r"class_path:\s*lightning_unlearn\.methods\.(\w+)", config.read_text()))
    missing = exported - used
    assert not missing, f"methods without a config in configs/: {sorted(missing)}"


def test_fitted_method_reloads_through_load_classifier(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(CONFIG_ROOT / "quickstart.yaml", tmp_path)
    cli = main(["fit", "--config", str(config), "--trainer.max_epochs", "2"])
    log_dir = Path(cli.trainer.log_dir)
    x = torch.rand(8, 1, 28, 28)
    original = cli.model.model.eval()
    with torch.no_grad():
        expected = original(x)
    for path in (log_dir / "classifier.pt", log_dir / "checkpoints" / "last.ckpt"):
        reloaded = load_classifier("tiny_cnn", 10, str(path), in_channels=1).eval()
        with torch.no_grad():
            assert torch.equal(reloaded(x), expected), path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected_tags = {"acc/forget", "acc/retain", "acc/test", "acc/test_forget", "acc/test_retain"}
    assert expected_tags | {"mia/entropy_forget_member_rate"} <= tags
    # Logged before unlearning (step 0) and after each epoch.
    assert len(events.Scalars("acc/forget")) == 3


@pytest.mark.slow
def test_resume_from_last_checkpoint_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(CONFIG_ROOT / "quickstart.yaml", tmp_path)
    first = main(["fit", "--config", str(config), "--trainer.max_epochs", "1"])
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    resumed = main(["fit", "--config", str(config), "--trainer.max_epochs", "2", "--ckpt_path", str(last)])
    assert resumed.trainer.current_epoch == 2
    assert resumed.trainer.global_step == 4

    tested = main(["test", "--config", str(config), "--ckpt_path", str(last)])
    metrics = tested.trainer.callback_metrics
    assert {"acc/forget", "acc/retain", "acc/test"} <= set(metrics)


def test_config_fragments_compose(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(CONFIG_ROOT / "quickstart.yaml", tmp_path)
    fragment = tmp_path / "fragment.yaml"
    fragment.write_text("model:\n  init_args:\n    lr: 0.005\ntrainer:\n  max_epochs: 1\n")
    trainer_fragment = str(CONFIG_ROOT / "trainer/cpu.yaml")
    cli = main(["--config", str(config), "--config", str(fragment), "--config", trainer_fragment], run=False)
    assert cli.model.hparams["lr"] == 0.005
    assert cli.trainer.max_epochs == 1
    assert type(cli.model).__name__ == "RandomLabel"
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert names.count("ForgettingMetrics") == 1 and "StageProgressBar" in names


def test_default_callbacks_when_none_configured(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(CONFIG_ROOT / "quickstart.yaml", tmp_path)
    cfg = yaml.safe_load(config.read_text())
    del cfg["trainer"]["callbacks"]
    config.write_text(yaml.safe_dump(cfg))
    cli = main(["--config", str(config)], run=False)
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert "ForgettingMetrics" in names and "StageProgressBar" in names
    assert any(type(c).__name__ == "ModelCheckpoint" and c.save_last for c in cli.trainer.callbacks)


def test_unknown_method_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(CONFIG_ROOT / "quickstart.yaml", tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--model", "lightning_unlearn.methods.NoSuchMethod"])
    assert "NoSuchMethod" in capsys.readouterr().err


def test_bad_hyperparameter_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(CONFIG_ROOT / "quickstart.yaml", tmp_path)
    with pytest.raises((ValueError, SystemExit)):
        main(["--config", str(config), "--model.init_args.lr", "-1"], run=False)


def test_readme_commands_match_the_project():
    readme = (ROOT / "README.md").read_text()
    assert "pip install .\n" in readme
    fit = re.search(r"^lightning-unlearn fit --config (\S+)$", readme, re.MULTILINE)
    assert fit is not None and config_path(fit.group(1)).is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = re.search(r"^(python -m pytest.*)$", readme, re.MULTILINE)
    assert test_command is not None and test_command.group(1) in ci


@pytest.mark.slow
def test_module_entry_point_runs(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "lightning_unlearn", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "fit" in result.stdout


def test_console_scripts_exit_zero_after_a_successful_run(tmp_path, monkeypatch):
    """The installed scripts call these with ``sys.exit(f())``: anything but None would exit 1 after success."""
    from lightning_unlearn import benchmark, privacy_audit
    from lightning_unlearn import main as main_module

    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    scripts = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', section, flags=re.M))
    assert scripts == {
        "lightning-unlearn": "lightning_unlearn.main:run",
        "lightning-unlearn-audit": "lightning_unlearn.privacy_audit:main",
        "lightning-unlearn-benchmark": "lightning_unlearn.benchmark:main",
        "lightning-unlearn-tune": "lightning_unlearn.tune:main",
    }
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    config = tiny_config(CONFIG_ROOT / "quickstart.yaml", tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-unlearn", "fit", "--config", str(config)])
    assert main_module.run() is None
    assert inspect.signature(privacy_audit.main).return_annotation in (None, "None")
    assert inspect.signature(benchmark.main).return_annotation in (None, "None")


_ = np  # numpy is used by the data factories


@pytest.mark.slow
def test_retrain_oracle_checkpoint_feeds_the_gap_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    oracle = main(["fit", "--config", str(tiny_config(CONFIG_ROOT / "retrain/mnist5k_class0.yaml", tmp_path))])
    reference = Path(oracle.trainer.log_dir) / "classifier.pt"
    config = tiny_config(CONFIG_ROOT / "quickstart.yaml", tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["callbacks"].append(
        {
            "class_path": "lightning_unlearn.callbacks.RetrainComparison",
            "init_args": {"arch": "tiny_cnn", "num_classes": 10, "reference_ckpt": str(reference), "in_channels": 1},
        }
    )
    config.write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(config), "--trainer.max_epochs", "1"])
    metrics = cli.trainer.callback_metrics
    assert {"gap/acc_forget", "gap/acc_retain", "gap/acc_test", "gap/avg", "dist/js"} <= set(metrics)
    expected = abs(float(metrics["acc/forget"]) - float(oracle.trainer.callback_metrics["acc/forget"]))
    assert float(metrics["gap/acc_forget"]) == pytest.approx(expected, abs=1e-6)
