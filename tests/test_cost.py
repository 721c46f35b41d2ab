"""UnlearningCost: what the measured time covers, steps, the ratio to the oracle, cost.json and resume."""

from __future__ import annotations

import json
import time

import pytest
import torch
from data_factories import ToyDataModule
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger
from trainers import quiet_trainer

from lightning_unlearn.callbacks import UnlearningCost
from lightning_unlearn.callbacks.cost import COST_FILE, read_reference_time
from lightning_unlearn.datamodules import RandomRemoval
from lightning_unlearn.methods import ActivationReset, Finetune
from lightning_unlearn.models import load_classifier


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_classifier("tiny_cnn", 10, in_channels=1)


class SlowEvaluation(Callback):
    """Sleeps in every validation batch and before training: time the cost must not count."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sleeps = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.sleeps += 1
        time.sleep(self.seconds)

    def on_validation_batch_end(self, *args, **kwargs) -> None:
        self.sleeps += 1
        time.sleep(self.seconds)


class SlowTraining(Callback):
    """Sleeps in every training batch: time the cost must count."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.batches = 0

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.batches += 1
        time.sleep(self.seconds)


def test_time_counts_training_only_and_steps_match(tmp_path):
    data = ToyDataModule(scenario=RandomRemoval(count=20), batch_size=16)
    cost, slow_train, slow_eval = UnlearningCost(reference_time_s=2.0), SlowTraining(0.05), SlowEvaluation(0.3)
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=2,
        callbacks=[cost, slow_eval, slow_train],
        logger=CSVLogger(str(tmp_path), name="", version=""),
    )
    trainer.fit(Finetune(tiny_model()), datamodule=data)
    metrics = trainer.callback_metrics
    seconds = float(metrics["cost/unlearn_time_s"])
    assert seconds == pytest.approx(cost.elapsed_s)
    # training sleeps counted; evaluation sleeps (0.3 s each) not: less than half of them fits in the margin left
    # for the training work itself, which a loaded machine slows down
    assert slow_eval.sleeps >= 6
    assert 0.05 * slow_train.batches <= seconds < 0.05 * slow_train.batches + 0.5 * 0.3 * slow_eval.sleeps
    assert float(metrics["cost/optimizer_steps"]) == trainer.global_step == slow_train.batches == 2 * 5
    assert float(metrics["cost/time_ratio"]) == pytest.approx(seconds / 2.0)
    record = json.loads((tmp_path / COST_FILE).read_text())
    assert record["unlearn_time_s"] == pytest.approx(seconds)
    assert record["optimizer_steps"] == 10 and record["world_size"] == 1
    # the run can serve as the reference of another
    classifier = tmp_path / "classifier.pt"
    classifier.write_bytes(b"")
    assert read_reference_time(classifier) == pytest.approx(seconds)


def test_statistics_edit_is_timed_but_not_a_step(tmp_path):
    data = ToyDataModule(scenario=RandomRemoval(count=20), batch_size=8)
    trainer = quiet_trainer(
        tmp_path,
        callbacks=[UnlearningCost()],
        limit_val_batches=0,
        max_epochs=2,
        reload_dataloaders_every_n_epochs=1,
    )
    trainer.fit(ActivationReset(tiny_model(), retain_epochs=1, retain_fraction=0.5), datamodule=data)
    steps = float(trainer.callback_metrics["cost/optimizer_steps"])
    assert steps == trainer.global_step - 1 > 0  # the finetune stage's steps; the reset edit is not one
    assert float(trainer.callback_metrics["cost/unlearn_time_s"]) > 0
    assert "cost/time_ratio" not in trainer.callback_metrics


def test_reference_time_files_and_errors(tmp_path):
    ckpt = tmp_path / "oracle" / "model.pt"
    ckpt.parent.mkdir()
    with pytest.raises(FileNotFoundError, match="reference_time_s"):
        read_reference_time(ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps({"train_time_s": 12.5}))
    assert read_reference_time(ckpt) == 12.5
    (ckpt.parent / COST_FILE).write_text(json.dumps({"unlearn_time_s": 4.0}))
    assert read_reference_time(ckpt) == 4.0  # a run's own record comes first
    (ckpt.parent / COST_FILE).write_text(json.dumps({"unlearn_time_s": -1}))
    with pytest.raises(ValueError, match="positive"):
        read_reference_time(ckpt)
    for bad in (0.0, -3.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reference_time_s"):
            UnlearningCost(reference_time_s=bad)
    data = ToyDataModule(scenario=RandomRemoval(count=20), batch_size=8)
    trainer = quiet_trainer(tmp_path, callbacks=[UnlearningCost(reference_ckpt=str(tmp_path / "none.pt"))])
    with pytest.raises(FileNotFoundError):  # before any training
        trainer.fit(Finetune(tiny_model()), datamodule=data)
    assert trainer.global_step == 0


def test_resumed_time_adds_to_the_restored_time():
    cost = UnlearningCost()
    cost.elapsed_s = 3.5
    restored = UnlearningCost()
    restored.load_state_dict(cost.state_dict())
    assert restored.elapsed_s == 3.5
