"""A method declares its epoch budget and data plan; the Trainer settings follow from it (plain Trainer and CLI)."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from data_factories import ToyDataModule
from lightning.pytorch import Callback
from test_cli import CONFIGS, tiny_config
from trainers import quiet_trainer

from lightning_unlearn.datamodules import ClassRemoval
from lightning_unlearn.main import main
from lightning_unlearn.methods import SCRUB, BoundaryShrink, Finetune, JiT, L1Sparse, Pruning
from lightning_unlearn.methods.base import UnlearningMethod
from lightning_unlearn.methods.budget import (
    EpochBudget,
    apply_budget,
    declares_budget,
    max_epochs_is_unset,
    trainer_settings,
)
from lightning_unlearn.models import load_classifier
from lightning_unlearn.presets import CONFIG_ROOT

SMALL_SCRUB = dict(epochs=3, max_epochs_forget=2, lr=0.05, forget_batch_size=4, retain_batch_size=16)
#: Methods whose budget is the trainer's ``max_epochs`` (their configs keep it).
TRAINER_BUDGET = {"Finetune", "RandomLabel", "GradientAscent", "Classifier", "RetrainOracle", "L2UL"}


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1)


def toy_data() -> ToyDataModule:
    return ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=16)


class _Epochs(Callback):
    """Records the epochs that ran and the splits of each epoch's first batch."""

    def __init__(self) -> None:
        self.splits: list[tuple[int, tuple[str, ...]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.splits.append((trainer.current_epoch, tuple(sorted(batch))))


def plain_trainer(tmp_path, callbacks=(), **options):
    """A quiet trainer that leaves ``max_epochs`` unset, as ``Trainer()`` does."""
    return quiet_trainer(tmp_path, max_epochs=None, limit_val_batches=0, callbacks=list(callbacks), **options)


# ------------------------------------------------------------------------------------------ the declaration
def test_declared_budgets_follow_the_stages_and_arguments():
    scrub = SCRUB(tiny_model(), **SMALL_SCRUB)
    assert scrub.epoch_budget() == EpochBudget(5, True, "max=1, min=1, max=1, min=1, min=1")
    assert scrub.required_epochs() == 5
    pruning = Pruning(tiny_model(), overfit_epochs=4, retain_epochs=3)
    assert pruning.required_epochs() == 7 and pruning.epoch_budget().reload_dataloaders
    boundary = BoundaryShrink(tiny_model(), epochs=4)
    assert boundary.epoch_budget() == EpochBudget(4, False, "epochs=4")
    assert JiT(tiny_model()).epoch_budget() == EpochBudget(1, False, "one pass over the forget set")
    assert Finetune(tiny_model()).epoch_budget() is None and Finetune(tiny_model()).required_epochs() is None
    with pytest.raises(ValueError, match="integer >= 1"):
        EpochBudget(0)


@pytest.mark.parametrize(
    ("max_epochs", "max_steps", "unset"),
    [(None, -1, True), (-1, -1, True), (-1, 20, True), (1000, -1, True), (1000, 20, False), (5, -1, False)],
)
def test_max_epochs_is_unset(max_epochs, max_steps, unset):
    assert max_epochs_is_unset(max_epochs, max_steps) is unset


def test_trainer_settings_of_the_command_line():
    scrub = SCRUB(tiny_model(), **SMALL_SCRUB)
    assert trainer_settings(scrub, {}) == {"max_epochs": 5, "reload_dataloaders_every_n_epochs": 1}
    assert trainer_settings(scrub, {"max_epochs": 5, "reload_dataloaders_every_n_epochs": 1}) == {}
    assert trainer_settings(BoundaryShrink(tiny_model(), epochs=2), {"max_epochs": None}) == {"max_epochs": 2}
    assert trainer_settings(Finetune(tiny_model()), {}) == {}
    with pytest.raises(ValueError, match="max_epochs=5"):
        trainer_settings(scrub, {"max_epochs": 4})
    with pytest.raises(ValueError, match="allowed: 0 or 1"):
        trainer_settings(scrub, {"reload_dataloaders_every_n_epochs": 3})


# ------------------------------------------------------------------------------------------ plain Trainer
def test_plain_trainer_runs_scrub_for_its_declared_epochs_with_reload(tmp_path):
    epochs = _Epochs()
    trainer = plain_trainer(tmp_path, callbacks=[epochs])
    assert trainer.reload_dataloaders_every_n_epochs == 0  # Lightning's default
    trainer.fit(SCRUB(tiny_model(), **SMALL_SCRUB), datamodule=toy_data())
    assert trainer.max_epochs == trainer.current_epoch == 5
    assert trainer.reload_dataloaders_every_n_epochs == 1
    # max/min passes alternate: each epoch got its own loader (forget, retain, forget, retain, retain)
    assert epochs.splits == [(0, ("forget",)), (1, ("retain",)), (2, ("forget",)), (3, ("retain",)), (4, ("retain",))]


def test_plain_trainer_runs_pruning_for_the_sum_of_its_stages(tmp_path):
    epochs = _Epochs()
    trainer = plain_trainer(tmp_path, callbacks=[epochs])
    method = Pruning(tiny_model(), overfit_epochs=2, retain_epochs=1)
    trainer.fit(method, datamodule=toy_data())
    assert trainer.max_epochs == trainer.current_epoch == 3
    assert [e for e, _ in epochs.splits] == [0, 1, 2]
    assert int(method.completed_stages) == 2


def test_a_consistent_user_value_is_kept(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=3, reload_dataloaders_every_n_epochs=1, limit_val_batches=0)
    trainer.fit(Pruning(tiny_model(), overfit_epochs=2, retain_epochs=1), datamodule=toy_data())
    assert trainer.current_epoch == trainer.max_epochs == 3


def test_a_contradicting_max_epochs_is_refused_with_the_fix(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=4)
    expected = (
        r"SCRUB runs 5 epochs \(max=1, min=1, max=1, min=1, min=1\): remove trainer.max_epochs \(it is set from "
        r"the method\) or set trainer.max_epochs=5 \(got 4\)"
    )
    with pytest.raises(ValueError, match=expected):
        trainer.fit(SCRUB(tiny_model(), **SMALL_SCRUB), datamodule=toy_data())
    with pytest.raises(ValueError, match=r"BoundaryShrink runs 2 epochs \(epochs=2\).*max_epochs=2 \(got 4\)"):
        quiet_trainer(tmp_path, max_epochs=4).fit(BoundaryShrink(tiny_model(), epochs=2), datamodule=toy_data())


def test_an_explicit_1000_with_a_step_limit_counts_as_set(tmp_path):
    with pytest.raises(ValueError, match=r"max_epochs=3 \(got 1000\)"):
        quiet_trainer(tmp_path, max_epochs=1000, max_steps=5).fit(
            Pruning(tiny_model(), overfit_epochs=2, retain_epochs=1), datamodule=toy_data()
        )


def test_reload_other_than_0_or_1_is_refused(tmp_path):
    trainer = plain_trainer(tmp_path, reload_dataloaders_every_n_epochs=2)
    with pytest.raises(ValueError, match=r"reload_dataloaders_every_n_epochs=1 \(got 2; allowed: 0 or 1\)"):
        trainer.fit(SCRUB(tiny_model(), **SMALL_SCRUB), datamodule=toy_data())


def test_single_phase_budget_sets_max_epochs_and_leaves_reload_alone(tmp_path):
    trainer = plain_trainer(tmp_path)
    trainer.fit(L1Sparse(tiny_model(), epochs=2), datamodule=toy_data())
    assert trainer.current_epoch == trainer.max_epochs == 2
    assert trainer.reload_dataloaders_every_n_epochs == 0
    trainer = plain_trainer(tmp_path)
    trainer.fit(JiT(tiny_model()), datamodule=toy_data())
    assert trainer.current_epoch == trainer.max_epochs == 1


def test_gradient_method_without_budget_keeps_the_users_max_epochs(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=0)
    method = Finetune(tiny_model())
    assert apply_budget(trainer, method) is None
    trainer.fit(method, datamodule=toy_data())
    assert trainer.current_epoch == trainer.max_epochs == 2
    assert trainer.reload_dataloaders_every_n_epochs == 0


def test_validate_leaves_the_trainer_alone(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=4)  # would be refused by fit
    trainer.validate(SCRUB(tiny_model(), **SMALL_SCRUB), datamodule=toy_data())
    assert trainer.max_epochs == 4


# ------------------------------------------------------------------------------------------ command line
@pytest.mark.parametrize("name", ["mnist5k/class_removal/scrub", "mnist5k/class_removal/pruning"])
def test_cli_config_without_max_epochs_runs_the_stages(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    config = tiny_config(CONFIG_ROOT / f"{name}.yaml", tmp_path)
    trainer_cfg = yaml.safe_load(config.read_text())["trainer"]
    assert "max_epochs" not in trainer_cfg and "reload_dataloaders_every_n_epochs" not in trainer_cfg
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["fit", "--config", str(config)])
    assert not [w for w in caught if "max_epochs` was not set" in str(w.message)]
    expected = cli.model.required_epochs()
    assert expected is not None and expected > 1
    assert cli.trainer.max_epochs == cli.trainer.current_epoch == expected
    assert cli.trainer.reload_dataloaders_every_n_epochs == 1
    assert int(cli.model.completed_stages) == len(cli.model.active_stages())


def test_cli_refuses_a_contradicting_max_epochs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    config = tiny_config(CONFIG_ROOT / "mnist5k/class_removal/scrub.yaml", tmp_path)
    with pytest.raises(ValueError, match=r"SCRUB runs \d+ epochs .*set trainer.max_epochs=\d+ \(got 1\)"):
        main(["--config", str(config), "--trainer.max_epochs", "1"], run=False)


# ------------------------------------------------------------------------------------------ shipped configs
def _method_class(config: Path) -> type | None:
    path = (yaml.safe_load(config.read_text()).get("model") or {}).get("class_path")
    if path is None:
        return None
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_shipped_configs_leave_the_budget_to_methods_that_declare_it():
    offenders, trainer_budget = [], set()
    for config in CONFIGS:
        cls = _method_class(config)
        if cls is None or not issubclass(cls, UnlearningMethod):
            continue
        trainer = yaml.safe_load(config.read_text()).get("trainer") or {}
        if not declares_budget(cls):
            trainer_budget.add(cls.__name__)
            continue
        for key in ("max_epochs", "reload_dataloaders_every_n_epochs"):
            if key in trainer:
                offenders.append(f"{config.relative_to(CONFIG_ROOT)}: trainer.{key} ({cls.__name__} declares it)")
    assert not offenders, "\n".join(offenders)
    assert trainer_budget == TRAINER_BUDGET  # the only shipped methods whose budget is the trainer's


def test_declares_budget_refuses_other_classes():
    with pytest.raises(TypeError, match="UnlearningMethod subclass"):
        declares_budget(torch.nn.Linear)  # type: ignore[arg-type]
