"""LAF / LAF+R and its sorted-softmax gradient-boosting membership attack."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from data_factories import ToyDataModule
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from trainers import quiet_trainer

from lightning_unlearn.datamodules import ClassRemoval
from lightning_unlearn.methods.laf import LAF, bounded_error, ra_loss, ue_loss, vae_loss, vae_loss_terms
from lightning_unlearn.metrics.laf_attack import (
    SortedSoftmaxGBM,
    SortedSoftmaxGBMBalanced,
    SortedSoftmaxGBMTrain,
    gbm_attacker,
)
from lightning_unlearn.metrics.membership import ATTACKS, build_attack
from lightning_unlearn.models import load_classifier
from lightning_unlearn.models.vae import RepresentationVAE


def tiny(seed: int = 0, batch_norm: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = load_classifier("tiny_cnn", 10, in_channels=1, batch_norm=batch_norm)
    if batch_norm:  # non-trivial running statistics, so "unchanged" is a real check
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.5, 0.5)
            model.bn.running_var.uniform_(0.5, 1.5)
    return model


def trainer(tmp_path, max_epochs: int, **kwargs) -> Trainer:
    return quiet_trainer(tmp_path, **{"max_epochs": max_epochs, "reload_dataloaders_every_n_epochs": 1, **kwargs})


def data(**kwargs) -> ToyDataModule:
    return ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=8, **kwargs)


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SMALL = dict(latent_dim=4, vae_epochs=1, unlearn_epochs=2, lr_ue=1e-2, lr_ra=1e-2)


# ------------------------------------------------------------------------------------------------ losses
def test_bounded_error_hand_values():
    m = torch.tensor([0.0, 1.0, 3.0, 1000.0], dtype=torch.float64)
    phi = bounded_error(m)
    expected = torch.tensor([1.0, math.exp(0.5), math.exp(0.75), math.exp(1000 / 1001)], dtype=torch.float64)
    assert torch.allclose(phi, expected, atol=1e-12)
    assert abs(phi[1].item() - 1.648721) < 1e-6 and abs(phi[2].item() - 2.117000) < 1e-6
    assert abs(phi[3].item() - 2.715568) < 1e-6 and phi[3].item() < math.e


def test_ue_loss_hand_value():
    e_r = torch.rand(3, 256, dtype=torch.float64)
    e_f = torch.rand(2, 256, dtype=torch.float64)
    recon_f = e_f.clone()
    recon_f[:, 7] += 1.0
    value = ue_loss(e_r.clone(), e_r, recon_f, e_f)
    assert abs(value.item() - (3 - 2 * math.exp(0.5))) < 1e-9
    assert abs(value.item() - (-0.297443)) < 1e-6


def test_ra_loss_hand_values():
    torch.manual_seed(0)
    t_r = torch.randn(3, 256, dtype=torch.float64)
    t_f = torch.randn(2, 256, dtype=torch.float64)
    # student = teacher: -3 ln 2
    assert abs(ra_loss(t_r, t_r, t_f, t_f, 5.0).item() - (-3 * math.log(2))) < 1e-6
    assert abs(ra_loss(t_r, t_r, t_f, t_f, 5.0).item() - (-2.079442)) < 1e-6
    # forget representations orthogonal to the teacher's (b = 1), tau = 5: -3 (ln 2 + 0.2)
    t_f_axes = torch.zeros(2, 256, dtype=torch.float64)
    t_f_axes[0, 0], t_f_axes[1, 1] = 2.0, 3.0
    e_f_orth = torch.zeros(2, 256, dtype=torch.float64)
    e_f_orth[0, 5], e_f_orth[1, 6] = 1.5, 0.5
    value = ra_loss(t_r, t_r, e_f_orth, t_f_axes, 5.0).item()
    assert abs(value - (-3 * (math.log(2) + 0.2))) < 1e-6 and abs(value - (-2.679442)) < 1e-6
    # retain representations opposite to the teacher's add +2 each
    opposite = ra_loss(-t_r, t_r, e_f_orth, t_f_axes, 5.0).item()
    assert abs(opposite - (value + 6.0)) < 1e-6
    # tau divides the forgetting term only
    assert abs(ra_loss(t_r, t_r, e_f_orth, t_f_axes, 1.0).item() - (-3 * (math.log(2) + 1.0))) < 1e-6


def test_vae_loss_hand_values():
    e = torch.rand(4, 256, dtype=torch.float64)
    ones = torch.ones(4, 8, dtype=torch.float64)
    assert abs(vae_loss(e.clone(), e, ones, ones).item() - 0.1) < 1e-6
    loss, recon, kl = vae_loss_terms(e + 0.5, e, torch.zeros_like(ones), ones)
    assert abs(loss.item() - 64.0) < 1e-6 and abs(recon.item() - 64.0) < 1e-9 and abs(kl.item()) < 1e-6
    assert abs(vae_loss(e.clone(), e, ones, ones, kl_weight=1.0).item() - 4.0) < 1e-6


def test_representation_vae_shapes_sampling_and_arguments():
    vae = RepresentationVAE(256, 16).eval()
    e = torch.randn(5, 256)
    recon, z, mu, sigma = vae(e)
    assert recon.shape == (5, 256) and z.shape == mu.shape == sigma.shape == (5, 16)
    assert (recon > 0).all() and (recon < 1).all() and (sigma > 0).all()
    # sampled on every forward, even in eval mode; a generator makes it reproducible
    assert not torch.equal(vae(e)[1], vae(e)[1])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(vae(e, generator=g1)[0], vae(e, generator=g2)[0])
    mean_only = RepresentationVAE(256, 16, sample_latent=False, output="identity")
    _, z, mu, _ = mean_only(e)
    assert torch.equal(z, mu)
    assert sum(p.numel() for p in vae.parameters()) == (
        256 * 128 + 128 + 128 * 32 + 32 + 2 * (32 * 16 + 16) + 16 * 32 + 32 + 32 * 128 + 128 + 128 * 256 + 256
    )
    with pytest.raises(ValueError, match="output"):
        RepresentationVAE(output="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latent_dim"):
        RepresentationVAE(latent_dim=0)


# ------------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "paper"}, "preset"),
        ({"all_vae_data": "forget"}, "all_vae_data"),
        ({"vae_output": "tanh"}, "vae_output"),
        ({"repair_split": "all"}, "repair_split"),
        ({"vae_epochs": 0}, "vae_epochs"),
        ({"unlearn_epochs": 0}, "unlearn_epochs"),
        ({"repair": True, "repair_epochs": 0}, "repair_epochs"),
        ({"lr_ue": -1.0}, "lr_ue"),
        ({"temperature": 0.0}, "temperature"),
        ({"head_name": "classifier"}, "classifier"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LAF(tiny(), **kwargs)


def test_max_epochs_must_match_the_stages(tmp_path):
    with pytest.raises(ValueError, match="max_epochs=4"):
        trainer(tmp_path, 3).fit(LAF(tiny(), **SMALL), datamodule=data())


def test_head_must_be_called_once_with_a_flat_representation(tmp_path):
    model = tiny()
    model.unused = torch.nn.Linear(32, 10)
    with pytest.raises(ValueError, match="called 0 times"):
        trainer(tmp_path, 4).fit(LAF(model, head_name="unused", **SMALL), datamodule=data())
    with pytest.raises(ValueError, match="flat"):
        trainer(tmp_path, 4).fit(LAF(tiny(), head_name="conv", **SMALL), datamodule=data())


def test_teacher_and_vaes_are_registered_and_hparams_plain():
    method = LAF(tiny(), latent_dim=4, vae_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    keys = method.state_dict().keys()
    assert any(k.startswith("teacher.") for k in keys) and any(k.startswith("vae_forget.") for k in keys)
    assert all(not p.requires_grad for p in method.teacher.parameters())
    assert "vae_optimizer" not in method.hparams and method.hparams["temperature"] == 20.0
    assert method.representation_dim == 32


# ------------------------------------------------------------------------------------------------ structure
class Recording(LAF):
    """Records snapshots at stage ends and the batches of every stage."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.snapshots: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
        self.batches: list[tuple[int, str, tuple[str, ...], bool]] = []
        self.modes: list[tuple[str, bool, bool]] = []

    def stage_step(self, stage, batch, batch_idx, optimizer):
        labels_free = all(isinstance(v, torch.Tensor) for v in batch.values())
        self.batches.append((self.current_epoch, stage.name, tuple(sorted(batch)), labels_free))
        self.modes.append((stage.name, self.model.training, self.teacher.training))
        return super().stage_step(stage, batch, batch_idx, optimizer)

    def stage_end(self, stage):
        super().stage_end(stage)
        self.snapshots[stage.name] = {
            "model": clone_state(self.model),
            "vae_all": clone_state(self.vae_all),
            "vae_forget": clone_state(self.vae_forget),
        }


def test_structure_of_a_laf_run(tmp_path):
    original = clone_state(tiny())
    method = Recording(tiny(), **SMALL)
    fit = trainer(tmp_path, 4, limit_val_batches=1)
    fit.fit(method, datamodule=data())
    final = clone_state(method.model)
    head = {k for k in final if k.startswith("fc2.")}
    bn = {k for k in final if k.startswith("bn.") and "running" in k or k == "bn.num_batches_tracked"}
    assert all(torch.equal(final[k], original[k]) for k in head), "head changed"
    assert all(torch.equal(final[k], original[k]) for k in bn), "BatchNorm running statistics changed"
    assert any(not torch.equal(final[k], original[k]) for k in final if k.startswith("conv.")), "extractor unchanged"
    assert same(clone_state(method.teacher), original)
    # VAEs unchanged after their stage and frozen
    assert same(method.snapshots["vae_all"]["vae_all"], clone_state(method.vae_all))
    assert same(method.snapshots["vae_forget"]["vae_forget"], clone_state(method.vae_forget))
    assert not same(method.snapshots["vae_all"]["vae_forget"], method.snapshots["vae_forget"]["vae_forget"])
    assert all(not p.requires_grad for p in [*method.vae_all.parameters(), *method.vae_forget.parameters()])
    # stage 1-2 do not touch the classifier
    assert same(method.snapshots["vae_forget"]["model"], original)
    # data per stage: unlabelled full, forget, paired forget/retain (min_size: 2 forget batches of 8 per epoch)
    per_stage = {
        name: {(keys, free) for (_, n, keys, free) in method.batches if n == name}
        for name in ("vae_all", "vae_forget", "unlearn")
    }
    assert per_stage == {
        "vae_all": {(("full",), True)},
        "vae_forget": {(("forget",), True)},
        "unlearn": {(("forget", "retain"), True)},
    }
    steps = min(math.ceil(10 / 8), math.ceil(90 / 8))
    assert [sum(1 for (e, n, *_r) in method.batches if e == epoch) for epoch in (2, 3)] == [steps, steps]
    # one ue and one ra step per stage-2 batch (Adam step counters)
    optimizers = fit.optimizers
    assert len(optimizers) == 4
    for position in (2, 3):
        counts = {int(s["step"]) for s in optimizers[position].state.values()}
        assert counts == {2 * steps}
    # eval mode of student and teacher in stage 2; teacher always eval
    assert all(not student and not teacher for (name, student, teacher) in method.modes if name == "unlearn")
    assert all(not teacher for (_, _, teacher) in method.modes)


def test_laf_r_repair_changes_only_the_head_on_labelled_subset(tmp_path):
    method = Recording(tiny(), **{**SMALL, "unlearn_epochs": 1}, repair=True, repair_epochs=2, repair_lr=1e-2)
    fit = trainer(tmp_path, 5, limit_val_batches=1)
    fit.fit(method, datamodule=data(labelled_fraction=0.5))
    before = method.snapshots["unlearn"]["model"]
    after = clone_state(method.model)
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("fc2.") for k in changed)
    repair = [(keys, free) for (_, n, keys, free) in method.batches if n == "repair"]
    assert set(repair) == {(("retain_labelled",), False)}
    assert len(repair) == 2 * math.ceil(45 / 8)  # half of the 90 retain samples, one pass per epoch
    assert len(fit.optimizers) == 5
    assert all(not student for (name, student, _) in method.modes if name == "repair")


def test_reference_repair_uses_all_retain_labels_zipped_with_forget(tmp_path):
    method = Recording(tiny(), **{**SMALL, "unlearn_epochs": 1}, repair=True, repair_epochs=1, preset="reference")
    trainer(tmp_path, 4, limit_val_batches=1).fit(method, datamodule=data())
    repair = [(keys, free) for (_, n, keys, free) in method.batches if n == "repair"]
    assert set(repair) == {(("forget", "retain"), False)} and len(repair) == math.ceil(10 / 8)


class PermutedLabels(ToyDataModule):
    """Training splits served with permuted labels."""

    def split_dataset(self, name, labelled=True, with_index=False, **kwargs):
        dataset = super().split_dataset(name, labelled, with_index, **kwargs)
        if name in ("forget", "retain", "full"):
            generator = torch.Generator().manual_seed(11)
            dataset.targets = (
                dataset.targets + 1 + torch.randint(0, 9, dataset.targets.shape, generator=generator)
            ) % 10
        return dataset


def test_stages_one_and_two_are_label_free(tmp_path):
    states = []
    for cls in (ToyDataModule, PermutedLabels):
        seed_everything(0)
        method = Recording(tiny(), **SMALL)
        trainer(tmp_path, 4, limit_val_batches=0).fit(
            method, datamodule=cls(scenario=ClassRemoval(classes=[0]), batch_size=8)
        )
        assert all(free for (*_r, free) in method.batches), "a stage 1-2 batch carried labels"
        states.append(clone_state(method))
    assert same(states[0], states[1])


@pytest.mark.parametrize("resume_epoch", [0, 2, 4, 6])
def test_resume_inside_each_stage_matches_an_uninterrupted_run(tmp_path, resume_epoch):
    kwargs = dict(latent_dim=4, vae_epochs=2, unlearn_epochs=2, lr_ue=1e-2, lr_ra=1e-2, repair=True, repair_epochs=2)
    ckpt_dir = tmp_path / "ckpt"
    seed_everything(0)
    full = Recording(tiny(), **kwargs)
    checkpoints = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    trainer(tmp_path, 8, enable_checkpointing=True, callbacks=[checkpoints], limit_val_batches=0).fit(
        full, datamodule=data()
    )

    seed_everything(123)
    resumed = Recording(tiny(seed=7), **kwargs)  # a different model: the checkpoint restores model and teacher
    ckpt = ckpt_dir / f"epoch={resume_epoch}.ckpt"
    trainer(tmp_path, 8, limit_val_batches=0).fit(resumed, datamodule=data(), ckpt_path=str(ckpt), weights_only=True)
    expected_stage = ["vae_all", "vae_forget", "unlearn", "repair"][resume_epoch // 2]
    first = resumed.batches[0]
    assert first[0] == resume_epoch + 1 and first[1] == expected_stage
    assert same(clone_state(resumed.teacher), clone_state(full.teacher))
    for key, value in full.state_dict().items():
        assert torch.allclose(value.float(), resumed.state_dict()[key].float(), atol=1e-6), key
    assert all(not p.requires_grad for p in resumed.vae_all.parameters())


# ------------------------------------------------------------------------------------------------ attack
def _feed(attack, splits: dict[str, torch.Tensor]) -> None:
    for name, logits in splits.items():
        n = logits.shape[0]
        attack.update(name, logits, torch.zeros(n, dtype=torch.long), torch.arange(n))


def _confident(n: int, generator: torch.Generator) -> torch.Tensor:
    logits = torch.randn(n, 10, generator=generator)
    logits[torch.arange(n), torch.randint(0, 10, (n,), generator=generator)] += 20.0
    return logits


def test_attacks_are_registered():
    assert ATTACKS["sorted_softmax_gbm"] is SortedSoftmaxGBM
    assert ATTACKS["sorted_softmax_gbm_balanced"] is SortedSoftmaxGBMBalanced
    assert build_attack("sorted_softmax_gbm_train").name == "sorted_softmax_gbm_train_acc"
    assert SortedSoftmaxGBM.name == "sorted_softmax_gbm_acc" and SortedSoftmaxGBM.higher_is_better is None
    feature = SortedSoftmaxGBM().features(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([0]))
    assert feature.dtype == torch.float64 and bool((feature.diff(dim=1) >= 0).all())
    with pytest.raises(ValueError, match="backend"):
        SortedSoftmaxGBM(backend="lightgbm")  # type: ignore[arg-type]


def test_separable_case_scores_one():
    g = torch.Generator().manual_seed(0)
    members = {"forget": _confident(200, g), "retain": _confident(600, g)}
    splits = {**members, "test": torch.zeros(700, 10) + 0.01 * torch.randn(700, 10, generator=g)}
    for cls in (SortedSoftmaxGBM, SortedSoftmaxGBMBalanced, SortedSoftmaxGBMTrain):
        attack = cls(backend="sklearn")
        _feed(attack, splits)
        assert attack.compute().item() == 1.0
    assert attack.backend_used == "sklearn"


def test_identical_distributions_score_about_one_half():
    g = torch.Generator().manual_seed(1)
    attack = SortedSoftmaxGBMBalanced(backend="sklearn")
    _feed(
        attack,
        {
            "forget": torch.randn(800, 10, generator=g),
            "retain": torch.randn(1500, 10, generator=g),
            "test": torch.randn(2400, 10, generator=g),
        },
    )
    assert abs(attack.compute().item() - 0.5) < 0.07


def test_empty_forget_gives_nan_and_missing_test_raises():
    g = torch.Generator().manual_seed(2)
    attack = SortedSoftmaxGBM(backend="sklearn")
    _feed(attack, {"retain": torch.randn(50, 10, generator=g), "test": torch.randn(50, 10, generator=g)})
    assert math.isnan(attack.compute().item())
    attack = SortedSoftmaxGBM(backend="sklearn")
    _feed(attack, {"forget": torch.randn(50, 10, generator=g), "retain": torch.randn(50, 10, generator=g)})
    with pytest.raises(ValueError, match="test"):
        attack.compute()


@pytest.mark.parametrize(("n_forget", "n_test"), [(150, 5100), (300, 900)])
def test_attack_equals_a_direct_scikit_learn_computation(n_forget, n_test):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    g = torch.Generator().manual_seed(3)
    forget = torch.randn(n_forget, 10, generator=g) * 3
    retain = torch.randn(800, 10, generator=g) * 3
    test = torch.randn(n_test, 10, generator=g) * 2
    seed = 5
    results = {}
    for cls in (SortedSoftmaxGBM, SortedSoftmaxGBMBalanced, SortedSoftmaxGBMTrain):
        attack = cls(seed=seed, backend="sklearn")
        # fed in shuffled order and in pieces: the canonical order makes it irrelevant
        for name, logits in (("test", test), ("forget", forget), ("retain", retain)):
            order = torch.randperm(len(logits), generator=g)
            for chunk in order.split(97):
                attack.update(name, logits[chunk], torch.zeros(len(chunk), dtype=torch.long), chunk)
        results[cls.report] = attack.compute().item()

    def feat(logits):
        return np.sort(torch.softmax(logits.double(), dim=1).numpy(), axis=1)

    f, r, t = feat(forget), feat(retain), feat(test)
    n_members = min(len(f), 5024)
    chosen = np.sort(np.random.default_rng(seed).choice(len(r), size=n_members, replace=False))
    cut = 5024 if len(t) > 5024 else len(t) // 2
    x = np.concatenate([r[chosen], t[:cut]])
    y = np.concatenate([np.ones(n_members), np.zeros(cut)]).astype(np.int64)
    x_fit, _, y_fit, _ = train_test_split(x, y, test_size=0.01, shuffle=True, random_state=seed)
    model = HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.3,
        max_depth=6,
        max_leaf_nodes=None,
        min_samples_leaf=1,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    ).fit(x_fit, y_fit)
    non_members = t[cut : cut + 32 * math.ceil(len(f) / 32)]
    x_eval = np.concatenate([f, non_members])
    y_eval = np.concatenate([np.ones(len(f)), np.zeros(len(non_members))]).astype(np.int64)
    assert results["eval"] == float(np.mean(model.predict(x_eval) == y_eval))
    assert results["train"] == float(np.mean(model.predict(x_fit) == y_fit))
    ones, zeros = np.flatnonzero(y_eval == 1), np.flatnonzero(y_eval == 0)
    n = min(len(ones), len(zeros))
    rng = np.random.default_rng([seed, 1])
    ones = rng.choice(ones, size=n, replace=False) if len(ones) > n else ones
    zeros = rng.choice(zeros, size=n, replace=False) if len(zeros) > n else zeros
    keep = np.sort(np.concatenate([ones, zeros]))
    assert results["balanced"] == float(np.mean(model.predict(x_eval[keep]) == y_eval[keep]))


def test_gbm_attacker_backends():
    model, backend = gbm_attacker(0, "sklearn")
    assert backend == "sklearn" and model.max_iter == 100 and model.learning_rate == 0.3
    try:
        import xgboost  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="xgboost"):
            gbm_attacker(0, "xgboost")
        assert gbm_attacker(0, "auto")[1] == "sklearn"
