"""Bad Teaching and UNSIR: worked examples, teachers, stage order and data, resume."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from data_factories import ToyDataModule
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from trainers import quiet_trainer

from lightning_unlearn.datamodules import ClassRemoval, RandomRemoval
from lightning_unlearn.methods import UNSIR, BadTeaching
from lightning_unlearn.methods.bad_teaching import bad_teaching_loss
from lightning_unlearn.methods.unsir import error_maximizing_noise, noise_objective
from lightning_unlearn.models import load_classifier

RTOL = 1e-5

S = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [1.5, -0.5, 0.0], [0.2, 0.2, 2.0]])
C = torch.tensor([[3.0, 0.0, -1.0], [0.5, 2.0, -0.5], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
D = torch.tensor([[0.1, 0.0, -0.1], [0.0, 0.2, 0.1], [0.05, -0.05, 0.0], [0.0, 0.1, 0.0]])
FLAG = torch.tensor([0, 0, 1, 1])


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1, mean=[0.5], std=[0.25])


def close(actual: torch.Tensor, expected: list | float) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=RTOL, atol=1e-6)


# ---------------------------------------------------------------------------------------------- Bad Teaching
@pytest.mark.parametrize(
    ("temperature", "reduction", "expected"),
    [(1.0, "mean", 0.078657), (1.0, "batchmean", 0.235971), (2.0, "mean", 0.023105), (2.0, "batchmean", 0.069316)],
)
def test_bad_teaching_loss_matches_the_worked_example(temperature, reduction, expected):
    loss = bad_teaching_loss(S, C, D, FLAG, temperature, reduction)
    close(loss, expected)
    assert not math.isclose(float(loss), 0.277263, rel_tol=1e-3)  # no T**2 factor


def test_bad_teaching_targets_per_sample_kl_and_gradient():
    target = torch.where(FLAG.bool().unsqueeze(1), F.softmax(D, 1), F.softmax(C, 1))
    close(
        target,
        [
            [0.936240, 0.046613, 0.017148],
            [0.170953, 0.766157, 0.062890],
            [0.350132, 0.316812, 0.333056],
            [0.322043, 0.355913, 0.322043],
        ],
    )
    per_sample = (target * (target.log() - F.log_softmax(S, 1))).sum(1)
    close(per_sample, [0.088361, 0.105265, 0.341785, 0.408473])
    s = S.clone().requires_grad_(True)
    bad_teaching_loss(s, C, D, FLAG, 1.0, "mean").backward()
    expected = [
        [-0.012554, 0.010723, 0.001830],
        [0.003416, -0.015837, 0.012421],
        [0.032166, -0.018099, -0.014067],
        [-0.016485, -0.019307, 0.035792],
    ]
    torch.testing.assert_close(s.grad, torch.tensor(expected), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s.grad, (F.softmax(S, 1) - target) / 12, rtol=RTOL, atol=1e-7)
    swapped = (F.softmax(S, 1) * (F.log_softmax(S, 1) - target.log())).sum(1).mean()
    close(swapped, 0.242215)
    assert not math.isclose(float(bad_teaching_loss(S, C, D, FLAG)), float(swapped), rel_tol=1e-3)


def test_bad_teaching_presets_and_validation():
    corrected, reference = BadTeaching(tiny_model()), BadTeaching(tiny_model(), preset="reference")
    assert (corrected.kl_reduction, corrected.teacher_init) == ("batchmean", "reinit")
    assert (reference.kl_reduction, reference.teacher_init) == ("mean", "constructor")
    assert BadTeaching(tiny_model(), preset="reference", kl_reduction="batchmean").kl_reduction == "batchmean"
    for kwargs in (
        {"retain_fraction": 0.0},
        {"retain_fraction": 1.5},
        {"temperature": 0.0},
        {"preset": "x"},
        {"kl_reduction": "sum"},
        {"teacher_init": "zeros"},
    ):
        with pytest.raises(ValueError):
            BadTeaching(tiny_model(), **kwargs)


def test_incompetent_teacher_is_seeded_differs_and_keeps_normalisation():
    a, b, c = BadTeaching(tiny_model(0), seed=3), BadTeaching(tiny_model(1), seed=3), BadTeaching(tiny_model(0), seed=4)
    sd_a, sd_b = a.incompetent_teacher.state_dict(), b.incompetent_teacher.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)  # a function of the seed only
    assert any(not torch.equal(sd_a[k], v) for k, v in c.incompetent_teacher.state_dict().items())
    model_sd = a.model.state_dict()
    weights = [k for k in sd_a if k.endswith("weight") and "normalize" not in k]
    assert weights and all(not torch.equal(sd_a[k], model_sd[k]) for k in weights)
    for k in (k for k in sd_a if k.startswith("normalize.")):
        assert torch.equal(sd_a[k], model_sd[k])
    given = tiny_model(5)
    assert BadTeaching(tiny_model(), incompetent_teacher=given).incompetent_teacher is given


class _CountingBadTeaching(BadTeaching):
    def on_fit_start(self) -> None:
        self.flags: list[int] = []
        self.seen = 0
        self.steps = 0

    def training_step(self, batch, batch_idx):
        _, index = batch["forget+retain_sample"]
        self.flags.append(int((index < self._num_forget).sum()))
        self.seen += len(index)
        self.steps += 1
        return super().training_step(batch, batch_idx)


def test_bad_teaching_fit_keeps_teachers_frozen_and_sees_each_forget_sample_once(tmp_path):
    method = _CountingBadTeaching(tiny_model(), batch_size=16, retain_fraction=0.3)
    teachers = {n: t.detach().clone() for n, t in method.state_dict().items() if "teacher" in n}
    dm = ToyDataModule(scenario=ClassRemoval([0]))
    quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0).fit(method, datamodule=dm)
    after = method.state_dict()
    assert teachers and all(torch.equal(after[n], t) for n, t in teachers.items())
    assert not method.competent_teacher.training and not method.incompetent_teacher.training
    optimised = {id(p) for group in method.trainer.optimizers[0].param_groups for p in group["params"]}
    teacher_params = [*method.competent_teacher.parameters(), *method.incompetent_teacher.parameters()]
    assert not optimised & {id(p) for p in teacher_params}
    num_forget, sample = 10, math.floor(0.3 * 90)
    assert sum(method.flags) == num_forget and method.seen == num_forget + sample
    assert method.steps == math.ceil((num_forget + sample) / 16)


def test_bad_teaching_checkpoint_loads_with_weights_only(tmp_path):
    method = BadTeaching(tiny_model(), batch_size=32)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = quiet_trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[ckpt])
    trainer.fit(method, datamodule=ToyDataModule(scenario=ClassRemoval([0])))
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert any(k.startswith("incompetent_teacher.") for k in state["state_dict"])


# ---------------------------------------------------------------------------------------------- UNSIR
def _linear() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.5], [-1.0, 1.0]]))
        model[1].bias.copy_(torch.tensor([0.0, 0.1, 0.0]))
    return model


N0 = torch.tensor([[0.5, -0.2], [-1.0, 0.3]]).view(2, 1, 1, 2)


def test_noise_objective_matches_the_worked_example():
    model = _linear()
    objective, ce, sq = noise_objective(model(N0), N0, 0, 0.1)
    close(ce, 1.742729)
    close(sq, 0.69)
    close(objective, -1.673729)
    n = N0.clone().requires_grad_(True)
    noise_objective(model(n), n, 0, 0.1)[0].backward()
    close(n.grad.view(2, 2), [[0.265475, -0.404677], [0.718534, -0.871023]])


@pytest.mark.parametrize("steps", [1, 2])
def test_noise_steps_and_leak_match_the_worked_example(steps):
    model = _linear()
    leak = [torch.zeros_like(p) for p in model.parameters()]
    noise, history = error_maximizing_noise(model, N0, 0, steps, lr=0.1, reg=0.1, leak=leak)
    if steps == 1:
        close(noise.view(2, 2), [[0.4, -0.1], [-1.1, 0.4]])
        close(leak[0], [[-0.353814, 0.094412], [-0.002112, 0.009094], [0.355926, -0.103506]])
        close(leak[1], [0.705773, -0.251691, -0.454082])
    else:
        close(noise.view(2, 2), [[0.299872, 0.000135], [-1.200073, 0.500035]])
        close(leak[0], [[-0.774602, 0.259566], [0.003442, -0.001171], [0.771160, -0.258395]])
        close(leak[1], [1.452510, -0.504099, -0.948411])
        torch.testing.assert_close(torch.tensor(history), torch.tensor([-1.673729, -1.905844]), rtol=RTOL, atol=0)
        objective, ce, sq = noise_objective(model(noise), noise, 0, 0.1)
        close(ce, 2.239269)
        close(sq, 0.890067)
        close(objective, -2.150262)
    assert all(p.grad is None for p in model.parameters())


def test_noise_without_leak_is_identical_and_writes_no_model_gradient():
    model = _linear()
    noise, history = error_maximizing_noise(model, N0, 0, 2, lr=0.1, reg=0.1)
    close(noise.view(2, 2), [[0.299872, 0.000135], [-1.200073, 0.500035]])
    assert history == sorted(history, reverse=True)  # J falls, so the forget-class loss rises
    assert all(p.grad is None for p in model.parameters())


class _RecordingUNSIR(UNSIR):
    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.seen: list[tuple[int, str, tuple[str, ...], int]] = []
        self.step_counts: dict[str, int] = {}
        self.noise_at_impair: torch.Tensor | None = None
        self.grads_at_impair: list | None = None

    def stage_step(self, stage, batch, batch_idx, optimizer):
        ((name, value),) = batch.items()
        x = value if isinstance(value, torch.Tensor) else value[0]
        labelled = isinstance(value, list | tuple) and len(value) >= 2
        self.seen.append((self.current_epoch, stage.name, (name,), len(x), labelled))
        if stage.name == "impair" and self.noise_at_impair is None:
            self.noise_at_impair = self.noise.clone()
            self.grads_at_impair = [p.grad for p in self.model.parameters()]
            self.buffers_at_impair = {k: v.clone() for k, v in self.model.named_buffers()}
        before = int(self.trainer.global_step)
        out = super().stage_step(stage, batch, batch_idx, optimizer)
        self.step_counts[stage.name] = self.step_counts.get(stage.name, 0) + int(self.trainer.global_step) - before
        return out


UNSIR_ARGS = dict(noise_batch_size=4, noise_copies=2, retain_per_class=5, impair_batch_size=8, repair_batch_size=16)


def test_unsir_stage_order_and_data_per_stage(tmp_path):
    method = _RecordingUNSIR(tiny_model(), **UNSIR_ARGS)
    buffers = {k: v.clone() for k, v in method.model.named_buffers()}
    quiet_trainer(tmp_path, max_epochs=3, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0).fit(
        method, datamodule=ToyDataModule(scenario=ClassRemoval([0]))
    )
    assert [s.name for s in method.active_stages()] == ["noise", "impair", "repair"]
    epochs = {stage: {e for e, s, *_ in method.seen if s == stage} for stage in ("noise", "impair", "repair")}
    assert epochs == {"noise": {0}, "impair": {1}, "repair": {2}}
    noise_rows = [r for r in method.seen if r[1] == "noise"]
    assert noise_rows == [(0, "noise", ("forget",), 10, False)]  # the forget set once, inputs only
    sample = 9 * 5  # 5 retain samples per retained class
    for stage in ("impair", "repair"):
        rows = [r for r in method.seen if r[1] == stage]
        assert {r[2] for r in rows} == {("retain_sample",)} and all(r[4] for r in rows)
        assert sum(r[3] for r in rows) == sample
    assert method.noise.shape == (1, 4, 1, 4, 4) and method.noise_labels.tolist() == [0]
    assert method.step_counts == {"noise": 0, "impair": math.ceil((sample + 2 * 4) / 8), "repair": math.ceil(45 / 16)}
    assert method.impair_steps == 7
    # corrected preset: the noise stage leaves the model's gradients empty and its buffers as they were
    assert method.grads_at_impair is not None and all(g is None for g in method.grads_at_impair)
    assert method.noise_at_impair is not None and torch.equal(method.noise_at_impair, method.noise)
    assert buffers and all(torch.equal(v, method.buffers_at_impair[k]) for k, v in buffers.items())


def test_unsir_impair_plan_covers_the_pool_once():
    method = UNSIR(tiny_model(), **UNSIR_ARGS)
    method._forget_classes = [0]
    method._sample_size, method._impair_loader_batches, method._impair_steps = 45, 6, 7
    method._local_noise_slots = 8
    slots, retain, steps = [], 0, 0
    for k in range(6):
        count = 8 if k < 5 else 5
        plan = method.impair_plan(k, count)
        steps += len(plan)
        retain += sum(len(r) for r, _ in plan)
        slots += [int(s) for _, n in plan for s in n]
    assert (steps, retain, sorted(slots)) == (7, 45, list(range(8)))


def test_unsir_reference_preset_switches():
    method = UNSIR(tiny_model(), preset="reference")
    assert (method.noise_model_mode, method.leak_noise_grads) == ("train", True)
    assert UNSIR(tiny_model(), preset="reference", leak_noise_grads=False).leak_noise_grads is False
    for kwargs in ({"preset": "x"}, {"noise_label": "last"}, {"noise_model_mode": "test"}, {"noise_lr": 0.0}):
        with pytest.raises(ValueError):
            UNSIR(tiny_model(), **kwargs)


def test_unsir_rejects_scenarios_without_forget_classes(tmp_path):
    trainer = quiet_trainer(tmp_path, max_epochs=3, reload_dataloaders_every_n_epochs=1)
    with pytest.raises(ValueError, match="class.*subclass"):
        trainer.fit(UNSIR(tiny_model(), **UNSIR_ARGS), datamodule=ToyDataModule(scenario=RandomRemoval(fraction=0.1)))


def test_unsir_resumes_after_the_noise_stage_with_the_same_noise(tmp_path):
    def run(root, ckpt_path=None, callbacks=()):
        method = UNSIR(tiny_model(), **UNSIR_ARGS)
        trainer = quiet_trainer(
            root,
            max_epochs=3,
            reload_dataloaders_every_n_epochs=1,
            num_sanity_val_steps=0,
            enable_checkpointing=bool(callbacks),
            callbacks=list(callbacks),
        )
        trainer.fit(method, datamodule=ToyDataModule(scenario=ClassRemoval([0])), ckpt_path=ckpt_path)
        return method

    saver = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    full = run(tmp_path / "a", callbacks=[saver])
    state = torch.load(tmp_path / "ck" / "epoch=0.ckpt", weights_only=True)
    assert int(state["state_dict"]["completed_stages"]) == 1
    torch.testing.assert_close(state["state_dict"]["noise"], full.noise, rtol=0, atol=0)
    resumed = run(tmp_path / "b", ckpt_path=str(tmp_path / "ck" / "epoch=0.ckpt"))
    assert torch.equal(resumed.noise, full.noise)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(("mode", "moves"), [("eval", False), ("train", True)])
def test_noise_in_eval_mode_leaves_batch_norm_statistics_alone(mode, moves):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3)).train(mode == "train")
    before = model[2].running_mean.clone()
    error_maximizing_noise(model, torch.randn(5, 1, 2, 2), 1, 3)
    assert (not torch.equal(before, model[2].running_mean)) == moves
