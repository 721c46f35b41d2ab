"""Metric callbacks on tiny fakes: before-unlearning pass, validation/test logging, options, DDP equality."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from rich.console import Console
from sklearn.linear_model import LogisticRegression
from torch import nn
from trainers import run_on_1_and_2_processes

from lightning_unlearn.callbacks import (
    ForgettingMetrics,
    MembershipInference,
    SplitMetricsCallback,
    collect_metrics,
    metrics_table,
)
from lightning_unlearn.callbacks.base import _eval_mode

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent
MIA = "mia/entropy_forget_member_rate"


def _load_fakes():
    spec = importlib.util.spec_from_file_location("_metric_fakes", TESTS_DIR / "ddp_metric_script.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fakes = _load_fakes()


def _trainer(tmp_path, callbacks, max_epochs=1, **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        limit_train_batches=1,
        logger=CSVLogger(str(tmp_path), name="", version=""),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _np_entropy(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return -(p * np.log(p)).sum(axis=1)


def _direct_metrics(model, datamodule) -> dict[str, float]:
    """Independent computation: accuracy per split and the entropy attack with scikit-learn."""
    model.eval()
    with torch.no_grad():
        logits = {name: model(x).numpy() for name, (x, _) in datamodule.data.items()}
    model.train()
    values = {
        f"acc/{name}": float(np.mean(np.argmax(logits[name], axis=1) == y.numpy()))
        for name, (_, y) in datamodule.data.items()
    }
    x = np.concatenate([_np_entropy(logits["retain"]), _np_entropy(logits["test"])])[:, None]
    y = np.r_[np.ones(len(logits["retain"])), np.zeros(len(logits["test"]))]
    attacker = LogisticRegression(C=2.0, class_weight="balanced", solver="lbfgs").fit(x, y)
    values[MIA] = float(np.mean(attacker.predict(_np_entropy(logits["forget"])[:, None]) == 1))
    return values


class ModeProbe(Callback):
    def __init__(self):
        self.modes: list[tuple[bool, bool]] = []

    def on_train_start(self, trainer, pl_module):
        self.modes.append((pl_module.model.training, pl_module.frozen.training))


def test_fit_logs_initial_and_final_metrics(tmp_path):
    model, datamodule = fakes.FakeModule(), fakes.FakeDataModule()
    model.frozen = nn.Linear(1, 1).eval()  # a submodule kept in eval mode must stay so
    before = _direct_metrics(model, datamodule)
    forgetting, membership = ForgettingMetrics(), MembershipInference()
    probe_before, probe_after = ModeProbe(), ModeProbe()
    trainer = _trainer(tmp_path, [probe_before, forgetting, membership, probe_after])
    trainer.fit(model, datamodule=datamodule)
    after = _direct_metrics(model, datamodule)

    acc_names = [f"acc/{name}" for name in datamodule.eval_split_names]
    assert forgetting.initial_metrics == {name: before[name] for name in acc_names}
    assert membership.initial_metrics == {MIA: before[MIA]}
    assert forgetting.final_metrics == {name: after[name] for name in acc_names}
    assert membership.final_metrics == {MIA: after[MIA]}
    assert forgetting.initial_metrics != forgetting.final_metrics  # the training step changed the model
    assert probe_before.modes == probe_after.modes

    # logged before unlearning, at step 0, under the same names; then at the validation epoch end
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    step0 = {k: float(v) for row in rows if row["step"] == "0" and not row["epoch"] for k, v in row.items() if v}
    assert step0 == {**before, "step": 0.0}
    assert trainer.callback_metrics["acc/forget"].item() == pytest.approx(after["acc/forget"])
    assert trainer.callback_metrics[MIA].item() == pytest.approx(after[MIA])

    trainer.test(model, datamodule=datamodule, verbose=False)
    assert forgetting.test_metrics == forgetting.final_metrics
    assert membership.test_metrics == membership.final_metrics

    initial, final = collect_metrics(trainer.callbacks)
    assert initial == before and final == after


def test_metric_callbacks_share_one_pass_before_unlearning(tmp_path):
    model, datamodule = fakes.FakeModule(), fakes.FakeDataModule()
    one_pass = sum(len(loader) for loader in datamodule.val_dataloader().values())
    before = _direct_metrics(model, datamodule)
    restored = MembershipInference(attacks=["loss_lr_cv"])  # resumed: keeps its values, takes no part in the pass
    restored.load_state_dict({"initial_metrics": {"mia/loss_lr_cv_acc": 0.5}, "final_metrics": {}})
    callbacks = [ForgettingMetrics(), MembershipInference(), restored]
    calls = model.eval_calls
    _trainer(tmp_path, callbacks, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=datamodule)
    assert model.eval_calls - calls == one_pass  # two callbacks evaluated, the splits were run through once
    assert callbacks[0].initial_metrics == {k: v for k, v in before.items() if k.startswith("acc/")}
    assert callbacks[1].initial_metrics == {MIA: before[MIA]}
    assert restored.initial_metrics == {"mia/loss_lr_cv_acc": 0.5}
    assert all(not cb._pending for cb in callbacks)  # nothing left over for a later fit


def test_final_model_evaluated_when_training_ends_unvalidated(tmp_path):
    datamodule = fakes.FakeDataModule()
    one_pass = sum(len(loader) for loader in datamodule.val_dataloader().values())

    def fit(root, callbacks, **kwargs):
        model = fakes.FakeModule()
        calls = model.eval_calls
        trainer = _trainer(root, callbacks, max_epochs=3, num_sanity_val_steps=0, **kwargs)
        trainer.fit(model, datamodule=datamodule)
        return model, trainer, model.eval_calls - calls

    # validation after the 2nd epoch only: the final model is evaluated once more when training ends, in one pass
    forgetting, membership = ForgettingMetrics(log_initial=False), MembershipInference(log_initial=False)
    model, trainer, calls = fit(tmp_path, [forgetting, membership], check_val_every_n_epoch=2)
    assert calls == 2 * one_pass
    after = _direct_metrics(model, datamodule)
    assert forgetting.final_metrics == {k: v for k, v in after.items() if k.startswith("acc/")}
    assert membership.final_metrics == {MIA: after[MIA]}
    with open(tmp_path / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("acc/forget")]
    assert rows[-1]["step"] == str(trainer.global_step) and not rows[-1]["epoch"]  # logged at the last step
    assert float(rows[-1]["acc/forget"]) == pytest.approx(after["acc/forget"])

    # the last epoch validated: nothing more at the end; evaluate_at_end=False or validation disabled: none either
    assert fit(tmp_path / "every", [ForgettingMetrics(log_initial=False)])[2] == 3 * one_pass
    off = ForgettingMetrics(log_initial=False, evaluate_at_end=False)
    assert fit(tmp_path / "off", [off], check_val_every_n_epoch=2)[2] == one_pass
    assert fit(tmp_path / "none", [ForgettingMetrics(log_initial=False)], limit_val_batches=0)[2] == 0


def test_every_n_epochs_and_log_initial(tmp_path):
    class Recording(MembershipInference):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.epochs: list[tuple[int, bool]] = []

        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.epochs.append((trainer.current_epoch, self._active))
            super().on_validation_epoch_end(trainer, pl_module)

    membership = Recording(every_n_epochs=2, log_initial=False, retain_subsample=10, seed=1)
    trainer = _trainer(tmp_path, [membership], max_epochs=3)
    trainer.fit(fakes.FakeModule(), datamodule=fakes.FakeDataModule())
    assert membership.epochs == [(0, False), (1, True), (2, True)]  # every 2nd epoch and the last
    assert membership.initial_metrics == {}
    assert set(membership.final_metrics) == {MIA}
    assert membership.attacks["entropy"].retain_subsample == 10


def test_validate_and_resume_keep_initial(tmp_path):
    forgetting = ForgettingMetrics()
    forgetting.load_state_dict({"initial_metrics": {"acc/forget": 0.5}, "final_metrics": {}})
    model, datamodule = fakes.FakeModule(), fakes.FakeDataModule()
    calls = model.eval_calls
    trainer = _trainer(tmp_path, [forgetting], num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=datamodule)
    assert model.eval_calls == calls  # restored initial values: no pass before unlearning
    assert forgetting.initial_metrics == {"acc/forget": 0.5}
    assert forgetting.state_dict()["initial_metrics"] == {"acc/forget": 0.5}
    _trainer(tmp_path, [forgetting]).validate(model, datamodule=datamodule, verbose=False)
    assert forgetting.final_metrics == {
        k: v for k, v in _direct_metrics(model, datamodule).items() if k.startswith("acc/")
    }


def test_membership_inference_argument_errors():
    with pytest.raises(ValueError, match=r"unknown attacks \['nope'\]; allowed: \['entropy'"):
        MembershipInference(attacks=["nope"])
    with pytest.raises(ValueError, match="at least one"):
        MembershipInference(attacks=[])
    with pytest.raises(TypeError, match="list of attack names"):
        MembershipInference(attacks=[1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="every_n_epochs"):
        MembershipInference(every_n_epochs=0)
    with pytest.raises(ValueError, match="retain_subsample"):
        MembershipInference(retain_subsample=0)
    assert MembershipInference(attacks="entropy").attack_names == ["entropy"]  # type: ignore[arg-type]
    assert MembershipInference(attacks=["entropy", "entropy"]).attack_names == ["entropy"]


def test_missing_split_and_bad_outputs(tmp_path):
    no_test = fakes.FakeDataModule(sizes={"forget": 5, "retain": 7})
    with pytest.raises(ValueError, match=r"missing \['test'\]"):
        _trainer(tmp_path, [MembershipInference()]).fit(fakes.FakeModule(), datamodule=no_test)

    class TensorOutputs(fakes.FakeModule):
        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch[0])

    with pytest.raises(TypeError, match=r"return a dict with keys \['logits', 'target', 'index'\]"):
        _trainer(tmp_path, [ForgettingMetrics()]).fit(TensorOutputs(), datamodule=fakes.FakeDataModule())


def test_eval_mode_restores_each_submodule():
    module = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2))
    module[2].eval()
    with _eval_mode(module):
        assert not any(m.training for m in module.modules())
    assert [m.training for m in module.modules()] == [True, True, True, False]


def test_metrics_table_and_collect():
    initial = {"acc/forget": 0.5, "mia/entropy_forget_member_rate": 0.75, "cost/unlearn_time_s": 2.0}
    final = {"acc/forget": 0.25, "mia/entropy_forget_member_rate": float("nan"), "acc/test": 0.9}
    table = metrics_table(initial, final)
    assert [column.header for column in table.columns] == ["metric", "before (%)", "after (%)", "change"]
    console = Console(record=True, width=120)
    console.print(table)
    lines = {line.split()[1]: line.split()[2:] for line in console.export_text().splitlines() if "/" in line}
    assert [c for c in lines["acc/forget"] if c != "│"] == ["50.00", "25.00", "-25.00"]
    assert [c for c in lines["mia/entropy_forget_member_rate"] if c != "│"] == ["75.00", "-", "-"]
    assert [c for c in lines["cost/unlearn_time_s"] if c != "│"] == ["2.00", "-", "-"]
    assert [c for c in lines["acc/test"] if c != "│"] == ["-", "90.00", "-"]
    assert metrics_table({}, {}, percent=False, title=None).columns[1].header == "before"

    forgetting = ForgettingMetrics()
    forgetting.initial_metrics, forgetting.final_metrics = {"acc/forget": 0.5}, {"acc/forget": 0.1}
    assert collect_metrics([forgetting, Callback()]) == ({"acc/forget": 0.5}, {"acc/forget": 0.1})


def test_callbacks_configurable_by_class_path():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[Callback])
    config = """
callbacks:
  - class_path: lightning_unlearn.callbacks.ForgettingMetrics
  - class_path: lightning_unlearn.callbacks.MembershipInference
    init_args:
      attacks: [entropy]
      every_n_epochs: 2
      retain_subsample: 100
      seed: 3
"""
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    callbacks = instantiate(parser.parse_string(config)).callbacks
    assert isinstance(callbacks[0], ForgettingMetrics) and isinstance(callbacks[0], SplitMetricsCallback)
    membership = callbacks[1]
    assert isinstance(membership, MembershipInference)
    assert (membership.every_n_epochs, membership.retain_subsample, membership.seed) == (2, 100, 3)
    assert membership.attacks["entropy"].seed == 3


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path):
    """Odd-sized splits (one of size 1, empty on rank 1): every recorded value identical for 1 and 2 processes."""
    one, two = run_on_1_and_2_processes(TESTS_DIR / "ddp_metric_script.py", tmp_path)
    assert (one.pop("world_size"), two.pop("world_size")) == (1, 2)
    assert set(one["initial"]) == {"acc/forget", "acc/retain", "acc/test", "acc/test_forget", MIA}
    assert one == two
    assert one["initial"] != one["final"]
    assert one["test"] == one["final"]


def test_partial_validation_warns(tmp_path):
    forgetting = ForgettingMetrics(log_initial=False)
    trainer = _trainer(tmp_path, [forgetting], limit_val_batches=1, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="evaluates only part of each split"):
        trainer.fit(fakes.FakeModule(), datamodule=fakes.FakeDataModule())
    assert forgetting.final_metrics["acc/retain"] in {k / 4 for k in range(5)}  # one batch of 4 per split
