"""SSD and LFSSD: the hand-built edit, thresholds, importances against hand computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from data_factories import ToyDataModule
from lightning.pytorch import Trainer
from torch import nn
from trainers import exit_without_teardown, quiet_trainer

from lightning_unlearn.callbacks import UnlearningCost
from lightning_unlearn.datamodules import ClassRemoval, RandomRemoval
from lightning_unlearn.methods.ssd import LFSSD, SSD, GlobalBatches, dampen_, per_rank_batch_size
from lightning_unlearn.models import load_classifier

THETA = [1.0, 2.0, -3.0, 4.0, 5.0, 6.0]
I_D = [1.0, 1.0, 0.5, 0.0, 0.0, 1.0]
I_F = [5.0, 20.0, 10.0, 1.0, 0.0, 10.0]


class Theta(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(THETA))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :6] * self.theta


def make_trainer(tmp_path, **kwargs) -> Trainer:
    return quiet_trainer(tmp_path, **kwargs)


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 10))


@pytest.mark.parametrize(
    ("alpha", "lambda_", "expected", "selected", "dampened", "zeroed"),
    [
        (10.0, 1.0, [1.0, 0.1, -0.15, 0.0, 5.0, 6.0], 3 / 6, 3 / 6, 1),
        (2.0, 50.0, [1.0, 2.0, -3.0, 0.0, 5.0, 6.0], 5 / 6, 1 / 6, 1),
    ],
)
def test_hand_built_edit(alpha, lambda_, expected, selected, dampened, zeroed):
    theta = torch.tensor(THETA)
    mask, beta = dampen_(theta, torch.tensor(I_D), torch.tensor(I_F), alpha, lambda_)
    torch.testing.assert_close(theta, torch.tensor(expected))
    assert float(mask.float().mean()) == pytest.approx(selected)
    if alpha == 10.0:
        assert not bool(mask[5])  # the tie I_f = alpha * I_D is not selected
    method = SSD(Theta(), alpha=alpha, lambda_=lambda_)
    stats = method.dampen({"theta": torch.tensor(I_D)}, {"theta": torch.tensor(I_F)})
    torch.testing.assert_close(method.model.theta.data, torch.tensor(expected))
    assert stats["selected_fraction"] == pytest.approx(selected)
    assert stats["dampened_fraction"] == pytest.approx(dampened)
    assert stats["zeroed_count"] == zeroed


def test_unselected_parameters_are_bit_identical():
    theta = torch.randn(1000)
    original = theta.clone()
    i_d = torch.rand(1000)
    i_f = torch.rand(1000)
    mask, _ = dampen_(theta, i_d, i_f, 1.0, 0.5)
    assert torch.equal(theta[~mask], original[~mask])
    assert mask.any()


def _hand_importance(model: nn.Module, dataset, batch_size: int, label_free: bool) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared (SSD) or absolute (LFSSD) batch-mean gradient, by the closed form."""
    linear = model[1]
    weight, bias = linear.weight.detach().double(), linear.bias.detach().double()
    acc_w, acc_b = torch.zeros_like(weight), torch.zeros_like(bias)
    n = len(dataset)
    batches = math.ceil(n / batch_size)
    for k in range(batches):
        items = [dataset[i] for i in range(k * batch_size, min((k + 1) * batch_size, n))]
        x = torch.stack([it[0] if isinstance(it, tuple) else it for it in items]).flatten(1).double()
        logits = x @ weight.T + bias
        if label_free:
            delta = 2 * logits / len(x)  # d/dlogits of mean ||logits||^2
        else:
            y = torch.stack([it[1] for it in items])
            delta = (logits.softmax(dim=1) - F.one_hot(y, 10).double()) / len(x)
        g_w, g_b = delta.T @ x, delta.sum(dim=0)
        acc_w += g_w.abs() if label_free else g_w**2
        acc_b += g_b.abs() if label_free else g_b**2
    return {"1.weight": acc_w / batches, "1.bias": acc_b / batches}


@pytest.mark.parametrize("cls", [SSD, LFSSD])
def test_importance_of_a_linear_model_matches_hand_computed_batch_gradients(cls, tmp_path):
    model = linear_model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    data = ToyDataModule(scenario=ClassRemoval(classes=[0]), batch_size=7)
    method = cls(model, alpha=1e9, lambda_=1.0, importance_batch_size=4)
    make_trainer(tmp_path).fit(method, datamodule=data)
    reference = linear_model()
    reference.load_state_dict(original)
    label_free = cls is LFSSD
    for split, stored in (("forget", method.importance_forget), ("retain+forget", method.importance_full)):
        expected = _hand_importance(reference, data.split_dataset(split, labelled=True), 4, label_free)
        for name, value in expected.items():
            torch.testing.assert_close(stored[name].double(), value, rtol=1e-5, atol=1e-9)
    assert not method.needs_labels if label_free else method.needs_labels


@pytest.mark.parametrize("cls", [SSD, LFSSD])
def test_below_threshold_leaves_the_state_dict_unchanged(cls, tmp_path):
    torch.manual_seed(0)
    model = load_classifier("tiny_cnn", 10, in_channels=1)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    method = cls(model, alpha=1e12, lambda_=1.0, importance_batch_size=16)
    make_trainer(tmp_path).fit(method, datamodule=ToyDataModule(scenario=ClassRemoval(classes=[1])))
    assert method.edit_stats["selected_fraction"] == 0.0
    after = method.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in original.items())
    assert bool(method.fitted)


def test_ssd_edits_logs_and_refuses_a_second_fit(tmp_path):
    torch.manual_seed(0)
    model = load_classifier("tiny_cnn", 10, in_channels=1)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    method = SSD(model, alpha=1.0, lambda_=0.5, importance_batch_size=8)
    data = ToyDataModule(scenario=RandomRemoval(count=21), batch_size=5)
    trainer = make_trainer(tmp_path, callbacks=[UnlearningCost()])
    trainer.fit(method, datamodule=data)
    metrics = trainer.callback_metrics
    for name in (
        "ssd/selected_fraction",
        "ssd/dampened_fraction",
        "ssd/zeroed_count",
        "ssd/beta_mean",
        "ssd/importance_forget_mean",
        "ssd/importance_full_mean",
        "ssd/importance_forget_s",
        "ssd/importance_full_s",
        "cost/unlearn_time_s",
        "cost/optimizer_steps",
    ):
        assert name in metrics, name
    assert float(metrics["cost/optimizer_steps"]) == 0.0  # the edit is not an optimiser step
    assert float(metrics["cost/unlearn_time_s"]) >= float(metrics["ssd/importance_forget_s"]) > 0
    assert 0 < float(metrics["ssd/selected_fraction"]) < 1
    # Batch counts: ceil(21 / 8) forget batches, ceil(100 / 8) full batches.
    assert method._counts == {"forget": 3, "retain+forget": 13}
    changed = [k for k, v in method.model.state_dict().items() if not torch.equal(v, original[k])]
    assert changed
    with pytest.raises(RuntimeError):
        make_trainer(tmp_path).fit(method, datamodule=data)


def test_cached_full_importance_gives_the_same_edit(tmp_path):
    path = tmp_path / "cache" / "full.pt"
    data = ToyDataModule(scenario=ClassRemoval(classes=[2]))
    edited = []
    for _ in range(2):
        torch.manual_seed(0)
        method = SSD(
            load_classifier("tiny_cnn", 10, in_channels=1), alpha=1.0, lambda_=0.5, full_importance_path=str(path)
        )
        make_trainer(tmp_path).fit(method, datamodule=data)
        edited.append(method.model.state_dict())
        assert path.is_file()
    assert method._counts == {"forget": 1}  # second run: I_D from the cache, forget pass only
    assert all(torch.equal(edited[0][k], edited[1][k]) for k in edited[0])


def test_per_sample_importance_is_batch_size_independent(tmp_path):
    results = []
    for batch in (3, 50):
        method = SSD(linear_model(), alpha=1e9, importance="per_sample", importance_batch_size=batch)
        make_trainer(tmp_path).fit(method, datamodule=ToyDataModule(scenario=ClassRemoval(classes=[0])))
        results.append(method.importance_full)
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-5, atol=1e-10)


def test_global_batch_helpers():
    assert per_rank_batch_size(64, 1) == 64 and per_rank_batch_size(64, 2) == 32
    with pytest.raises(ValueError, match="multiple"):
        per_rank_batch_size(63, 2)
    data = ToyDataModule(scenario=RandomRemoval(count=21))
    data.setup("fit")
    shards = [GlobalBatches(data, "forget", True, 8, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    first = shards[1].batch(0, torch.device("cpu"))
    x_all, y_all = zip(*[data.split_dataset("forget")[i] for i in range(21)], strict=True)
    torch.testing.assert_close(first[0], torch.stack(x_all[1:8:2]))
    assert first[1].tolist() == [int(y) for y in y_all[1:8:2]]
    last = shards[1].batch(2, torch.device("cpu"))  # positions 16..20: rank 1 gets 17 and 19
    assert len(last[0]) == 2 and shards[0].batch(3, torch.device("cpu")) is None
    lone = GlobalBatches(data, "forget", False, 20, 1, 2).batch(1, torch.device("cpu"))  # position 20 only: rank 0
    assert lone.shape == (0, 1, 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"lambda_": -1.0}, "lambda_"),
        ({"importance": "exact"}, "importance"),
        ({"importance_batch_size": 0}, "importance_batch_size"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SSD(linear_model(), **kwargs)


# ------------------------------------------------------------------------------------------------------------- DDP
def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))


def _ddp_run(devices: int, out: str, label_free: bool) -> None:
    """Fit SSD/LFSSD on ``devices`` CPU processes (gloo) and save the importances and edited weights (rank 0)."""
    cls = LFSSD if label_free else SSD
    method = cls(_bn_model(), alpha=1.0, lambda_=0.5, importance_batch_size=8)
    # n_forget = 21 and n_full = 100: neither divisible by B * W = 16, so the last global batches are ragged.
    data = ToyDataModule(scenario=RandomRemoval(count=21), batch_size=5)
    trainer = make_trainer(out + ".d", accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto")
    trainer.limit_val_batches = 0
    trainer.fit(method, datamodule=data)
    if trainer.global_rank == 0:
        torch.save(
            {
                "forget": {k: v.cpu() for k, v in method.importance_forget.items()},
                "full": {k: v.cpu() for k, v in method.importance_full.items()},
                "state": {k: v.cpu() for k, v in method.model.state_dict().items()},
                "counts": dict(method._counts),
            },
            out,
        )


@pytest.mark.slow
@pytest.mark.parametrize("label_free", [False, True])
def test_two_gloo_processes_match_one(label_free, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    results = []
    for devices in (1, 2):
        out = str(tmp_path / f"r{devices}.pt")
        command = [sys.executable, __file__, "--devices", str(devices), "--out", out]
        if label_free:
            command.append("--label-free")
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        results.append(torch.load(out, weights_only=True))
    one, two = results
    assert one["counts"] == two["counts"] == {"forget": 3, "retain+forget": 13}
    for key in ("forget", "full"):
        for name in one[key]:
            torch.testing.assert_close(two[key][name], one[key][name], rtol=1e-5, atol=1e-12)
    for name, value in one["state"].items():
        torch.testing.assert_close(two["state"][name], value, rtol=1e-5, atol=1e-7)
    mask_one = [one["forget"][n] > 1.0 * one["full"][n] for n in one["forget"]]
    mask_two = [two["forget"][n] > 1.0 * two["full"][n] for n in two["forget"]]
    for a, b, n in zip(mask_one, mask_two, one["forget"], strict=True):
        ratio = one["forget"][n] / one["full"][n].clamp_min(1e-30)
        near = (ratio - 1.0).abs() <= 1e-5
        assert torch.equal(a[~near], b[~near])


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--label-free", action="store_true")
    args = parser.parse_args()
    _ddp_run(args.devices, args.out, args.label_free)
    exit_without_teardown()
