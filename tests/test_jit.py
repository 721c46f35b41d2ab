"""JiT: zero-shot data, one pass, step count, loss arithmetic and the reference quirks."""

from __future__ import annotations

import math

import pytest
import torch
from data_factories import ToyDataModule
from lightning.pytorch import Trainer
from torch import nn
from trainers import exit_without_teardown, quiet_trainer

from lightning_unlearn.callbacks import UnlearningCost
from lightning_unlearn.datamodules import RandomRemoval
from lightning_unlearn.datamodules.base import SplitDataset
from lightning_unlearn.methods.jit import JiT
from lightning_unlearn.models import load_classifier
from lightning_unlearn.models.normalize import Normalize


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return load_classifier("tiny_cnn", 10, in_channels=1, mean=(0.4,), std=(0.3,))


def make_trainer(tmp_path, **kwargs) -> Trainer:
    return quiet_trainer(tmp_path, **{"limit_val_batches": 0, **kwargs})


class RaisingDataset(SplitDataset):
    def __getitem__(self, i):
        raise AssertionError("JiT read the retain set")

    def __getitems__(self, indices):
        raise AssertionError("JiT read the retain set")


class ZeroShotData(ToyDataModule):
    """Any split that touches retain data raises on access; forget labels are absent from JiT's batches."""

    def split_dataset(self, name, labelled=True, with_index=False, **kwargs):
        dataset = super().split_dataset(name, labelled, with_index, **kwargs)
        if any(part in ("retain", "full", "retain_labelled", "retain_sample") for part in name.split("+")):
            return RaisingDataset(dataset.images, dataset.positions, dataset.targets, labelled=labelled)
        return dataset


class CountingSGD(torch.optim.SGD):
    def __init__(self, params, lr: float = 1e-3) -> None:
        super().__init__(params, lr=lr)
        self.zero_grad_calls = 0
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.zero_grad_calls += 1
        super().zero_grad(set_to_none)

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


@pytest.mark.parametrize(("preset", "zero_grads"), [("default", 5), ("reference", 1)])
def test_jit_is_zero_shot_and_steps_once_per_forget_batch(preset, zero_grads, tmp_path):
    optimizers: list[CountingSGD] = []

    def factory(params):
        optimizers.append(CountingSGD(params, lr=1e-3))
        return optimizers[-1]

    data = ZeroShotData(scenario=RandomRemoval(count=37), batch_size=8)
    method = JiT(tiny_model(), sigma=0.5, n_perturbations=3, optimizer=factory, preset=preset)
    trainer = make_trainer(tmp_path, callbacks=[UnlearningCost()])
    trainer.fit(method, datamodule=data)
    steps = math.ceil(37 / 8)
    assert trainer.global_step == steps
    assert optimizers[0].steps == steps
    assert optimizers[0].zero_grad_calls == zero_grads
    assert float(trainer.callback_metrics["cost/optimizer_steps"]) == steps
    assert float(trainer.callback_metrics["cost/unlearn_time_s"]) > 0
    for name in ("jit/lipschitz_loss", "jit/ratio_mean", "jit/input_dist_mean", "jit/output_dist_mean"):
        assert name in trainer.callback_metrics
    with pytest.raises(AssertionError, match="retain"):
        data.split_dataset("retain")[0]


def test_jit_changes_the_model_and_rejects_more_than_one_epoch(tmp_path):
    model = tiny_model()
    before = [p.clone() for p in model.parameters()]
    data = ToyDataModule(scenario=RandomRemoval(count=20), batch_size=10)
    make_trainer(tmp_path).fit(JiT(model, lr=1e-2, n_perturbations=2), datamodule=data)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="max_epochs=1"):
        make_trainer(tmp_path, max_epochs=2).fit(JiT(tiny_model()), datamodule=data)


def _manual_loss(model, x, sigma, noises, clip):
    """The Lipschitz loss computed by hand: perturb and clip in normalised space, ratio of plain L2 norms."""
    norm = model.normalize
    mean, std = norm.mean.view(1, -1, 1, 1), norm.std.view(1, -1, 1, 1)
    z = (x - mean) / std
    out = model(x)
    if clip == "sample":
        lo = z.flatten(1).min(1).values.view(-1, 1, 1, 1)
        hi = z.flatten(1).max(1).values.view(-1, 1, 1, 1)
    else:
        lo, hi = z.min(), z.max()
    loss = 0.0
    for noise in noises:
        z2 = torch.clamp(z + sigma * noise, lo, hi)
        with torch.no_grad():
            out2 = model(mean + std * z2)
        loss = (
            loss
            + (torch.linalg.vector_norm(out - out2, dim=1) / torch.linalg.vector_norm((z - z2).flatten(1), dim=1)).sum()
        )
    return loss / len(noises)


@pytest.mark.parametrize("clip", ["sample", "batch"])
def test_lipschitz_loss_matches_a_hand_computation(clip):
    model = tiny_model().eval()
    assert isinstance(model.normalize, Normalize)
    x = torch.rand(6, 1, 4, 4)
    method = JiT(model, sigma=0.7, n_perturbations=4, clip=clip, seed=3)
    method._generator = torch.Generator().manual_seed(11)
    loss, stats = method.lipschitz_loss(x)
    generator = torch.Generator().manual_seed(11)
    noises = [torch.randn(x.shape, generator=generator) for _ in range(4)]
    torch.testing.assert_close(loss, _manual_loss(model, x, 0.7, noises, clip))
    assert stats["input_dist_mean"] > 0 and stats["output_dist_mean"] > 0


def test_reference_noise_uses_the_global_cpu_rng():
    model = tiny_model().eval()
    x = torch.rand(3, 1, 4, 4)
    method = JiT(model, sigma=0.5, n_perturbations=2, preset="reference")
    assert method.hparams["clip"] == "batch" and method.hparams["model_mode"] == "train"
    assert method.hparams["accumulate_grads"] is True and method.hparams["noise_rng"] == "global_cpu"
    torch.manual_seed(5)
    loss, _ = method.lipschitz_loss(x)
    torch.manual_seed(5)
    noises = [torch.randn(x.shape) for _ in range(2)]
    torch.testing.assert_close(loss, _manual_loss(model, x, 0.5, noises, "batch"))


def test_switches_override_the_preset_and_mean_reduction():
    method = JiT(tiny_model(), preset="reference", clip="none", reduction="mean")
    assert method.hparams["clip"] == "none" and method.hparams["reduction"] == "mean"
    assert method.hparams["model_mode"] == "train"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0.0}, "sigma"),
        ({"lr": -1.0}, "lr"),
        ({"n_perturbations": 0}, "n_perturbations"),
        ({"preset": "paper"}, "preset"),
        ({"clip": "pixel"}, "clip"),
        ({"model_mode": "test"}, "model_mode"),
        ({"noise_rng": "cuda"}, "noise_rng"),
        ({"reduction": "max"}, "reduction"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JiT(tiny_model(), **kwargs)


# ------------------------------------------------------------------------------------------------------------- DDP
class _Recording(JiT):
    """Records the training index (pixel (0, 0, 0) of the toy images) of every forget sample it steps on."""

    def lipschitz_loss(self, x, denominator=None):
        self.seen = getattr(self, "seen", []) + [(x[:, 0, 0, 0] * 255).round().long().tolist()]
        return super().lipschitz_loss(x, denominator)


def _ddp_run(devices: int, out: str) -> None:
    data = ToyDataModule(scenario=RandomRemoval(count=37), batch_size=8)
    method = _Recording(tiny_model(), sigma=0.5, n_perturbations=2)
    trainer = make_trainer(out + ".d", devices=devices, strategy="ddp" if devices > 1 else "auto")
    trainer.fit(method, datamodule=data)
    forget = sorted(int(data.split_dataset("forget")[i][0][0, 0, 0] * 255 + 0.5) for i in range(37))
    torch.save({"seen": method.seen, "steps": trainer.global_step, "forget": forget}, f"{out}.{trainer.global_rank}")


@pytest.mark.slow
def test_two_gloo_processes_step_once_per_global_batch_on_every_sample_once(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = str(tmp_path / "r")
    command = [sys.executable, __file__, "--devices", "2", "--out", out]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in range(2)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == math.ceil(37 / 8)
    seen = [i for r in ranks for batch in r["seen"] for i in batch]
    assert sorted(seen) == ranks[0]["forget"]  # every forget sample exactly once, no padding
    for k in range(math.ceil(37 / 8)):  # global batch k = unshuffled positions [8k, 8k + 8)
        assert len(ranks[0]["seen"][k]) + len(ranks[1]["seen"][k]) == min(8, 37 - 8 * k)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    _ddp_run(args.devices, args.out)
    exit_without_teardown()
