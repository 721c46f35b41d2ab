"""UnlearningReport: a plain Trainer gets the command line's end-of-fit report, metrics and classifier.pt."""

from __future__ import annotations

import json

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_unlearn.callbacks import ForgettingMetrics, UnlearningCost, UnlearningReport
from lightning_unlearn.datamodules import ClassRemoval
from lightning_unlearn.methods import Finetune
from lightning_unlearn.models import load_classifier
from tests.data_factories import ToyDataModule
from tests.trainers import quiet_trainer


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_classifier("tiny_cnn", 10, in_channels=1)


def test_plain_trainer_gets_metrics_cost_table_and_classifier(tmp_path, capsys):
    logger = TensorBoardLogger(str(tmp_path), name="run")
    report = UnlearningReport()
    trainer = quiet_trainer(tmp_path, logger=logger, max_epochs=2, callbacks=[report])
    method = Finetune(_model(), lr=0.05)
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    trainer.fit(method, datamodule=ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=16))

    # the report added the metric and cost callbacks, which logged before/after values
    assert sum(isinstance(c, ForgettingMetrics) for c in trainer.callbacks) == 1
    assert sum(isinstance(c, UnlearningCost) for c in trainer.callbacks) == 1
    assert {"acc/forget", "acc/retain", "cost/optimizer_steps"} <= set(trainer.callback_metrics)
    assert float(trainer.callback_metrics["cost/optimizer_steps"]) == trainer.global_step > 0

    # classifier.pt is the unlearned model (not the original), beside splits.json
    path = report.classifier_path
    assert path is not None and str(path.parent) == logger.log_dir and path.name == "classifier.pt"
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in method.model.state_dict().items())
    assert any(not torch.equal(saved[k], before[k]) for k in before)
    splits = json.loads((path.parent / "splits.json").read_text())
    assert splits["scenario"]["type"] == "class"

    out = capsys.readouterr().out
    assert "Forgetting metrics" in out and "acc/forget" in out and "classifier.pt" in out


def test_report_keeps_configured_callbacks_and_can_stay_silent(tmp_path, capsys):
    metrics = ForgettingMetrics(log_initial=False)
    report = UnlearningReport(out_dir=tmp_path / "out", print_table=False)
    trainer = quiet_trainer(tmp_path, callbacks=[metrics, report])
    trainer.fit(Finetune(_model()), datamodule=ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=16))
    assert [c for c in trainer.callbacks if isinstance(c, ForgettingMetrics)] == [metrics]
    assert (tmp_path / "out" / "classifier.pt").is_file()
    assert "Forgetting metrics" not in capsys.readouterr().out
