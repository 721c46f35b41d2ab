"""SalUn (saliency mask + masked random-label training) and l1-sparse: hand-computed values and behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_cli import tiny_config
from torch import nn

from lightning_unlearn.main import main
from lightning_unlearn.methods import L1Sparse, SalUn
from lightning_unlearn.methods.l1_sparse import l1_alpha, l1_norm
from lightning_unlearn.methods.saliency import SaliencyMask, forget_gradient_sum, saliency_mask
from lightning_unlearn.models import load_classifier
from lightning_unlearn.presets import CONFIG_ROOT

# ---------------------------------------------------------------------------------------------- saliency mask


def _two_batch_saliency() -> dict[str, torch.Tensor]:
    g1 = {"a.weight": torch.tensor([[0.75, -0.25, 0.5], [-0.5, 0.25, 0.25]]), "b.bias": torch.tensor([0.25, -0.5])}
    g2 = {"a.weight": torch.tensor([[-0.25, 0.25, 0.5], [-0.25, 0.25, 0.5]]), "b.bias": torch.tensor([0.25, 0.25])}
    return {k: (g1[k] + g2[k]).abs() for k in g1}


def test_mask_of_constructed_gradients_is_global_topk_with_stable_ties():
    saliency = _two_batch_saliency()
    assert torch.equal(saliency["a.weight"], torch.tensor([[0.5, 0.0, 1.0], [0.75, 0.5, 0.75]]))
    masks, threshold = saliency_mask(saliency, 0.5)
    assert masks["a.weight"].tolist() == [[True, False, True], [True, False, True]]
    assert masks["b.bias"].tolist() == [False, False]
    assert threshold == 0.5
    wide, _ = saliency_mask(saliency, 0.5, selection="threshold")  # every tie at the threshold kept: 6 ones
    assert wide["a.weight"].tolist() == [[True, False, True], [True, True, True]]
    assert wide["b.bias"].tolist() == [True, False]
    quarter, _ = saliency_mask(saliency, 0.25)
    assert quarter["a.weight"].tolist() == [[False, False, True], [True, False, False]]
    assert not quarter["b.bias"].any()
    full, _ = saliency_mask(saliency, 1.0)
    assert all(m.all() for m in full.values())
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            saliency_mask(saliency, bad)
    with pytest.raises(ValueError, match="topk"):
        saliency_mask(saliency, 0.5, selection="best")


def test_saliency_of_a_linear_model_end_to_end():
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        model.bias.zero_()
    model.eval()
    batches = [
        (torch.tensor([[2.0, 0.0]]), torch.tensor([1])),
        (torch.tensor([[0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 2])),
    ]
    # The authors' statistic: |sum over batches of the batch-mean gradient|; per-batch sums rescaled give it here.
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for x, y in batches:
        for n, g in forget_gradient_sum(model, x, y).items():
            total[n] += g / len(x)
    saliency = {n: g.abs() for n, g in total.items()}
    expected_w = torch.tensor([[1.785131, 0.182870], [1.575827, 0.499218], [0.209305, 0.316348]])
    assert torch.allclose(saliency["weight"], expected_w, atol=1e-6)
    assert torch.allclose(saliency["bias"], torch.tensor([0.604116, 0.394275, 0.209841]), atol=1e-6)
    masks, _ = saliency_mask(saliency, 0.5)
    assert masks["weight"].tolist() == [[True, False], [True, True], [False, False]]
    assert masks["bias"].tolist() == [True, False, False]
    one, _ = saliency_mask(saliency, 0.2)
    assert one["weight"].sum() == 1 and bool(one["weight"][0, 0]) and not one["bias"].any()


def _masked_sgd(legacy: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    model = nn.Module()
    model.register_parameter("p", p)
    mask = SaliencyMask({"p": (2,)})
    mask.fill({"p": torch.tensor([1, 0])})
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
    seen = []
    for _ in range(2):
        opt.zero_grad()
        p.grad = torch.tensor([0.5, 0.5])
        mask.mask_gradients(model)
        before = mask.snapshot(model)
        opt.step()
        if not legacy:
            mask.restore(model, before, opt)
        seen.append(p.detach().clone())
    return seen, opt.state[p]["momentum_buffer"]


def test_masked_sgd_keeps_masked_out_weights_bitwise():
    (step1, step2), momentum = _masked_sgd(legacy=False)
    assert torch.allclose(step1, torch.tensor([0.94995, -2.0]))
    assert torch.allclose(step2, torch.tensor([0.8548575, -2.0]))
    assert step2[1].item() == -2.0 and momentum[1].item() == 0.0
    (l1, l2), legacy_momentum = _masked_sgd(legacy=True)  # paper-era: only the gradient masked
    assert torch.allclose(l1, torch.tensor([0.94995, -1.9999]))
    assert torch.allclose(l2, torch.tensor([0.8548575, -1.99971]))
    assert torch.allclose(legacy_momentum, torch.tensor([0.950925, -0.00189995]))


def test_mask_is_reusable_for_masked_gradient_ascent(tmp_path):
    """The saliency pieces drive any gradient loop: a masked gradient ascent moves only the masked-in weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    saliency = {n: g.abs() for n, g in forget_gradient_sum(model, x, y).items()}
    mask = SaliencyMask.from_saliency(saliency, 0.3)
    assert mask.num_selected() == int(mask.num_entries() * 0.3)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        opt.zero_grad()
        (-nn.functional.cross_entropy(model(x), y)).backward()
        mask.mask_gradients(model)
        before = mask.snapshot(model)
        opt.step()
        mask.restore(model, before, opt)
    for name, p in model.named_parameters():
        m = mask.get(name)
        assert torch.equal(p[~m], original[name][~m]), name
    assert any(not torch.equal(p[mask.get(n)], original[n][mask.get(n)]) for n, p in model.named_parameters())
    mask.save(tmp_path / "m.pt", ratio=0.3)
    read = SaliencyMask.read(tmp_path / "m.pt")
    assert all(torch.equal(read[n], mask.get(n)) for n in mask.names)
    with pytest.raises(ValueError, match="shape"):
        SaliencyMask.for_model(model).fill({**read, "0.weight": torch.ones(2, 2)})


# ---------------------------------------------------------------------------------------------- l1-sparse


def test_l1_schedule_and_norm():
    assert [l1_alpha(1e-4, e, 10) for e in range(10)] == pytest.approx([1e-4 * (1 - e / 10) for e in range(10)])
    assert l1_alpha(1e-4, 9, 10) == pytest.approx(1e-5)
    two = [l1_alpha(1e-4, e, 10, 2) for e in range(10)]
    assert two == pytest.approx([1e-4, 8.75e-5, 7.5e-5, 6.25e-5, 5e-5, 3.75e-5, 2.5e-5, 1.25e-5, 0, 0])
    assert [l1_alpha(1e-4, e, 10, 10) for e in range(10)] == [0.0] * 10
    assert [l1_alpha(1e-4, e, 10, 10, "constant") for e in range(10)] == [1e-4] * 10
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0]], requires_grad=True)
    b = torch.tensor([-1.0, 0.25], requires_grad=True)
    norm = l1_norm([w, b])
    assert norm.item() == 4.75
    norm.backward()
    assert w.grad.tolist() == [[1.0, -1.0], [1.0, 0.0]] and b.grad.tolist() == [-1.0, 1.0]


def test_l1sparse_arguments_are_checked():
    model = load_classifier("tiny_cnn", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="zero"):
        L1Sparse(model, l1_all_off="never")
    with pytest.raises(ValueError, match="no_l1_epochs"):
        L1Sparse(model, epochs=3, no_l1_epochs=4)
    with pytest.raises(ValueError, match="alternate"):
        SalUn(model, schedule="concat_all")  # allowed: alternate, joint, sequential
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        SalUn(model, mask_ratio=0.0)


# ---------------------------------------------------------------------------------------------- through the CLI


def _tiny(name: str, tmp_path: Path, **method: object) -> Path:
    config = tiny_config(CONFIG_ROOT / "mnist5k" / "class_removal" / f"{name}.yaml", tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["init_args"].update(method)
    if name == "salun":
        cfg["trainer"]["max_epochs"] = 1 + int(cfg["model"]["init_args"]["epochs"])
    else:
        cfg["trainer"]["max_epochs"] = int(cfg["model"]["init_args"]["epochs"])
    cfg["trainer"]["logger"] = False
    cfg["trainer"]["enable_progress_bar"] = False
    cfg["trainer"]["limit_val_batches"] = 1
    config.write_text(yaml.safe_dump(cfg))
    return config


def _fit(config: Path, root: Path, *extra: str):
    return main(["fit", "--config", str(config), f"--trainer.default_root_dir={root}", *extra])


@pytest.mark.slow  # a few tiny CLI fits
def test_salun_moves_only_masked_weights_and_saves_the_mask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    config = _tiny("salun", tmp_path, epochs=2, mask_ratio=0.3)
    cli = main(["--config", str(config), f"--trainer.default_root_dir={tmp_path / 'run'}"], run=False)
    original = {n: p.detach().clone() for n, p in cli.model.model.named_parameters()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    method = cli.model
    assert bool(method.saliency_mask.ready)
    assert method.saliency_mask.num_selected() == int(method.saliency_mask.num_entries() * 0.3)
    changed = 0
    for name, p in method.model.named_parameters():
        m = method.saliency_mask.get(name)
        assert torch.equal(p.detach()[~m], original[name][~m]), name
        changed += int((p.detach()[m] != original[name][m]).sum())
    assert changed > 0
    saved = torch.load(tmp_path / "run" / "salun_mask.pt", weights_only=True)
    assert saved["format_version"] == 1 and saved["ratio"] == 0.3
    assert all(torch.equal(saved["mask"][n], m) for n, m in method.saliency_mask.items())
    assert float(cli.trainer.callback_metrics["salun/true_label_kept_fraction"]) == 0.0


@pytest.mark.slow  # a few tiny CLI fits
def test_salun_resumes_in_the_unlearn_stage_with_the_same_mask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    config = _tiny("salun", tmp_path, epochs=2)
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"every_n_epochs": 1, "save_top_k": -1, "filename": "{epoch}"},
        }
    ]
    config.write_text(yaml.safe_dump(cfg))
    full = _fit(config, tmp_path / "a")
    stage_ckpt = next((tmp_path / "a").rglob("epoch=0.ckpt"))  # the end of the saliency stage
    state = torch.load(stage_ckpt, weights_only=True)["state_dict"]
    assert bool(state["saliency_mask.ready"]) and int(state["completed_stages"]) == 1
    calls = []
    monkeypatch.setattr(SalUn, "_accumulate", lambda self, batch: calls.append(1))
    resumed = _fit(config, tmp_path / "b", f"--ckpt_path={stage_ckpt}")
    assert not calls, "the saliency pass ran again after resuming in the unlearn stage"
    assert resumed.trainer.current_epoch == full.trainer.current_epoch
    for (name, m), (_, m2) in zip(full.model.saliency_mask.items(), resumed.model.saliency_mask.items(), strict=True):
        assert torch.equal(m, m2), name
    for key, value in full.model.model.state_dict().items():
        assert torch.allclose(value.float(), resumed.model.model.state_dict()[key].float(), atol=1e-6), key


@pytest.mark.slow  # a few tiny CLI fits
def test_salun_with_a_given_mask_skips_the_saliency_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    model = load_classifier("tiny_cnn", num_classes=10, in_channels=1)
    masks = {n: (torch.rand(p.shape) < 0.5).long() for n, p in model.named_parameters()}
    torch.save(masks, tmp_path / "mask.pt")
    config = _tiny("salun", tmp_path, epochs=1, mask=str(tmp_path / "mask.pt"))
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["max_epochs"] = 1
    config.write_text(yaml.safe_dump(cfg))
    cli = _fit(config, tmp_path / "run")
    assert [s.name for s in cli.model.active_stages()] == ["unlearn"]
    assert all(torch.equal(cli.model.saliency_mask.get(n), m.bool()) for n, m in masks.items())


@pytest.mark.slow  # a few tiny CLI fits
def test_l1sparse_logs_the_schedule_per_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    config = _tiny("l1_sparse", tmp_path, epochs=4, alpha=0.01, no_l1_epochs=1)
    seen: list[float] = []
    original = L1Sparse.alpha_at
    monkeypatch.setattr(L1Sparse, "alpha_at", lambda self, e: seen.append(original(self, e)) or seen[-1])
    _fit(config, tmp_path / "run")
    per_epoch = sorted(set(seen), reverse=True)
    assert per_epoch == pytest.approx([0.01, 0.01 * 2 / 3, 0.01 / 3, 0.0])
    with pytest.raises(ValueError, match="max_epochs"):
        _fit(config, tmp_path / "bad", "--trainer.max_epochs=3")


# ---------------------------------------------------------------------------------------------- reference preset
def _toy_fit(tmp_path, method: SalUn, epochs: int, batch_size: int = 16):
    from data_factories import ToyDataModule
    from trainers import quiet_trainer

    from lightning_unlearn.datamodules import ClassRemoval

    trainer = quiet_trainer(
        tmp_path, max_epochs=epochs, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0, limit_val_batches=0
    )
    trainer.fit(method, datamodule=ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=batch_size))
    return trainer


def test_reference_preset_resolves_the_authors_choices():
    model = load_classifier("tiny_cnn", num_classes=10, in_channels=1)
    ref = SalUn(model, preset="reference", epochs=2)
    assert (ref.schedule, ref.random_label, ref.fresh_labels, ref.saliency_reduction) == (
        "sequential",
        "uniform",
        True,
        "batch_mean",
    )
    assert [s.name for s in ref.active_stages()] == ["saliency", "forget1", "retain1", "forget2", "retain2"]
    assert [s.phase.splits for s in ref.active_stages()[1:3]] == [("forget",), ("retain",)]
    assert ref.active_stages()[0].phase.shuffle is True
    default = SalUn(model)
    assert (default.schedule, default.random_label, default.fresh_labels, default.saliency_reduction) == (
        "alternate",
        "other",
        False,
        "sample_sum",
    )
    assert default.active_stages()[0].phase.shuffle is False
    mixed = SalUn(model, preset="reference", schedule="alternate", random_label="other")  # explicit values win
    assert (mixed.schedule, mixed.random_label, mixed.fresh_labels) == ("alternate", "other", True)
    with pytest.raises(ValueError, match="preset must be one of"):
        SalUn(model, preset="paper")  # type: ignore[arg-type]


def test_batch_mean_saliency_is_the_signed_sum_of_batch_mean_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    method = SalUn(model, saliency_reduction="batch_mean")
    x = torch.randn(5, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1])
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # a short last batch weighs as much as a full one
    for bx, by in batches:
        method._accumulate({"forget": (bx, by, torch.arange(len(bx)))})
    expected = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in model.named_parameters()}
    for bx, by in batches:
        model.zero_grad()
        nn.functional.cross_entropy(model(bx), by).backward()  # the batch mean
        for n, p in model.named_parameters():
            expected[n] += p.grad.double()
    for name, value in expected.items():
        torch.testing.assert_close(method._sums[name], value)
    assert method._count == 2  # batches, not samples: only the scale of the statistic, not the ranking
    per_sample = SalUn(model)
    for bx, by in batches:
        per_sample._accumulate({"forget": (bx, by, torch.arange(len(bx)))})
    assert per_sample._count == 5
    assert not all(
        torch.allclose(per_sample._sums[n] / 5, expected[n].abs() / 2) for n in expected
    )  # the two statistics differ on this batch split


def test_fresh_labels_change_every_step_and_repeat_after_a_resume():
    model = load_classifier("tiny_cnn", num_classes=10, in_channels=1)
    method = SalUn(model, preset="reference", seed=3)
    y = torch.arange(10).repeat(20)
    draws = []
    for step in (0, 1, 0):  # no trainer attached: the step is patched in
        type(method).global_step = property(lambda self, s=step: s)  # type: ignore[assignment]
        draws.append(method._fresh_labels(y))
    del type(method).global_step
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])
    assert (draws[0] == y).any()  # uniform over all classes: the true label can come back
    other = SalUn(model, preset="reference", random_label="other", seed=3)
    type(other).global_step = property(lambda self: 5)  # type: ignore[assignment]
    try:
        assert not (other._fresh_labels(y) == y).any()
    finally:
        del type(other).global_step


def test_reference_preset_fits_pass_by_pass_with_one_optimiser_and_keeps_unmasked_weights(tmp_path):
    torch.manual_seed(0)
    model = load_classifier("tiny_cnn", num_classes=10, in_channels=1)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = SalUn(model, preset="reference", epochs=2, mask_ratio=0.4, lr=0.05)
    seen: list[tuple[str, tuple[str, ...]]] = []
    step = method.stage_step

    def record(stage, batch, batch_idx, optimizer):
        seen.append((stage.name, tuple(sorted(batch))))
        return step(stage, batch, batch_idx, optimizer)

    method.stage_step = record  # type: ignore[method-assign]
    trainer = _toy_fit(tmp_path, method, epochs=5)
    names = [name for name, _ in seen]
    assert names == sorted(names, key=["saliency", "forget1", "retain1", "forget2", "retain2"].index)
    assert {keys for name, keys in seen if name.startswith("forget")} == {("forget",)}
    assert {keys for name, keys in seen if name.startswith("retain")} == {("retain",)}
    assert not isinstance(method.optimizers(), list)  # one optimiser shared by every pass
    training_batches = sum(1 for name in names if name != "saliency")
    assert trainer.global_step == training_batches + 1  # + the saliency stage, counted as one step
    for name, p in method.model.named_parameters():
        m = method.saliency_mask.get(name)
        assert torch.equal(p.detach()[~m], original[name][~m]), name
    assert any(not torch.equal(p.detach(), original[n]) for n, p in method.model.named_parameters())
