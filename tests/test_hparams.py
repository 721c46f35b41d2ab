"""TensorBoard hparams: the method's arguments beside the datamodule's and the scenario, no placeholder hp_metric."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from data_factories import ToyDataModule
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_unlearn.datamodules import ClassRemoval
from lightning_unlearn.main import main
from lightning_unlearn.methods import Finetune
from lightning_unlearn.models import load_classifier


def _tags(log_dir: Path) -> set[str]:
    tags: set[str] = set()
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags().get("scalars", []))
    return tags


def test_datamodule_hparams_name_the_data_and_the_scenario():
    data = ToyDataModule(scenario=ClassRemoval(classes=[3]), batch_size=16, seed=2)
    assert data.hparams["data/class"] == "ToyDataModule"
    assert data.hparams["data/scenario"] == "ClassRemoval(classes=(3,))"
    assert (data.hparams["data/batch_size"], data.hparams["data/seed"], data.hparams["data/mode"]) == (16, 2, "unlearn")


def test_logged_hparams_hold_method_and_data_and_no_hp_metric(tmp_path):
    torch.manual_seed(0)
    logger = TensorBoardLogger(str(tmp_path), name="run", default_hp_metric=False)
    trainer = Trainer(
        max_epochs=1, logger=logger, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    method = Finetune(load_classifier("tiny_cnn", 10, in_channels=1), lr=0.02)
    trainer.fit(method, datamodule=ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=16))
    hparams = yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text())
    assert hparams["lr"] == 0.02
    assert hparams["data/scenario"] == "ClassRemoval(classes=(0,))" and hparams["data/class"] == "ToyDataModule"
    assert "hp_metric" not in _tags(Path(logger.log_dir))


@pytest.mark.slow
def test_command_line_default_logger_has_no_placeholder_hp_metric(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {
        "model": {
            "class_path": "lightning_unlearn.methods.Finetune",
            "init_args": {
                "model": {
                    "class_path": "lightning_unlearn.models.load_classifier",
                    "init_args": {"arch": "tiny_cnn", "num_classes": 10},
                },
                "lr": 0.01,
            },
        },
        "data": {"class_path": "lightning_unlearn.datamodules.Digits8x8DataModule", "init_args": {"batch_size": 64}},
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "enable_progress_bar": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(tmp_path / "c.yaml")])
    log_dir = (tmp_path / cli.trainer.log_dir).resolve()
    assert log_dir.is_relative_to((tmp_path / "runs").resolve())
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["data/class"] == "Digits8x8DataModule" and "data/scenario" in hparams and hparams["lr"] == 0.01
    tags = _tags(log_dir)
    assert "acc/forget" in tags and "hp_metric" not in tags


def test_every_shipped_tensorboard_logger_turns_the_placeholder_off():
    from lightning_unlearn.presets import CONFIG_ROOT

    loggers = 0
    for path in sorted(CONFIG_ROOT.rglob("*.yaml")):
        logger = (yaml.safe_load(path.read_text()).get("trainer") or {}).get("logger")
        if isinstance(logger, dict) and logger.get("class_path", "").endswith("TensorBoardLogger"):
            loggers += 1
            assert logger["init_args"].get("default_hp_metric") is False, path
    assert loggers > 100
