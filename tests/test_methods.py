"""Method base classes and baselines on a tiny synthetic datamodule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from data_factories import ToyDataModule
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from trainers import quiet_trainer

from lightning_unlearn.datamodules import ClassRemoval, RandomRemoval
from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods import (
    Classifier,
    Finetune,
    GradientAscent,
    MultiStageUnlearningMethod,
    RandomLabel,
    RetrainOracle,
    Stage,
)
from lightning_unlearn.models import load_classifier


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1)


def make_trainer(tmp_path, max_epochs: int = 1, **kwargs) -> Trainer:
    return quiet_trainer(tmp_path, max_epochs=max_epochs, **kwargs)


class SampleCounter:
    """Counts the training samples a method receives per split."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.keys: set[tuple[str, ...]] = set()

    def add(self, batch: dict) -> None:
        self.keys.add(tuple(sorted(batch)))
        for name, value in batch.items():
            x = value if isinstance(value, torch.Tensor) else value[0]
            self.counts[name] = self.counts.get(name, 0) + len(x)


def counting(cls):
    class Counted(cls):
        def training_step(self, batch, batch_idx):
            self.counter.add(batch)
            return super().training_step(batch, batch_idx)

    return Counted


def test_classifier_trains_in_pretrain_mode_and_refuses_unlearn_mode(tmp_path):
    data = ToyDataModule(mode="pretrain", batch_size=16)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = Classifier(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    make_trainer(tmp_path).fit(method, datamodule=data)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="mode"):
        make_trainer(tmp_path).fit(Classifier(tiny_model()), datamodule=ToyDataModule(mode="unlearn"))


def test_retrain_oracle_reinitialises_deterministically():
    a, b = tiny_model(1), tiny_model(2)
    RetrainOracle(a, seed=5)
    RetrainOracle(b, seed=5)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    with pytest.raises(ValueError, match="mode"):
        make_trainer(".").fit(RetrainOracle(tiny_model()), datamodule=ToyDataModule(mode="pretrain"))


def test_retrain_oracle_trains_on_retain_only(tmp_path):
    seen: list[torch.Tensor] = []

    class Spy(RetrainOracle):
        def training_step(self, batch, batch_idx):
            seen.append(batch[1])
            return super().training_step(batch, batch_idx)

    data = ToyDataModule(mode="retrain", scenario=ClassRemoval(classes=[3]), batch_size=16)
    make_trainer(tmp_path).fit(Spy(tiny_model()), datamodule=data)
    labels = torch.cat(seen)
    assert len(labels) == 90 and not (labels == 3).any()


def test_finetune_sees_only_the_retain_set(tmp_path):
    method = counting(Finetune)(tiny_model(), lr=0.01)
    method.counter = SampleCounter()
    data = ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=16)
    make_trainer(tmp_path, max_epochs=2).fit(method, datamodule=data)
    assert method.counter.keys == {("retain",)}
    assert method.counter.counts == {"retain": 2 * 90}


def test_gradient_ascent_forget_only_one_pass_per_epoch(tmp_path):
    method = GradientAscent(tiny_model(), lr=0.01)
    data = ToyDataModule(scenario=RandomRemoval(count=21), batch_size=8)
    trainer = make_trainer(tmp_path, max_epochs=2)
    trainer.fit(method, datamodule=data)
    assert trainer.global_step == 2 * math.ceil(21 / 8)


def test_gradient_ascent_raises_forget_loss_and_neggrad_plus_pairs_splits(tmp_path):
    data = ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=10)
    data.setup("fit")
    x, y = _materialise(data, "forget")
    model = tiny_model()
    with torch.no_grad():
        before = F.cross_entropy(model(x), y).item()
    make_trainer(tmp_path, max_epochs=3).fit(GradientAscent(model, lr=0.05), datamodule=data)
    with torch.no_grad():
        after = F.cross_entropy(model.eval()(x), y).item()
    assert after > before

    method = counting(GradientAscent)(tiny_model(), lr=0.01, retain_weight=1.0)
    method.counter = SampleCounter()
    make_trainer(tmp_path, max_epochs=1).fit(method, datamodule=ToyDataModule(scenario=ClassRemoval(classes=[0])))
    assert method.counter.keys == {("forget", "retain")}
    assert method.counter.counts["retain"] == 90


def _materialise(data, name):
    dataset = data.split_dataset(name)
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([i[0] for i in items]), torch.stack([torch.as_tensor(i[1]) for i in items])


def test_random_label_labels_are_wrong_fixed_and_seeded(tmp_path):
    data = ToyDataModule(scenario=RandomRemoval(count=30), batch_size=8)
    method = RandomLabel(tiny_model(), seed=3, retain_weight=0.0)
    make_trainer(tmp_path, max_epochs=2).fit(method, datamodule=data)
    offsets = method.label_offsets.clone()
    assert offsets.shape == (30,) and offsets.min() >= 1 and offsets.max() <= 9
    _, y = _materialise(data, "forget")
    index = torch.arange(30)
    assert not (method.random_labels(y, index) == y).any()
    again = RandomLabel(tiny_model(), seed=3, retain_weight=0.0)
    make_trainer(tmp_path, max_epochs=1).fit(again, datamodule=ToyDataModule(scenario=RandomRemoval(count=30)))
    assert torch.equal(again.label_offsets, offsets)
    other = RandomLabel(tiny_model(), seed=4, retain_weight=0.0)
    make_trainer(tmp_path, max_epochs=1).fit(other, datamodule=ToyDataModule(scenario=RandomRemoval(count=30)))
    assert not torch.equal(other.label_offsets, offsets)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (Finetune, {"lr": -1.0}, "lr"),
        (Finetune, {"lr": float("nan")}, "lr"),
        (Finetune, {"momentum": 1.5}, "momentum"),
        (GradientAscent, {"retain_weight": -0.1}, "retain_weight"),
        (GradientAscent, {"forget_weight": 0.0}, "forget_weight"),
        (GradientAscent, {"forget_loss_ceiling": 0.0}, "forget_loss_ceiling"),
        (RandomLabel, {"num_classes": 1}, "num_classes"),
        (Classifier, {"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_bad_hyperparameters_raise_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(tiny_model(), **kwargs)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        Finetune("not a model")  # type: ignore[arg-type]


def test_hyperparameters_hold_no_objects():
    method = Finetune(tiny_model(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert "model" not in method.hparams and "optimizer" not in method.hparams
    assert method.hparams["lr"] == 1e-3


class ToyStages(MultiStageUnlearningMethod):
    """Two training stages around a statistics stage, recording what ran."""

    def __init__(self, model: torch.nn.Module, lr_a: float = 0.1, lr_b: float = 0.01) -> None:
        super().__init__(model)
        self.events: list[tuple[int, str, float | None, int | None]] = []
        self.ends: list[tuple[int, str]] = []

    def stages(self) -> list[Stage]:
        return [
            Stage("a", 1, Phase(1, ("forget",))),
            Stage("stats", 1, Phase(1, ("retain",), shuffle=False), trains=False),
            Stage("b", 2, Phase(1, ("retain",))),
        ]

    def configure_stage_optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        lr = self.hparams["lr_a"] if stage.name == "a" else self.hparams["lr_b"]
        return torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9)

    def stage_step(self, stage, batch, batch_idx, optimizer):
        x, y, _ = self.split_batch(batch[stage.phase.splits[0]])
        if optimizer is None:
            self.events.append((self.current_epoch, stage.name, None, None))
            return None
        inner = optimizer.optimizer
        self.events.append((self.current_epoch, stage.name, inner.param_groups[0]["lr"], id(inner)))
        loss = F.cross_entropy(self(x), y)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def stage_end(self, stage: Stage) -> None:
        self.ends.append((self.current_epoch, stage.name))
        if stage.name == "stats":
            with torch.no_grad():
                self.model.fc2.bias.zero_()


def _stage_data() -> ToyDataModule:
    return ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=16)


def test_multi_stage_runs_each_stage_with_its_own_optimizer(tmp_path):
    method = ToyStages(tiny_model())
    trainer = make_trainer(tmp_path, max_epochs=4, reload_dataloaders_every_n_epochs=1)
    trainer.fit(method, datamodule=_stage_data())
    by_epoch = {e: {(n, lr) for (ep, n, lr, _) in method.events if ep == e} for e in range(4)}
    assert by_epoch == {0: {("a", 0.1)}, 1: {("stats", None)}, 2: {("b", 0.01)}, 3: {("b", 0.01)}}
    optimizer_ids = {n: {i for (_, name, _, i) in method.events if name == n} for n in ("a", "b")}
    assert len(optimizer_ids["a"]) == 1 and len(optimizer_ids["b"]) == 1
    assert optimizer_ids["a"] != optimizer_ids["b"]
    assert method.ends == [(0, "a"), (1, "stats"), (3, "b")]
    assert int(method.completed_stages) == 3
    # Stage "a" sees only the 10 forget samples: one batch.
    assert sum(1 for (ep, *_rest) in method.events if ep == 0) == 1


def test_multi_stage_checks_max_epochs_and_reload(tmp_path):
    with pytest.raises(ValueError, match="max_epochs=4"):
        make_trainer(tmp_path, max_epochs=3, reload_dataloaders_every_n_epochs=1).fit(
            ToyStages(tiny_model()), datamodule=_stage_data()
        )
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs"):
        make_trainer(tmp_path, max_epochs=4, reload_dataloaders_every_n_epochs=2).fit(
            ToyStages(tiny_model()), datamodule=_stage_data()
        )
    # Lightning's default (no reload) is raised to every epoch: the stages get their own data.
    method = ToyStages(tiny_model())
    trainer = make_trainer(tmp_path, max_epochs=4)
    trainer.fit(method, datamodule=_stage_data())
    assert trainer.reload_dataloaders_every_n_epochs == 1
    assert method.ends == [(0, "a"), (1, "stats"), (3, "b")]


def test_multi_stage_refuses_a_second_fit(tmp_path):
    method = ToyStages(tiny_model())
    make_trainer(tmp_path, max_epochs=4, reload_dataloaders_every_n_epochs=1).fit(method, datamodule=_stage_data())
    with pytest.raises(RuntimeError, match="already run"):
        make_trainer(tmp_path, max_epochs=4, reload_dataloaders_every_n_epochs=1).fit(method, datamodule=_stage_data())


@pytest.mark.parametrize("resume_epoch", [1, 2])
def test_multi_stage_resumes_in_the_right_stage_and_matches_an_uninterrupted_run(tmp_path, resume_epoch):
    seed_everything(0)
    full = ToyStages(tiny_model())
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    trainer = make_trainer(
        tmp_path, max_epochs=4, reload_dataloaders_every_n_epochs=1, enable_checkpointing=True, callbacks=[checkpoints]
    )
    trainer.fit(full, datamodule=_stage_data())

    seed_everything(0)
    resumed = ToyStages(tiny_model())
    ckpt = tmp_path / "ckpt" / f"epoch={resume_epoch}.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]["completed_stages"] == 2
    make_trainer(tmp_path, max_epochs=4, reload_dataloaders_every_n_epochs=1).fit(
        resumed, datamodule=_stage_data(), ckpt_path=str(ckpt), weights_only=True
    )
    assert {e for (e, *_rest) in resumed.events} == set(range(resume_epoch + 1, 4))
    assert all(name == "b" for (_, name, *_rest) in resumed.events)
    assert resumed.ends == [(3, "b")]
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_statistics_stage_edit_precedes_validation_and_checkpoint(tmp_path):
    seen_bias: list[float] = []

    class Watch(ToyStages):
        def on_validation_epoch_start(self) -> None:
            if not self.trainer.sanity_checking:
                seen_bias.append(float(self.model.fc2.bias.abs().sum()))

    method = Watch(tiny_model())
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    make_trainer(
        tmp_path, max_epochs=4, reload_dataloaders_every_n_epochs=1, enable_checkpointing=True, callbacks=[checkpoints]
    ).fit(method, datamodule=_stage_data())
    assert seen_bias[0] > 0 and seen_bias[1] == 0.0
    state = torch.load(tmp_path / "ckpt" / "epoch=1.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert float(state["model.fc2.bias"].abs().sum()) == 0.0


def test_lightning_checkpoint_loads_weights_only_and_round_trips(tmp_path):
    method = Finetune(tiny_model(), lr=0.05)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    make_trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoints]).fit(
        method, datamodule=ToyDataModule(scenario=ClassRemoval(classes=[0]))
    )
    path = tmp_path / "ckpt" / "last.ckpt"
    torch.load(path, map_location="cpu", weights_only=True)
    reloaded = load_classifier("tiny_cnn", 10, str(path), in_channels=1)
    x = torch.rand(5, 1, 4, 4)
    method.model.eval()
    assert torch.equal(reloaded.eval()(x), method.model(x))


def test_label_free_method_receives_inputs_only(tmp_path):
    received: list[object] = []

    class LabelFree(GradientAscent):
        needs_labels = False
        train_splits = ("forget", "retain")

        def train_plan(self, max_epochs):
            return super(GradientAscent, self).train_plan(max_epochs)

        def training_step(self, batch, batch_idx):
            received.extend(batch.values())
            return self(batch["forget"]).sum() * 0.0

    make_trainer(tmp_path).fit(LabelFree(tiny_model()), datamodule=ToyDataModule(scenario=ClassRemoval(classes=[0])))
    assert received and all(isinstance(b, torch.Tensor) for b in received)
