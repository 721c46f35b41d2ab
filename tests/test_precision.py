"""The "Forget with Precision" family (pruning, activation reset, poisoning, hybrid) on tiny models and toy data."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
from data_factories import ToyDataModule
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from trainers import quiet_trainer

from lightning_unlearn.datamodules import RandomRemoval
from lightning_unlearn.methods.precision import (
    ActivationReset,
    Hybrid,
    Poison,
    PoisonFull,
    Pruning,
    PruningComplex,
    PruningLast,
    activation_layers,
    change_mask,
    flag_channels,
    kaiming_draw,
    linear_quantile,
    reinit,
)
from lightning_unlearn.models import load_classifier


def tiny(batch_norm: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1, batch_norm=batch_norm)


def toy(count: int = 20, batch_size: int = 16, **kwargs) -> ToyDataModule:
    return ToyDataModule(scenario=RandomRemoval(count=count), batch_size=batch_size, **kwargs)


def trainer(tmp_path, max_epochs: int, callbacks=None, **kwargs) -> Trainer:
    options = dict(num_sanity_val_steps=0, reload_dataloaders_every_n_epochs=1, callbacks=callbacks or [])
    return quiet_trainer(tmp_path, **{**options, "max_epochs": max_epochs, **kwargs})


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def perturb(network: nn.Module, seed: int, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# -------------------------------------------------------------------- change mask, quantile, re-initialisation
def test_linear_quantile_matches_torch_quantile():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 100, 1001):
        x = torch.randn(n, generator=g)
        for q in (0.0, 0.2, 0.3, 0.5, 0.99, 1.0):
            assert torch.equal(linear_quantile(x, q), torch.quantile(x, q))


def test_change_mask_resets_exactly_the_least_changed_entries():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(7, 9, generator=g)
    n = w0.numel()
    magnitudes = (torch.randperm(n, generator=g).float() + 1) * 0.01
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    w_copy = w0 + (magnitudes * signs).view_as(w0)
    q = 0.3
    assert (q * (n - 1)) % 1 != 0
    mask = change_mask(w0, w_copy, q)
    expected_count = math.floor(q * (n - 1)) + 1
    d = (w0 - w_copy).abs()
    smallest = d.flatten().argsort()[:expected_count]
    expected = torch.zeros(n, dtype=torch.bool)
    expected[smallest] = True
    assert int(mask.sum()) == expected_count
    assert torch.equal(mask.flatten(), expected)

    w = w0.clone()
    assert reinit(w, mask, torch.Generator().manual_seed(5)) == expected_count
    fresh = torch.empty(7, 9)
    nn.init.kaiming_normal_(fresh, mode="fan_in", nonlinearity="relu", generator=torch.Generator().manual_seed(5))
    assert torch.equal(w[mask], fresh[mask])
    assert torch.equal(w[~mask], w0[~mask])


def test_change_mask_keeps_an_entry_equal_to_the_threshold_and_zero_change_is_empty():
    w0 = torch.zeros(11)
    w_copy = torch.arange(11.0)  # q (n - 1) = 3 exactly: tau = 3.0
    mask = change_mask(w0, w_copy, 0.3)
    assert mask.tolist() == [True, True, True] + [False] * 8
    assert not change_mask(w0, w0.clone(), 0.3).any()  # no change (reference preset, lr 0): dB == 0, tau == 0


def test_kaiming_draw_has_the_fan_in_std():
    w = torch.empty(64, 32, 3, 3)
    fresh = kaiming_draw(w, torch.Generator().manual_seed(0))
    assert fresh.std().item() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.02)


# ----------------------------------------------------------------------------------------------------- Pruning
def test_pruning_edits_every_tensor_with_two_dims_and_nothing_else():
    model = tiny(batch_norm=True)
    theta0 = snapshot(model)
    method = Pruning(model, seed=3)
    assert method.copy_forget is not None
    perturb(method.copy_forget, seed=0)
    method.apply_edit()
    params = dict(model.named_parameters())
    for name, value in model.state_dict().items():
        if name in params and params[name].dim() >= 2:
            changed = int((value != theta0[name]).sum())
            assert changed == math.floor(0.3 * (value.numel() - 1)) + 1, name
        else:
            assert torch.equal(value, theta0[name]), name


# ------------------------------------------------------------------------------------------------- PruningLast
def test_pruning_last_only_touches_the_head_weight():
    model = tiny(batch_norm=True)
    theta0 = snapshot(model)
    method = PruningLast(model)
    assert method.eligible_names() == ["fc2.weight"]
    perturb(method.copy_forget, seed=1)
    method.apply_edit()
    for name, value in model.state_dict().items():
        if name == "fc2.weight":
            assert int((value != theta0[name]).sum()) == math.floor(0.3 * (320 - 1)) + 1
        else:
            assert torch.equal(value, theta0[name]), name


# ---------------------------------------------------------------------------------------------- PruningComplex
def test_pruning_complex_resets_exactly_the_intersection():
    model = tiny(batch_norm=True)
    theta0 = snapshot(model)
    method = PruningComplex(model, seed=7)
    for copy in (method.copy_forget, method.copy_retain):
        assert copy is not model
        for k, v in copy.state_dict().items():
            assert torch.equal(v, theta0[k])
    perturb(method.copy_forget, seed=10)
    perturb(method.copy_retain, seed=11)
    a = dict(method.copy_forget.named_parameters())
    b = dict(method.copy_retain.named_parameters())
    generator = torch.Generator().manual_seed(7 + 1)
    expected = {}
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        mask = change_mask(p, a[name], 0.3) & change_mask(p, b[name], 0.3)
        expected[name] = torch.where(mask, kaiming_draw(p, generator), theta0[name])
    method.apply_edit()
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected.get(name, theta0[name])), name


def test_pruning_complex_reference_lr_is_zero_and_resets_nothing():
    method = PruningComplex(tiny(), preset="reference")
    assert method.retain_overfit_lr == 0.0
    assert PruningComplex(tiny()).retain_overfit_lr == pytest.approx(1e-2 / 3)
    assert PruningComplex(tiny(), preset="reference", retain_overfit_lr=0.5).retain_overfit_lr == 0.5


class ParamsUntilEdit(Callback):
    def __init__(self, theta0: dict[str, torch.Tensor]) -> None:
        self.theta0 = theta0
        self.unchanged: list[tuple[int, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        same = all(torch.equal(v, self.theta0[k]) for k, v in pl_module.model.state_dict().items())
        self.unchanged.append((trainer.current_epoch, same))


def test_pruning_complex_fit_keeps_theta0_until_the_edit_and_frees_copies(tmp_path):
    model = tiny(batch_norm=True)
    theta0 = snapshot(model)
    method = PruningComplex(model, overfit_epochs=1, retain_epochs=1, retain_sample_size=10, seed=0)
    probe = ParamsUntilEdit(theta0)
    trainer(tmp_path, 3, [probe]).fit(method, datamodule=toy())
    assert all(same for epoch, same in probe.unchanged if epoch < 2)
    assert not all(same for epoch, same in probe.unchanged if epoch == 2)
    assert method.copy_forget is None and method.copy_retain is None
    metrics = trainer_metrics = method.trainer.callback_metrics
    for key in ("prune/reset_count", "prune/mask_forget_fraction", "prune/mask_retain_fraction", "stage/index"):
        assert key in trainer_metrics, key
    assert metrics["train/overfit_forget/acc"] >= 0


# --------------------------------------------------------------------------------------------- ActivationReset
def test_flag_channels_threshold_is_strict():
    a_f = torch.zeros(2, 5, 5)
    a_r = torch.zeros(2, 5, 5)
    a_f[0].view(-1)[:20] = 1.0  # 20 > 0.8 * 25 is false
    a_f[1].view(-1)[:21] = 1.0  # 21 > 20 is true
    assert flag_channels(a_f, a_r, 0.8).tolist() == [False, True]


def test_activation_reset_edit_replaces_whole_filters_and_the_head_weight():
    model = tiny(batch_norm=True)
    theta0 = snapshot(model)
    method = ActivationReset(model, seed=4)
    assert method.layer_names == ["conv"]
    flags = torch.tensor([True, False, False, True, False, False, False, True])
    method.apply_edit({"conv": flags})
    g = torch.Generator().manual_seed(4 + 2)
    conv_fresh = kaiming_draw(model.conv.weight, g)
    head_fresh = kaiming_draw(model.fc2.weight, g)
    state = model.state_dict()
    assert torch.equal(state["conv.weight"][flags], conv_fresh[flags])
    assert torch.equal(state["conv.weight"][~flags], theta0["conv.weight"][~flags])
    assert torch.equal(state["fc2.weight"], head_fresh)
    for name in state:
        if name not in ("conv.weight", "fc2.weight"):
            assert torch.equal(state[name], theta0[name]), name


def test_activation_reset_reference_divisor_equals_corrected_rule_on_rescaled_retain_mean():
    g = torch.Generator().manual_seed(0)
    n_f, n_s, n_r = 10.0, 7.0, 350.0
    sum_f, sum_r = torch.randn(8, 4, 4, generator=g) * 5, torch.randn(8, 4, 4, generator=g) * 5
    captured = {}
    for divisor in ("retain_set", "sample"):
        method = ActivationReset(tiny(), retain_mean_divisor=divisor)
        method._retain_size = int(n_r)
        method._sums = {"forget": {"conv": sum_f.double()}, "retain_sample": {"conv": sum_r.double()}}
        method._counts = torch.tensor([n_f, n_s], dtype=torch.float64)
        method.apply_edit = lambda flags, d=divisor: captured.__setitem__(d, flags["conv"])  # type: ignore[method-assign]
        method.stage_end(method.active_stages()[0])
    a_f, a_r = sum_f.double() / n_f, sum_r.double() / n_s
    assert torch.equal(captured["sample"], flag_channels(a_f, a_r, 0.8))
    assert torch.equal(captured["retain_set"], flag_channels(a_f, a_r * n_s / n_r, 0.8))


def test_activation_reset_layer_sets_on_resnet18():
    model = load_classifier("cifar_resnet18", 10)
    reference = activation_layers(model, "name_conv")
    corrected = activation_layers(model, "all_conv")
    assert len(reference) == 17 and len(corrected) == 20
    assert sorted(set(corrected) - set(reference)) == [f"layer{k}.0.shortcut.0" for k in (2, 3, 4)]
    assert ActivationReset(model, preset="reference").layer_names == reference


@pytest.mark.parametrize("preset", ["corrected", "reference"])
def test_activation_reset_statistics_bn_mode(tmp_path, preset):
    model = tiny(batch_norm=True)
    theta0 = snapshot(model)
    method = ActivationReset(model, retain_epochs=0, retain_sample_size=20, preset=preset, toll=0.5)
    trainer(tmp_path, 1).fit(method, datamodule=toy())
    running = model.state_dict()["bn.running_mean"]
    assert torch.equal(running, theta0["bn.running_mean"]) == (preset == "corrected")
    metrics = method.trainer.callback_metrics
    assert metrics["actreset/head_reset"] == 1.0 and metrics["actreset/channels_total"] == 8.0


def test_activation_reset_reference_passes_every_forget_batch_before_the_retain_sample(tmp_path):
    """Train-mode BN: the final running statistics are those of all forget batches, then all retain batches."""
    import copy

    model = tiny(batch_norm=True)
    original = copy.deepcopy(model)
    seen: dict[str, list[torch.Tensor]] = {"forget": [], "retain_sample": []}

    class Spy(ActivationReset):
        def statistics_step(self, spec, batch, batch_idx):
            for split, inputs in seen.items():
                if batch.get(split) is not None:
                    inputs.append(self.split_batch(batch[split])[0].detach().clone())
            super().statistics_step(spec, batch, batch_idx)

    method = Spy(model, retain_epochs=0, retain_sample_size=40, preset="reference", toll=0.5)
    trainer(tmp_path, 1).fit(method, datamodule=toy(count=40, batch_size=16))
    assert [len(seen[s]) for s in seen] == [3, 3]  # 40 forget and 40 retain-sample inputs, batches of 16

    def hand_run(order: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        network = copy.deepcopy(original).train()
        with torch.no_grad():
            for x in order:
                network(x)
        return {k: v for k, v in network.state_dict().items() if k.startswith("bn.")}

    authors = hand_run(seen["forget"] + seen["retain_sample"])
    interleaved = hand_run([x for pair in zip(seen["forget"], seen["retain_sample"], strict=True) for x in pair])
    final = {k: v for k, v in model.state_dict().items() if k.startswith("bn.")}
    assert final.keys() == authors.keys() and int(final["bn.num_batches_tracked"]) == 6
    for key in authors:
        assert torch.equal(final[key], authors[key]), key
    assert not torch.allclose(authors["bn.running_mean"], interleaved["bn.running_mean"], rtol=0, atol=1e-6)
    assert method.trainer.callback_metrics["actreset/channels_total"] == 8.0


def test_activation_reset_reference_threshold_is_the_authors_left_to_right_product():
    """toll 0.48 on a 15 x 15 map: (0.48 * 15) * 15 = 107.99999999999999, 0.48 * 225 = 108; count 108 is the edge."""
    from lightning_unlearn.methods.activation_reset import flag_channels_authors

    toll, h, w = 0.48, 15, 15
    assert toll * h * w == 107.99999999999999 and toll * (h * w) == 108.0
    a_f, a_r = torch.zeros(3, h, w), torch.zeros(3, h, w)
    for channel, count in enumerate((107, 108, 109)):
        a_f[channel].view(-1)[:count] = 1.0
    # The authors' lines on these tensors: an int64 count against a Python float, compared in float32.
    comparison = torch.sum(a_f > a_r, (1, 2))
    authors = comparison > toll * a_f.shape[1] * a_f.shape[2]
    assert authors.tolist() == [False, False, True]  # float32(107.99999999999999) == 108: 108 is not flagged
    assert torch.equal(flag_channels_authors(a_f, a_r, toll), authors)
    assert flag_channels(a_f, a_r, toll).tolist() == [False, False, True]
    # Pinned to the authors' float32 comparison: a float64 default dtype does not flag count 108.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert (comparison > toll * h * w).tolist() == [False, True, True]  # what float64 would give
        assert flag_channels_authors(a_f, a_r, toll).tolist() == [False, False, True]
    finally:
        torch.set_default_dtype(default)
    # The reference preset's edit uses the authors' rule, the corrected default its own.
    captured = {}
    for preset in ("reference", "corrected"):
        method = ActivationReset(tiny(), preset=preset, toll=toll)
        method._retain_size = 5
        method._sums = {"forget": {"conv": a_f.double() * 5}, "retain_sample": {"conv": a_r.double()}}
        method._counts = torch.tensor([5.0, 5.0], dtype=torch.float64)
        method.apply_edit = lambda flags, p=preset: captured.__setitem__(p, flags["conv"])  # type: ignore[method-assign]
        method.stage_end(method.active_stages()[0])
    assert torch.equal(captured["reference"], flag_channels_authors(a_f.double(), a_r.double(), toll))
    assert torch.equal(captured["corrected"], flag_channels(a_f.double(), a_r.double(), toll))
    assert captured["reference"].tolist() == [False, False, True]


# ----------------------------------------------------------------- stage optimisers, schedules and step counts
class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict] = []


def recording(cls):
    class Recorded(cls):
        def stage_step(self, stage, batch, batch_idx, optimizer):
            inner = optimizer.optimizer
            group = inner.param_groups[0]
            self.recorder.rows.append(
                dict(
                    stage=stage.name,
                    epoch=self.current_epoch,
                    batch_idx=batch_idx,
                    opt=id(inner),
                    state=len(inner.state),
                    lr=group["lr"],
                    momentum=group["momentum"],
                    nesterov=group["nesterov"],
                    wd=group["weight_decay"],
                )
            )
            return super().stage_step(stage, batch, batch_idx, optimizer)

    return Recorded


def test_each_stage_gets_a_new_sgd_with_its_lr(tmp_path):
    method = recording(Hybrid)(tiny(), forget_lr=0.02, retain_lr=0.003, retain_epochs=2)
    method.recorder = Recorder()
    trainer(tmp_path, 3).fit(method, datamodule=toy())
    rows = method.recorder.rows
    firsts = {r["stage"]: r for r in rows if r["batch_idx"] == 0 and r["epoch"] in (0, 1)}
    assert firsts["poison"]["opt"] != firsts["recover"]["opt"]
    assert firsts["poison"]["state"] == 0 and firsts["recover"]["state"] == 0
    assert firsts["poison"]["lr"] == 0.02 and firsts["recover"]["lr"] == 0.003
    for r in rows:
        assert (r["momentum"], r["nesterov"], r["wd"]) == (0.9, True, 5e-4)
    # forget-only stage is not cycled: ceil(20 / 16) = 2 steps; retain: ceil(80 / 16) = 5 per epoch
    assert sum(r["stage"] == "poison" for r in rows) == 2
    assert sum(r["stage"] == "recover" for r in rows) == 10


class LrPerEpoch(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_poison_full_cosine_lr_per_epoch(tmp_path):
    probe = LrPerEpoch()
    trainer(tmp_path, 5, [probe]).fit(PoisonFull(tiny()), datamodule=toy())
    assert probe.lrs == pytest.approx([2.000e-3, 1.809e-3, 1.309e-3, 0.691e-3, 0.191e-3], abs=1e-6)


class BigToy(ToyDataModule):
    num_train: ClassVar[int] = 1100


def test_poison_on_1000_examples_takes_8_steps(tmp_path):
    fit = trainer(tmp_path, 1)
    method = Poison(tiny())
    fit.fit(method, datamodule=BigToy(scenario=RandomRemoval(count=1000), batch_size=128))
    assert fit.global_step == 8
    kept = float(fit.callback_metrics["poison/true_label_kept_fraction"])
    assert 0.02 < kept < 0.25  # about 1/C keep their label


def test_poison_epochs_must_match_max_epochs(tmp_path):
    with pytest.raises(ValueError, match="max_epochs=1"):
        trainer(tmp_path, 2).fit(Poison(tiny()), datamodule=toy())


# --------------------------------------------------------------------------------------- Poison: random labels
def test_random_labels_reproducible_per_seed_and_include_true_class():
    def labels(seed: int) -> torch.Tensor:
        method = Poison(tiny(), seed=seed)
        method.draw_labels(1000)
        return method.poison_draws.clone()

    assert torch.equal(labels(1), labels(1))  # same on every rank: a CPU generator seeded from `seed` only
    assert not torch.equal(labels(1), labels(2))
    drawn = labels(1)
    true = torch.arange(1000) % 10
    assert drawn.min() == 0 and drawn.max() == 9
    assert 0 < float((drawn == true).float().mean()) < 0.25
    method = Poison(tiny(), seed=1, exclude_true_label=True)
    method.draw_labels(1000)
    assert not bool((method.poisoned_labels(torch.arange(1000), true) == true).any())


def test_random_labels_fixed_across_epochs(tmp_path):
    class Recorded(Poison):
        seen: ClassVar[list[dict[int, int]]] = []

        def training_step(self, batch, batch_idx):
            x, y, index = self.labelled_batch(batch["forget"])
            if batch_idx == 0:
                self.seen.append({})
            self.seen[-1].update(zip(index.tolist(), self.poisoned_labels(index, y).tolist(), strict=True))
            return super().training_step(batch, batch_idx)

    method = Recorded(tiny(), epochs=3, seed=5)
    trainer(tmp_path, 3).fit(method, datamodule=toy())
    assert len(Recorded.seen) == 3 and Recorded.seen[0] == Recorded.seen[1] == Recorded.seen[2]
    assert len(Recorded.seen[0]) == 20


# ------------------------------------------------------------------------------------- PoisonFull: batch order
class CifarSizedToy(ToyDataModule):
    num_train: ClassVar[int] = 50_000


@pytest.mark.parametrize("preset", ["reference", "corrected"])
def test_poison_full_reference_ends_every_epoch_with_poisoned_only_batches(preset):
    method = PoisonFull(tiny(), preset=preset)
    data = CifarSizedToy(scenario=RandomRemoval(count=1000), seed=420, batch_size=128)
    data.setup("fit")
    method._retain_size = len(data.retain_indices)
    data.set_train_plan(method.train_plan(5))
    loader = data.train_dataloader()
    poisoned = [int((b["retain+forget"][2] >= 49_000).sum()) for b, *_ in loader]
    sizes = [len(b["retain+forget"][2]) for b, *_ in loader]
    assert len(poisoned) == 391 and sum(poisoned) == 1000
    if preset == "reference":
        assert poisoned[:382] == [0] * 382
        assert (poisoned[382], sizes[382]) == (24, 128)
        assert poisoned[383:] == sizes[383:] == [128] * 7 + [80]
    else:
        assert sum(p > 0 for p in poisoned[:382]) > 100


# --------------------------------------------------------------------------------- resuming an interrupted run
class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


@pytest.mark.parametrize("cls", [Hybrid, Pruning])
def test_interrupted_run_resumes_in_the_right_stage(tmp_path, cls):
    kwargs = (
        dict(forget_epochs=1, retain_epochs=2, forget_lr=0.02)
        if cls is Hybrid
        else dict(overfit_epochs=1, retain_epochs=2, overfit_lr=0.02)
    )
    later = "recover" if cls is Hybrid else "finetune"

    full = recording(cls)(tiny(), seed=0, **kwargs)
    full.recorder = Recorder()
    trainer(tmp_path / "full", 3).fit(full, datamodule=toy())

    first = recording(cls)(tiny(), seed=0, **kwargs)
    first.recorder = Recorder()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    trainer(tmp_path / "a", 3, [StopAfterFirstEpoch(), ckpt], enable_checkpointing=True).fit(first, datamodule=toy())
    assert {r["stage"] for r in first.recorder.rows} == ({"poison"} if cls is Hybrid else {"overfit_forget"})
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.exists()
    saved = torch.load(last, weights_only=True)
    assert not any(k.startswith("copy_forget.") for k in saved["state_dict"])  # freed after the edit

    resumed = recording(cls)(tiny(), seed=0, **kwargs)
    resumed.recorder = Recorder()
    trainer(tmp_path / "b", 3).fit(resumed, datamodule=toy(), ckpt_path=str(last))
    rows = resumed.recorder.rows
    assert {r["stage"] for r in rows} == {later}
    assert rows[0]["lr"] == 1e-3 and rows[0]["state"] == 0
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


# ------------------------------------------------------------------------------------------------------ misc
@pytest.mark.parametrize(
    "make",
    [
        lambda m: Hybrid(m, preset="reference", retain_epochs=1),
        lambda m: Pruning(m, overfit_epochs=1, retain_epochs=1),
        lambda m: PruningLast(m, overfit_epochs=1, retain_epochs=1, preset="reference"),
        lambda m: PruningComplex(m, overfit_epochs=1, retain_epochs=1, preset="reference", retain_sample_size=20),
        lambda m: ActivationReset(m, retain_epochs=1, retain_sample_size=20, preset="reference"),
    ],
)
def test_multistage_methods_fit_and_checkpoint_loads_weights_only(tmp_path, make):
    method = make(tiny())
    total = sum(s.epochs for s in method.active_stages())
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    trainer(tmp_path, total, [ckpt], enable_checkpointing=True).fit(method, datamodule=toy())
    torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert int(method.completed_stages) == len(method.active_stages())


def test_reference_pruning_complex_resets_nothing(tmp_path):
    model = tiny()
    method = PruningComplex(model, overfit_epochs=1, retain_epochs=0, retain_sample_size=20, preset="reference")
    trainer(tmp_path, 2).fit(method, datamodule=toy())
    assert method.trainer.callback_metrics["prune/reset_count"] == 0.0


def test_wrong_max_epochs_and_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="max_epochs=6"):
        trainer(tmp_path, 3).fit(Hybrid(tiny()), datamodule=toy())
    with pytest.raises(ValueError, match="quantile"):
        Pruning(tiny(), quantile=1.0)
    with pytest.raises(ValueError, match="toll"):
        ActivationReset(tiny(), toll=0.0)
    with pytest.raises(ValueError, match="preset"):
        Hybrid(tiny(), preset="paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layers"):
        ActivationReset(tiny(), layers="every")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retain_fraction"):
        PruningComplex(tiny(), retain_fraction=0.0)
    with pytest.raises(ValueError, match="retain sample size"):
        trainer(tmp_path, 6).fit(ActivationReset(tiny(), retain_sample_size=1000), datamodule=toy())
