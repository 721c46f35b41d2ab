"""Each function of ``lightning_unlearn.compat`` against the installed Lightning, and private API kept inside it."""

from __future__ import annotations

import re
from pathlib import Path

import lightning
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from torch.utils.data import DataLoader, IterableDataset, TensorDataset
from trainers import quiet_trainer

from lightning_unlearn import compat

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_unlearn"


class _Linear(LightningModule):
    """A one-layer model on random 4-feature data; ``hook`` runs in every training step."""

    def __init__(self, manual: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
        self.automatic_optimization = not manual
        self.hook = lambda module, batch_idx: None

    def training_step(self, batch, batch_idx):
        self.hook(self, batch_idx)
        loss = self.layer(batch[0]).sum()
        return None if not self.automatic_optimization else loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch[0]).sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader(n: int = 10, batch_size: int = 2) -> DataLoader:
    return DataLoader(TensorDataset(torch.rand(n, 4)), batch_size=batch_size)


class _Unsized(IterableDataset):
    def __iter__(self):
        for _ in range(5):
            yield (torch.rand(4),)


class _LastBatchRecorder(Callback):
    def __init__(self) -> None:
        self.flags: list[tuple[int, int, bool]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.flags.append((trainer.current_epoch, batch_idx, compat.is_last_training_batch(trainer, batch_idx)))


@pytest.mark.parametrize(
    ("loader", "limit", "batches"),
    [(_loader(10), 1.0, 5), (_loader(10), 3, 3), (DataLoader(_Unsized(), batch_size=1), 1.0, 5)],
    ids=["sized", "limited", "without-length"],
)
def test_is_last_training_batch_flags_only_the_last_batch_of_each_epoch(tmp_path, loader, limit, batches):
    recorder = _LastBatchRecorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=limit, callbacks=[recorder])
    trainer.fit(_Linear(), train_dataloaders=loader)
    expected = [(epoch, i, i == batches - 1) for epoch in range(2) for i in range(batches)]
    assert recorder.flags == expected


def test_record_optimizer_step_advances_global_step_under_manual_optimisation(tmp_path):
    module = _Linear(manual=True)

    def count_every_other_batch(m: LightningModule, batch_idx: int) -> None:
        if batch_idx % 2 == 0:
            compat.record_optimizer_step(m.trainer)

    module.hook = count_every_other_batch
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, train_dataloaders=_loader(10))  # 5 batches per epoch: steps at 0, 2, 4
    assert trainer.global_step == 6


def test_end_fit_after_current_epoch_stops_validates_and_reports_the_epoch_as_last(tmp_path):
    module = _Linear()
    steps: list[tuple[int, int]] = []

    def stop_in_epoch_1(m: LightningModule, batch_idx: int) -> None:
        steps.append((m.current_epoch, batch_idx))
        if m.current_epoch == 1 and batch_idx == 1:
            compat.end_fit_after_current_epoch(m.trainer)

    class Validations(Callback):
        def __init__(self) -> None:
            self.epochs: list[tuple[int, int | None]] = []

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.epochs.append((trainer.current_epoch, trainer.max_epochs))

    module.hook = stop_in_epoch_1
    validations = Validations()
    trainer = quiet_trainer(
        tmp_path, max_epochs=50, check_val_every_n_epoch=1, num_sanity_val_steps=0, callbacks=[validations]
    )
    trainer.fit(module, train_dataloaders=_loader(10), val_dataloaders=_loader(4))
    assert steps[-1] == (1, 1)  # the epoch ended right after the batch that asked for it
    assert trainer.current_epoch == trainer.max_epochs == 2
    assert validations.epochs == [(0, 50), (1, 2)]  # validated at the stopping epoch, already seen as the last


def test_set_max_epochs_from_setup_governs_the_run(tmp_path):
    class _ThreeEpochs(_Linear):
        def setup(self, stage: str) -> None:
            if stage == "fit":
                compat.set_max_epochs(self.trainer, 3)

    epochs: list[int] = []
    module = _ThreeEpochs()
    module.hook = lambda m, batch_idx: epochs.append(m.current_epoch) if batch_idx == 0 else None
    trainer = quiet_trainer(tmp_path, max_epochs=None)
    trainer.fit(module, train_dataloaders=_loader(4))  # max_epochs not given: Lightning's 1000 is replaced
    assert epochs == [0, 1, 2]
    assert trainer.current_epoch == trainer.max_epochs == 3
    with pytest.raises(ValueError, match="integer >= -1"):
        compat.set_max_epochs(trainer, -2)


def test_ddp_allow_unused_parameters_sets_the_flag_unless_the_user_chose(tmp_path):
    trainer = Trainer(accelerator="cpu", devices=1, strategy="ddp", logger=False, default_root_dir=str(tmp_path))
    assert isinstance(trainer.strategy, DDPStrategy)
    assert compat.ddp_allow_unused_parameters(trainer.strategy)
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is True
    chosen = DDPStrategy(find_unused_parameters=False)
    assert compat.ddp_allow_unused_parameters(chosen)
    assert chosen._ddp_kwargs["find_unused_parameters"] is False
    assert not compat.ddp_allow_unused_parameters(SingleDeviceStrategy(device=torch.device("cpu")))


#: Lightning internals: the loops, their progress counters, private trainer/strategy/CLI attributes.
_PRIVATE = re.compile(
    r"fit_loop|epoch_loop|batch_progress|optim_step_progress|_ddp_kwargs|_subcommand_method_arguments"
    r"|\btrainer\._(?!_)|strategy\._(?!_)"
)
#: In the LightningCLI subclass, also calls of LightningCLI's private methods and attributes.
_PRIVATE_CLI = re.compile(r"super\(\)\._(?!_)|self\._parser\b|self\._get\(|self\._subcommand")


def test_private_lightning_api_is_used_only_in_compat():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            pattern = _PRIVATE_CLI if path.name == "main.py" else None
            if _PRIVATE.search(code) or (pattern is not None and pattern.search(code)):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "private Lightning API outside lightning_unlearn/compat.py:\n" + "\n".join(offenders)


def test_the_grep_catches_what_it_is_meant_to():
    for line in (
        "trainer.fit_loop.max_epochs = 3",
        'getattr(self.trainer.strategy, "_ddp_kwargs", None)',
        "self._subcommand_method_arguments[subcommand]",
        "self.trainer._accelerator_connector",
    ):
        assert _PRIVATE.search(line), line
    assert _PRIVATE_CLI.search("super()._parse_ckpt_path()")
    assert not _PRIVATE_CLI.search("super().__init__(model)")


def test_lightning_dependency_has_a_tested_range_holding_the_installed_version():
    text = (ROOT / "pyproject.toml").read_text()
    spec = re.search(r'"lightning([<>=!~][^"]*)"', text)
    assert spec is not None
    specifier = SpecifierSet(spec.group(1))
    assert any(s.operator == "<" for s in specifier) and any(s.operator == ">=" for s in specifier)
    assert Version(lightning.__version__) in specifier
    installed = ".".join(lightning.__version__.split(".")[:2])
    assert installed in compat.TESTED_LIGHTNING
    for tested in compat.TESTED_LIGHTNING:
        assert Version(f"{tested}.0") in specifier
