"""SCRUB: the divergence and losses against hand-computed values, the pass plan, the shared optimiser, the frozen
teacher, SCRUB+R's rewind choice and resuming."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from data_factories import ToyDataModule
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from trainers import CrashAt, SimulatedCrash, quiet_trainer

from lightning_unlearn.datamodules import ClassRemoval, RandomRemoval
from lightning_unlearn.methods import SCRUB
from lightning_unlearn.methods.scrub import (
    lr_at_epoch,
    pass_layout,
    scrub_divergence,
    scrub_max_loss,
    scrub_min_loss,
    select_rewind,
    smoothing_penalty,
)
from lightning_unlearn.models import load_classifier

Z_S = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]]
Z_T = [[1.0, 1.0, 0.0], [0.5, -0.5, 2.0]]
Y = [0, 2]


def _logits(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.tensor(Z_S, dtype=dtype), torch.tensor(Z_T, dtype=dtype), torch.tensor(Y)


def tiny_model(seed: int = 0, batch_norm: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1, batch_norm=batch_norm)


def toy_data(scenario=None) -> ToyDataModule:
    return ToyDataModule(scenario=scenario or ClassRemoval(classes=[0]), batch_size=16)


def fast_trainer(tmp_path, **options):
    """A quiet trainer without validation (the tests read the method, not the metric callbacks)."""
    return quiet_trainer(tmp_path, **{"limit_val_batches": 0, "num_sanity_val_steps": 0, **options})


def fit_scrub(tmp_path, method: SCRUB, data=None, **trainer_args):
    epochs = len(method._layout)
    options = dict(max_epochs=epochs, reload_dataloaders_every_n_epochs=1)
    options.update(trainer_args)
    trainer = fast_trainer(tmp_path, **options)
    trainer.fit(method, datamodule=data or toy_data())
    return trainer


SMALL = dict(epochs=3, max_epochs_forget=2, lr=0.05, forget_batch_size=4, retain_batch_size=16)


# ----------------------------------------------------------------------------------------------------- formulas
@pytest.mark.parametrize(
    ("t", "expected", "per_sample"),
    [
        (1.0, 0.225991, (0.323519, 0.128462)),
        (2.0, 0.301573, (0.090391, 0.060395)),
        (4.0, 0.336426, (0.023012, 0.019041)),
    ],
)
def test_divergence_equals_the_hand_computed_values(t, expected, per_sample):
    z_s, z_t, _ = _logits()
    assert float(scrub_divergence(z_s, z_t, t)) == pytest.approx(expected, abs=1e-6)
    # the formula: T^2 / B * sum p_t (log p_t - log p_s), i.e. KL(teacher || student) per sample
    p_t, log_p_s = F.softmax(z_t / t, 1), F.log_softmax(z_s / t, 1)
    rows = (p_t * (p_t.log() - log_p_s)).sum(1)
    assert rows.tolist() == pytest.approx(list(per_sample), abs=1e-6)
    assert float(scrub_divergence(z_s, z_t, t)) == pytest.approx(float(rows.mean()) * t * t, abs=1e-12)
    # float32 gives the same number
    assert float(scrub_divergence(z_s.float(), z_t.float(), t)) == pytest.approx(expected, abs=1e-6)


def test_divergence_direction_and_reduction_are_not_the_alternatives():
    z_s, z_t, _ = _logits()
    assert float(scrub_divergence(z_s, z_t, 4.0)) != pytest.approx(0.331592, abs=1e-4)  # KL(student || teacher)
    assert float(scrub_divergence(z_s, z_t, 4.0)) != pytest.approx(0.112142, abs=1e-4)  # element-wise mean
    assert abs(float(scrub_divergence(z_s, z_s, 4.0))) < 1e-15


def test_divergence_divides_by_the_actual_batch_size():
    z_s, z_t, _ = _logits()
    single = scrub_divergence(z_s[:1], z_t[:1], 1.0)
    assert float(single) == pytest.approx(0.323519, abs=1e-6)


def test_max_step_loss_and_its_gradient():
    z_s, z_t, _ = _logits()
    z_s.requires_grad_(True)
    loss = scrub_max_loss(z_s, z_t, 4.0)
    assert float(loss.detach()) == pytest.approx(-0.336426, abs=1e-6)
    loss.backward()
    expected = [[-0.206339, 0.083255, 0.123084], [0.164029, -0.101848, -0.062182]]
    assert z_s.grad is not None
    assert torch.allclose(z_s.grad, torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    # the closed form -T (softmax(z_s / T) - softmax(z_t / T)) / B
    closed = -4.0 * (F.softmax(z_s.detach() / 4, 1) - F.softmax(z_t / 4, 1)) / 2
    assert torch.allclose(z_s.grad, closed, atol=1e-12)
    # a descent step on the max loss moves the student away from the teacher: the divergence grows
    stepped = z_s.detach() - 0.5 * z_s.grad
    assert float(scrub_divergence(stepped, z_t, 4.0)) > float(scrub_divergence(z_s.detach(), z_t, 4.0))


@pytest.mark.parametrize(
    ("t", "gamma", "alpha", "expected"),
    [(2.0, 1.0, 0.5, 0.356365), (4.0, 1.0, 0.5, 0.373792), (4.0, 0.99, 0.001, 0.203859)],
)
def test_min_step_loss_is_gamma_ce_plus_alpha_kl(t, gamma, alpha, expected):
    z_s, z_t, y = _logits()
    assert float(F.cross_entropy(z_s, y)) == pytest.approx(0.205579, abs=1e-6)
    loss = scrub_min_loss(z_s, z_t, y, t, alpha, gamma)
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert float(loss) == pytest.approx(
        gamma * float(F.cross_entropy(z_s, y)) + alpha * float(scrub_divergence(z_s, z_t, t)), abs=1e-12
    )


def test_smoothing_penalty_value_and_gradient():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    b = torch.tensor([0.5, -0.5], requires_grad=True)
    anchor = [torch.tensor([[1.0, 2.0], [3.0, 3.0]]), torch.zeros(2)]
    term = smoothing_penalty([w, b], anchor, 0.5)
    assert float(term) == pytest.approx(0.853553, abs=1e-6)
    term.backward()
    assert w.grad is not None and b.grad is not None
    assert torch.allclose(w.grad, torch.tensor([[0.0, 0.0], [0.0, 0.5]]))
    assert torch.allclose(b.grad, torch.tensor([0.353553, -0.353553]), atol=1e-6)
    same = torch.tensor([1.0, 2.0], requires_grad=True)
    smoothing_penalty([same], [same.detach().clone()], 0.5).backward()
    assert same.grad is not None and torch.equal(same.grad, torch.zeros(2))


def test_learning_rate_table():
    def table(decay, epochs):
        lrs, lr = [], 5e-4
        for e in range(1, epochs + 1):
            new = lr_at_epoch(e, 5e-4, decay, 0.1)
            lr = lr if new is None else new
            lrs.append(lr)
        return lrs

    assert table((5, 8, 9), 10) == pytest.approx([5e-4] * 5 + [5e-5] * 3 + [5e-6, 5e-7])
    assert table((3, 5, 9), 5) == pytest.approx([5e-4] * 3 + [5e-5] * 2)
    assert table((3, 5, 9), 3) == pytest.approx([5e-4] * 3)
    assert lr_at_epoch(3, 5e-4, (3, 5, 9), 0.1) is None  # strict: epoch 3 is not after decay epoch 3


def test_rewind_rules():
    errors = [0, 12, 35, 80, 85, 86]
    assert select_rewind(errors, 20, "closest") == 1
    assert select_rewind(errors, 20, "first_above") == 2
    assert select_rewind(errors, 30, "closest") == select_rewind(errors, 30, "first_above") == 2
    assert select_rewind(errors, 0, "closest") == 0
    assert select_rewind(errors, 99, "first_above") == 5  # none above: the last
    assert select_rewind([10, 30], 20, "closest") == 0  # first on ties


def test_pass_layout():
    assert pass_layout(3, 2) == [(1, "max"), (1, "min"), (2, "max"), (2, "min"), (3, "min")]
    assert pass_layout(2, 5) == [(1, "max"), (1, "min"), (2, "max"), (2, "min")]
    assert pass_layout(2, 0) == [(1, "min"), (2, "min")]
    method = SCRUB(tiny_model(), epochs=3, max_epochs_forget=2)
    stages = method.active_stages()
    assert [(s.name, s.epochs) for s in stages] == [("max", 1), ("min", 1), ("max", 1), ("min", 1), ("min", 1)]
    assert [method.pass_at(j) for j in range(5)] == pass_layout(3, 2)
    assert stages[0].phase.splits == ("forget",) and stages[0].phase.batch_size == 512
    assert stages[0].phase.labelled is False  # corrected: forget labels are not served
    assert stages[1].phase.splits == ("retain",) and stages[1].phase.batch_size == 256
    assert SCRUB(tiny_model(), preset="reference").active_stages()[0].phase.labelled is True
    assert len(method.train_plan(5)) == 5
    assert method.required_epochs() == 5 and method.epoch_budget().reload_dataloaders  # the trainer follows it


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"max_epochs_forget": -1}, "max_epochs_forget"),
        ({"temperature": 0.0}, "temperature"),
        ({"optim": "rmsprop"}, "optim"),
        ({"momentum": 1.0}, "momentum"),
        ({"lr_decay_epochs": (3, -1)}, "lr_decay_epochs"),
        ({"forget_batch_size": 0}, "forget_batch_size"),
        ({"rewind_rule": "last"}, "rewind_rule"),
        ({"preset": "paper"}, "preset"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"smoothing": -1.0}, "smoothing"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SCRUB(tiny_model(), **kwargs)


# ----------------------------------------------------------------------------------------------------- training
class Recording(SCRUB):
    """SCRUB that records, per step, the pass, the batch it got and the optimiser's momentum buffer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[tuple[int, str, int, bool, bool]] = []
        self.bn_during_forget: list[torch.Tensor] = []

    def stage_step(self, stage, batch, batch_idx, optimizer):
        part = batch["forget"] if stage.name == "max" else batch["retain"]
        x = part if isinstance(part, torch.Tensor) else part[0]
        state = optimizer.optimizer.state
        has_momentum = any(
            "momentum_buffer" in state[p] and state[p]["momentum_buffer"] is not None
            for p in self.model.parameters()
            if p in state
        )
        self.steps.append((self.current_epoch, stage.name, len(x), isinstance(part, torch.Tensor), has_momentum))
        loss = super().stage_step(stage, batch, batch_idx, optimizer)
        if stage.name == "max" and getattr(self.model, "bn", None) is not None:
            self.bn_during_forget.append(self.model.bn.running_mean.clone())
        return loss


def test_passes_steps_shared_optimiser_and_frozen_teacher(tmp_path):
    seed_everything(0)
    model = tiny_model(batch_norm=True)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    method = Recording(model, **SMALL)
    teacher_ids = {id(p) for p in method.teacher.parameters()}
    trainer = fit_scrub(tmp_path, method)
    # 10 forget samples (class 0 of 100) in batches of 4, 90 retain samples in batches of 16
    forget_steps, retain_steps = math.ceil(10 / 4), math.ceil(90 / 16)
    per_epoch = [(j, kind) for (j, kind, *_rest) in method.steps]
    expected = []
    for j, kind in enumerate(["max", "min", "max", "min", "min"]):
        expected += [(j, kind)] * (forget_steps if kind == "max" else retain_steps)
    assert per_epoch == expected
    assert trainer.global_step == 2 * forget_steps + 3 * retain_steps
    assert sorted({n for (_, kind, n, *_r) in method.steps if kind == "max"}) == [2, 4]
    # corrected: forget batches are inputs only (labels never served)
    assert all(plain for (_, kind, _n, plain, _m) in method.steps if kind == "max")
    # one optimiser: the momentum of the max-pass is there at the first retain step
    first_retain = next(s for s in method.steps if s[1] == "min")
    assert first_retain[4]
    optimizers = trainer.optimizers
    assert len(optimizers) == 1
    assert not teacher_ids & {id(p) for g in optimizers[0].param_groups for p in g["params"]}
    # the teacher is bitwise the original, parameters and batch norm statistics alike, and frozen
    for name, value in method.teacher.state_dict().items():
        assert torch.equal(value, original[name]), name
    assert not any(p.requires_grad for p in method.teacher.parameters())
    # the student's batch norm statistics absorb forget batches (train mode on max-passes)
    assert not torch.equal(method.bn_during_forget[0], original["bn.running_mean"])
    assert any(not torch.equal(v, original[k]) for k, v in method.model.state_dict().items())


def test_max_pass_increases_the_divergence_to_the_teacher(tmp_path):
    data = toy_data()
    data.setup("fit")
    forget = data.split_dataset("forget", labelled=False)
    batch = torch.stack([forget[i] for i in range(len(forget))])
    seed_everything(0)
    method = SCRUB(
        tiny_model(),
        epochs=1,
        max_epochs_forget=1,
        lr=0.05,
        weight_decay=0.0,
        forget_batch_size=16,
        retain_batch_size=16,
    )

    def kl() -> float:
        with torch.no_grad():
            return float(scrub_divergence(method.model(batch), method.teacher(batch), 4.0))

    assert kl() < 1e-5  # student = teacher: the max-step gradient is 0 there, so move the student a little
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = kl()
    trainer = fast_trainer(tmp_path, max_epochs=2, reload_dataloaders_every_n_epochs=1, callbacks=[_StopAfter(0)])
    trainer.fit(method, datamodule=toy_data())  # the max-pass only (one step on the 10 forget samples)
    assert trainer.global_step == 1
    assert kl() > before > 0


class _StopAfter(Callback):
    """Stops the fit at the end of Lightning epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.stop_epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.stop_epoch:
            trainer.should_stop = True


def test_reference_preset_serves_labelled_forget_batches(tmp_path):
    seed_everything(0)
    one = dict(epochs=1, max_epochs_forget=1, lr=0.05, forget_batch_size=4, retain_batch_size=16)
    method = Recording(tiny_model(), preset="reference", **one)
    fit_scrub(tmp_path, method)
    assert not any(plain for (_, kind, _n, plain, _m) in method.steps if kind == "max")
    seed_everything(0)
    corrected = Recording(tiny_model(), **one)
    fit_scrub(tmp_path, corrected)
    for a, b in zip(method.model.parameters(), corrected.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)  # no numeric change


def test_learning_rate_is_set_per_scrub_epoch(tmp_path):
    lrs: list[tuple[int, float]] = []

    class Watch(SCRUB):
        def stage_step(self, stage, batch, batch_idx, optimizer):
            lrs.append((self.pass_at(self.current_epoch)[0], optimizer.param_groups[0]["lr"]))
            return super().stage_step(stage, batch, batch_idx, optimizer)

    method = Watch(
        tiny_model(),
        epochs=3,
        max_epochs_forget=2,
        lr=0.01,
        lr_decay_epochs=(1, 2),
        lr_decay_rate=0.5,
        forget_batch_size=8,
        retain_batch_size=32,
    )
    fit_scrub(tmp_path, method)
    assert sorted(set(lrs)) == [(1, 0.01), (2, 0.005), (3, 0.0025)]


def test_checkpoint_loads_weights_only_and_the_classifier_reloads(tmp_path):
    method = SCRUB(tiny_model(), **SMALL)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit_scrub(tmp_path, method, enable_checkpointing=True, callbacks=[checkpoints])
    path = tmp_path / "ckpt" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    teacher_keys = [k for k in ckpt["state_dict"] if k.startswith("teacher.")]
    assert teacher_keys  # kept so a resumed run has the same teacher
    reloaded = load_classifier("tiny_cnn", 10, str(path), in_channels=1).eval()
    x = torch.rand(5, 1, 4, 4)
    method.model.eval()
    assert torch.equal(reloaded(x), method.model(x))


def test_resume_inside_a_max_pass_matches_an_uninterrupted_run(tmp_path):
    seed_everything(0)
    full = SCRUB(tiny_model(), **SMALL)
    fit_scrub(tmp_path / "a", full)

    seed_everything(0)
    crashed = SCRUB(tiny_model(), **SMALL)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    with pytest.raises(SimulatedCrash):  # killed in the second max-pass (Lightning epoch 2), after one step
        fit_scrub(tmp_path / "b", crashed, enable_checkpointing=True, callbacks=[checkpoints, CrashAt(2, 1)])
    seed_everything(0)
    resumed = SCRUB(tiny_model(), **SMALL)
    trainer = fast_trainer(tmp_path / "b", max_epochs=5, reload_dataloaders_every_n_epochs=1)
    trainer.fit(resumed, datamodule=toy_data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), weights_only=True)
    assert resumed.pass_at(2) == (2, "max")
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


# ----------------------------------------------------------------------------------------------------- SCRUB+R
class _KeepStates(Callback):
    """Keeps the student's state at the last batch seen of each SCRUB epoch (callbacks run before the module)."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        scrub_epoch, kind = pl_module.pass_at(trainer.current_epoch)
        if kind == "min":
            self.states[scrub_epoch] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}


def _error(model: torch.nn.Module, state: dict[str, torch.Tensor], dataset) -> float:
    net = tiny_model()
    net.load_state_dict(state)
    net.eval()
    xs = torch.stack([dataset[i][0] for i in range(len(dataset))])
    ys = torch.stack([dataset[i][1] for i in range(len(dataset))])
    with torch.no_grad():
        return float(100.0 * (net(xs).argmax(1) != ys).double().mean())


@pytest.mark.parametrize(
    "scenario", [ClassRemoval(classes=[0]), pytest.param(RandomRemoval(fraction=0.2), marks=pytest.mark.slow)]
)
def test_rewind_picks_the_epoch_closest_to_the_held_out_error(tmp_path, scenario):
    seed_everything(0)
    model = tiny_model()
    method = SCRUB(model, rewind=True, **SMALL)
    keep = _KeepStates()
    trainer = fit_scrub(tmp_path, method, data=toy_data(scenario), callbacks=[keep])
    data = toy_data(scenario)
    data.setup("fit")
    forget = data.split_dataset("forget")
    labels = set(data.split_targets("forget").tolist())
    test = data.split_dataset("test")
    held_out = [i for i in range(len(test)) if int(test[i][1]) in labels]
    target = _error(model, keep.states[3], torch.utils.data.Subset(test, held_out))
    errors = [_error(model, method.teacher.state_dict(), forget)]
    errors += [_error(model, keep.states[e], forget) for e in (1, 2, 3)]
    assert method._rewind_errors == pytest.approx(errors, abs=1e-9)
    k = select_rewind(errors, target, "closest")
    assert method._rewind_selected == k
    expected = method.teacher.state_dict() if k == 0 else keep.states[k]
    for name, value in method.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    metrics = trainer.callback_metrics
    assert float(metrics["scrub/rewind_epoch"]) == k
    assert float(metrics["scrub/rewind_target_error"]) == pytest.approx(target, abs=1e-4)
    assert float(metrics["scrub/forget_error_selected"]) == pytest.approx(errors[k], abs=1e-4)


@pytest.mark.slow
def test_rewind_record_survives_a_resume(tmp_path):
    seed_everything(0)
    full = SCRUB(tiny_model(), rewind=True, **SMALL)
    fit_scrub(tmp_path / "a", full)
    seed_everything(0)
    crashed = SCRUB(tiny_model(), rewind=True, **SMALL)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    with pytest.raises(SimulatedCrash):  # after SCRUB epoch 2 ended (Lightning epoch 3), before the last one
        fit_scrub(tmp_path / "b", crashed, enable_checkpointing=True, callbacks=[checkpoints, CrashAt(4, 1)])
    seed_everything(0)
    resumed = SCRUB(tiny_model(), rewind=True, **SMALL)
    trainer = fast_trainer(tmp_path / "b", max_epochs=5, reload_dataloaders_every_n_epochs=1)
    trainer.fit(resumed, datamodule=toy_data(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), weights_only=True)
    assert resumed._rewind_errors == full._rewind_errors
    assert resumed._rewind_selected == full._rewind_selected
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
