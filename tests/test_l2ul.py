"""L2UL: hand-computed PGD, targets, layout, importance, regulariser, loss, stopping, continual."""

from __future__ import annotations

import math

import pytest
import torch
from data_factories import ToyDataModule
from lightning.pytorch import Trainer
from torch import nn
from trainers import quiet_trainer

from lightning_unlearn.datamodules import Continual, Indices, KInstances
from lightning_unlearn.methods.adversarial import (
    generate_adversarial_set,
    l2_pgd_targeted,
    sample_adversarial_targets,
)
from lightning_unlearn.methods.importance import (
    estimate_forget_importance,
    importance_penalty,
    normalize_importance,
)
from lightning_unlearn.methods.l2ul import L2UL, l2ul_loss, run_continual


class Identity2(nn.Module):
    """``logits = x`` for inputs of shape ``(B, 2, 1, 1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def linear_model(weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> nn.Linear:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2) if weight is None else weight)
        model.bias.copy_(torch.zeros(2) if bias is None else bias)
    return model


def toy_linear(bias_class: int | None = None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    if bias_class is not None:
        with torch.no_grad():
            model[1].weight.zero_()
            model[1].bias.zero_()
            model[1].bias[bias_class] = 100.0
    return model


def make_trainer(tmp_path, max_epochs: int = 100) -> Trainer:
    return quiet_trainer(tmp_path, max_epochs=max_epochs, num_sanity_val_steps=0, limit_val_batches=0)


def toy_data(scenario) -> ToyDataModule:
    dm = ToyDataModule(scenario=scenario)
    dm.setup("fit")
    return dm


FAST = dict(num_adv_per_instance=2, pgd_iters=2, pgd_eps=0.5, adv_batch_size=4, forget_batch_size=2)


# --------------------------------------------------------------------- PGD
def test_pgd_hand_computed_steps():
    model = Identity2().eval()
    x = torch.tensor([0.6, 0.4]).view(1, 2, 1, 1)
    t = torch.tensor([1])
    one = l2_pgd_targeted(model, x, t, eps=0.2, step=0.1, iters=1, rand_init=False)
    assert torch.allclose(one.flatten(), torch.tensor([0.529289, 0.470711]), atol=1e-6)
    three = l2_pgd_targeted(model, x, t, eps=0.2, step=0.1, iters=3, rand_init=False)
    assert torch.allclose(three.flatten(), torch.tensor([0.458579, 0.541421]), atol=1e-6)
    assert math.isclose(float((three - x).norm()), 0.2, rel_tol=1e-5)
    assert int(model(three).argmax(1)) == 1


def test_pgd_range_clip():
    x = torch.tensor([0.98, 0.02]).view(1, 2, 1, 1)
    out = l2_pgd_targeted(Identity2(), x, torch.tensor([0]), eps=0.2, step=0.1, iters=1, rand_init=False)
    assert torch.allclose(out.flatten(), torch.tensor([1.0, 0.0]))
    assert math.isclose(float((out - x).norm()), 0.028284, rel_tol=1e-4)


def test_pgd_random_init_stays_in_ball_and_range():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.rand(6, 3, 8, 8)
    t = torch.randint(0, 5, (6,))
    gen = torch.Generator().manual_seed(0)
    out = l2_pgd_targeted(net, x, t, eps=0.5, step=0.1, iters=5, rand_init=True, generator=gen)
    assert bool(((out - x).flatten(1).norm(dim=1) <= 0.5 + 1e-6).all())
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert all(p.grad is None for p in net.parameters())
    again = l2_pgd_targeted(net, x, t, 0.5, 0.1, 5, True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


# --------------------------------------------------------------------- targets
def test_corrected_targets_never_equal_label():
    y = torch.arange(1000) % 10
    t = sample_adversarial_targets(y, 10, "corrected", generator=torch.Generator().manual_seed(0))
    assert not bool((t == y).any())
    assert set(t.tolist()) == set(range(10))


def test_reference_targets_collision_gives_five():
    y = torch.full((200,), 5)
    t = sample_adversarial_targets(y, 100, "reference", target_classes=10, generator=torch.Generator().manual_seed(0))
    assert bool((t == 5).any())  # a collision on y = 5 is "replaced" by 5
    assert int(t.max()) < 10  # the reference preset draws targets from classes 0-9 only
    y0 = torch.zeros(200, dtype=torch.long)
    t0 = sample_adversarial_targets(y0, 10, "reference", generator=torch.Generator().manual_seed(0))
    assert not bool((t0 == 0).any()) and bool((t0 == 5).any())
    with pytest.raises(ValueError, match="mode must be one of"):
        sample_adversarial_targets(y, 10, "bogus")  # type: ignore[arg-type]


# --------------------------------------------------------------------- layout
def test_adversarial_set_is_repeat_major():
    x = torch.rand(3, 2, 1, 1)
    y = torch.tensor([0, 1, 0])
    _, y_adv, src = generate_adversarial_set(
        Identity2(), x, y, 2, 2, 2, eps=0.2, step=0.1, iters=1, generator=torch.Generator().manual_seed(0)
    )
    assert src.tolist() == [0, 1, 2, 0, 1, 2]
    assert y_adv.tolist() == [1, 0, 1, 1, 0, 1]  # 2 classes: the only other class


class Recording(L2UL):
    def training_step(self, batch, batch_idx):  # type: ignore[override]
        _, _, index = self.split_batch(batch["forget"])
        self.seen_forget.append(index.tolist())
        self.seen_adv.append(int(self.l2ul_step) % self.num_adv_batches)
        return super().training_step(batch, batch_idx)


def _never_forgets(preset: str = "corrected", variant: str = "adv") -> Recording:
    method = Recording(
        toy_linear(bias_class=0),
        num_classes=10,
        variant=variant,  # type: ignore[arg-type]
        preset=preset,  # type: ignore[arg-type]
        max_epochs=2,
        optimizer=lambda p: torch.optim.SGD(p, lr=1e-12),
        **FAST,
    )
    method.seen_forget, method.seen_adv = [], []
    return method


def test_forget_batches_cycle_and_cap(tmp_path):
    method = _never_forgets()
    trainer = make_trainer(tmp_path)
    trainer.fit(method, datamodule=toy_data(Indices([0, 10, 20])))  # all class 0, always predicted
    # k = 3, N_adv = 2, adv_bs = 4 -> 2 adversarial batches per epoch; cap 2 epochs -> 4 steps
    assert method.adv_src.tolist() == [0, 1, 2, 0, 1, 2]
    assert method.seen_forget == [[0, 1], [2], [0, 1], [2]]
    assert method.seen_adv == [0, 1, 0, 1]
    assert trainer.global_step == 4
    assert bool(method.l2ul_hit_cap) and bool(method.l2ul_done)
    assert trainer.current_epoch == trainer.max_epochs


def test_reference_cap_allows_one_more_epoch(tmp_path):
    method = _never_forgets(preset="reference")
    trainer = make_trainer(tmp_path)
    trainer.fit(method, datamodule=toy_data(Indices([0, 10, 20])))
    assert trainer.global_step == 6
    assert bool(method.l2ul_hit_cap)


def test_naive_reference_checks_only_after_each_pass(tmp_path):
    # already misclassified: corrected stops after one step, reference only after a full pass (2 batches)
    for preset, steps in (("corrected", 1), ("reference", 2)):
        method = L2UL(toy_linear(bias_class=9), 10, variant="naive", preset=preset, **FAST)  # type: ignore[arg-type]
        trainer = make_trainer(tmp_path)
        trainer.fit(method, datamodule=toy_data(Indices([0, 10, 20])))
        assert trainer.global_step == steps


# ----------------------------------------------------------------------- importance
def test_importance_single_sample():
    x = torch.tensor([[3.0, 4.0]])
    for mode in ("reference", "mas"):
        raw = estimate_forget_importance(linear_model(), x, 1, mode=mode)  # type: ignore[arg-type]
        if mode == "reference":
            assert torch.allclose(raw["weight"], torch.tensor([[1.8, 2.4], [2.4, 3.2]]))
        omega = normalize_importance(raw)
        expected = torch.tensor([[1.0, 0.571429], [0.571429, 0.0]])
        assert torch.allclose(omega["weight"], expected, atol=1e-6)
        assert torch.allclose(omega["bias"], torch.tensor([1.0, 0.0]))


def test_importance_two_samples():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    ref = normalize_importance(estimate_forget_importance(linear_model(), x, 2, mode="reference"))
    assert torch.equal(ref["bias"], torch.ones(2))  # |mean grad| = 0: the guard
    mas = normalize_importance(estimate_forget_importance(linear_model(), x, 2, mode="mas"))
    assert torch.allclose(mas["bias"], torch.tensor([0.0, 1.0]))

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    corrected = normalize_importance(estimate_forget_importance(linear_model(), x, 1))
    assert torch.allclose(corrected["weight"], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    accumulated = normalize_importance(estimate_forget_importance(linear_model(), x, 1, accumulate_grads=True))
    assert torch.allclose(accumulated["weight"], torch.tensor([[0.0, 1.0], [1.0, 0.5]]))


def test_importance_leaves_model_untouched():
    model = linear_model()
    estimate_forget_importance(model, torch.tensor([[3.0, 4.0]]), 1)
    assert model.weight.grad is None and torch.equal(model.weight, torch.eye(2))


# --------------------------------------------------------------------- regulariser
def test_regulariser_value_and_gradient():
    model = linear_model()
    anchor = {"weight": torch.eye(2)}
    omega = {"weight": torch.tensor([[1.0, 4 / 7], [4 / 7, 0.0]])}
    zero = importance_penalty(model, anchor, omega)
    zero.backward()
    assert float(zero) == 0.0 and torch.equal(model.weight.grad, torch.zeros(2, 2))
    model.weight.grad = None
    with torch.no_grad():
        model.weight.add_(0.1)
    value = importance_penalty(model, anchor, omega)
    assert math.isclose(float(value), 0.0107143, rel_tol=1e-5)
    value.backward()
    assert torch.allclose(model.weight.grad, omega["weight"] * 0.1)


# --------------------------------------------------------------------- loss
def test_adv_loss_with_zero_logits():
    loss, forget_ce, adv_ce = l2ul_loss(
        torch.zeros(1, 2), torch.tensor([0]), torch.zeros(3, 2), torch.tensor([1, 1, 0])
    )
    assert math.isclose(float(loss), (3 * math.log(2) - math.log(2)) / 4, rel_tol=1e-6)
    assert math.isclose(float(loss), 0.346574, rel_tol=1e-5)
    naive, _, none = l2ul_loss(torch.zeros(1, 2), torch.tensor([0]))
    assert none is None and math.isclose(float(naive), -math.log(2), rel_tol=1e-6)


# --------------------------------------------------------------------- stopping
def test_stops_after_one_step_when_forget_is_misclassified(tmp_path):
    logged = {}

    class Spy(L2UL):
        def log(self, name, value, *args, **kwargs):  # type: ignore[override]
            logged[name] = float(value)
            super().log(name, value, *args, **kwargs)

    method = Spy(toy_linear(bias_class=0), 10, variant="adv_imp", **FAST)
    trainer = make_trainer(tmp_path, max_epochs=50)
    trainer.fit(method, datamodule=toy_data(Indices([1, 2, 3])))  # classes 1-3, predicted 0
    assert trainer.global_step == 1
    assert logged["l2ul/forget_misclassified"] == 1.0
    assert logged["l2ul/stopped_step"] == 1.0 and logged["l2ul/hit_cap"] == 0.0
    assert trainer.current_epoch == trainer.max_epochs == 1


def test_argument_validation():
    with pytest.raises(ValueError, match="variant must be one of"):
        L2UL(toy_linear(), 10, variant="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bn_mode must be one of"):
        L2UL(toy_linear(), 10, bn_mode="frozen")  # type: ignore[arg-type]
    method = L2UL(toy_linear(), 10, preset="reference")
    assert method.adv_target_classes == 10 and method.importance_accumulate and method.extra_cap_epoch
    method = L2UL(toy_linear(), 10, preset="reference", extra_cap_epoch=False)
    assert not method.extra_cap_epoch


def test_relabel_reaches_targets(tmp_path):
    method = L2UL(
        toy_linear(seed=1),
        10,
        variant="adv",
        objective="relabel",
        relabel_targets=[3, 4, 5],
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        max_epochs=200,
        **FAST,
    )
    trainer = make_trainer(tmp_path, max_epochs=1000)
    trainer.fit(method, datamodule=toy_data(Indices([0, 1, 2])))
    assert not bool(method.l2ul_hit_cap)
    assert method._predict(method.forget_x).tolist() == [3, 4, 5]


# --------------------------------------------------------------------- continual
def test_continual_reanchors_and_reports(tmp_path):
    dm = ToyDataModule(scenario=Continual([KInstances(3), KInstances(3)]))
    method = L2UL(
        toy_linear(seed=0),
        10,
        variant="adv_imp",
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        max_epochs=100,
        **FAST,
    )
    snapshots = []

    def factory(t: int) -> Trainer:
        if t == 1:
            snapshots.append({k: v.detach().clone() for k, v in method.model.named_parameters()})
        return make_trainer(tmp_path / f"req{t}", max_epochs=1000)

    results = run_continual(method, dm, [0, 1], factory)
    anchor, _ = method._anchor_and_omega()
    for name, value in snapshots[0].items():
        assert torch.equal(anchor[name], value)  # theta0 of request 1 = weights after request 0
    assert len(results) == 2
    assert "forget_req0" in results[1] and "forget_previous" in results[1]
    assert results[1]["retain_size"] == ToyDataModule.num_train - 6
    assert results[1]["forget_all_size"] == 6
    assert results[0]["forget"] == 0.0 and results[1]["forget"] == 0.0
    assert int(method.l2ul_requests) == 2


def test_importance_generator_makes_dropout_rank_independent():
    # a stochastic layer in train mode: the seeded pass ignores (and leaves untouched) the global RNG
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    x = torch.randn(6, 4)
    results = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        results.append(estimate_forget_importance(model, x, 4, generator=torch.Generator().manual_seed(5)))
        assert torch.equal(torch.get_rng_state(), state)
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name])
    torch.manual_seed(0)
    a = estimate_forget_importance(model, x, 4)
    torch.manual_seed(1)
    b = estimate_forget_importance(model, x, 4)
    assert not all(torch.equal(a[n], b[n]) for n in a)  # unseeded: the draw follows the global RNG


# ------------------------------------------------------------------------------------ DDP
@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    """Adversarial set and Omega~ are identical on every rank and equal to one process's; ranks stop together."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    root = str(tests.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    # Same intra-op thread count in both runs (Lightning gives each DDP process cpu_count // 2), so float sums agree.
    env["OMP_NUM_THREADS"] = "1"
    runs = {}
    for devices in (1, 2):
        prefix = str(tmp_path / f"r{devices}")
        command = [sys.executable, str(tests / "ddp_l2ul_script.py"), "--devices", str(devices), "--out", prefix]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[devices] = [torch.load(f"{prefix}.rank{r}.pt", weights_only=True) for r in range(devices)]
    (one,), ranks = runs[1], runs[2]
    assert len(ranks) == 2 and all(r["world_size"] == 2 for r in ranks)
    assert one["forget_x"].shape[0] == 7 and one["adv_x"].shape[0] == 14  # k = 7: not divisible by 2 ranks
    for r in ranks:
        for key in ("forget_x", "forget_labels", "adv_x", "adv_y", "adv_src"):
            assert torch.equal(r[key], one[key]), key
        for key in ("omega", "theta0"):
            assert r[key].keys() == one[key].keys()
            for name, value in one[key].items():
                torch.testing.assert_close(r[key][name], value, rtol=0, atol=1e-6)
    # the two ranks' request state is bitwise identical (rank 0's copy is broadcast)
    for key in ("adv_x", "adv_y"):
        assert torch.equal(ranks[0][key], ranks[1][key])
    for name in one["omega"]:
        assert torch.equal(ranks[0]["omega"][name], ranks[1]["omega"][name])
    # same stopping decision at every step, same stop step, and the run finished (no hang, rc 0 above)
    assert ranks[0]["decisions"] == ranks[1]["decisions"]
    assert ranks[0]["stopped_step"] == ranks[1]["stopped_step"]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == ranks[0]["stopped_step"]
    assert all(r["done"] for r in (one, *ranks))
    assert [d for _, d in ranks[0]["decisions"]].count(True) == 1  # decided once, at the last step
