"""Tiny fakes for the metric-callback tests, and a script fitting them with N CPU processes.

Run as ``python ddp_metric_script.py --devices N --out values.json --logdir DIR``: fits a linear classifier for
one step on odd-sized synthetic splits with ``ForgettingMetrics`` and ``MembershipInference``, validates, tests,
and writes every recorded value (rank 0) as JSON. The training step uses a fixed batch held by the module, so
the weights after training are the same for any number of processes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from trainers import exit_without_teardown

NUM_FEATURES = 6
NUM_CLASSES = 3
SPLIT_SIZES = {"forget": 13, "retain": 37, "test": 29, "test_forget": 1}


class UnrepeatedSampler(DistributedSampler):
    """Gives each index to exactly one rank (strided), without padding or shuffling."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = list(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_split_data(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Gaussian blobs per class; retain/forget slightly better separated than test."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(NUM_CLASSES, NUM_FEATURES, generator=generator) * 1.5
    data = {}
    for name, size in (sizes or SPLIT_SIZES).items():
        y = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
        noise = 1.5 if name.startswith("test") else 1.0
        x = centres[y] + noise * torch.randn(size, NUM_FEATURES, generator=generator)
        data[name] = (x, y)
    return data


class FakeDataModule(LightningDataModule):
    """Exposes ``eval_split_names``; evaluation loaders yield ``(x, y, index)`` with an unrepeated sampler."""

    def __init__(self, seed: int = 0, eval_batch_size: int = 4, sizes: dict[str, int] | None = None) -> None:
        super().__init__()
        # a split smaller than the number of processes leaves some ranks without samples (unrepeated sampler)
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.data = make_split_data(seed, sizes)
        self.eval_split_names = list(self.data)
        self.eval_batch_size = eval_batch_size

    def train_dataloader(self) -> DataLoader:
        x, y = self.data["retain"]
        return DataLoader(TensorDataset(x, y), batch_size=8)

    def _eval_loaders(self) -> dict[str, DataLoader]:
        loaders = {}
        for name in self.eval_split_names:
            x, y = self.data[name]
            dataset = TensorDataset(x, y, torch.arange(len(y)))
            sampler = None
            trainer = self.trainer
            if trainer is not None and trainer.world_size > 1:
                sampler = UnrepeatedSampler(dataset, trainer.world_size, trainer.global_rank)
            loaders[name] = DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, sampler=sampler)
        return loaders

    def val_dataloader(self) -> dict[str, DataLoader]:
        return self._eval_loaders()

    def test_dataloader(self) -> dict[str, DataLoader]:
        return self._eval_loaders()


class FakeModule(LightningModule):
    """Linear classifier; training minimises the loss of a fixed batch (independent of the data shard)."""

    def __init__(self, seed: int = 0, lr: float = 2.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(NUM_FEATURES, NUM_CLASSES))
        generator = torch.Generator().manual_seed(seed + 1)
        self.register_buffer("fixed_x", torch.randn(16, NUM_FEATURES, generator=generator) * 3)
        self.register_buffer("fixed_y", torch.randint(0, NUM_CLASSES, (16,), generator=generator))
        self.lr = lr
        self.eval_calls = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return nn.functional.cross_entropy(self(self.fixed_x), self.fixed_y)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        x, y, index = batch
        self.eval_calls += 1
        return {"logits": self(x).detach(), "target": y, "index": index}

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self.validation_step(batch, batch_idx, dataloader_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def fit_and_record(devices: int, out: str, logdir: str) -> None:
    """Fit, validate and test the fakes with both callbacks; rank 0 writes every recorded value."""
    from lightning.pytorch.loggers import CSVLogger

    from lightning_unlearn.callbacks import ForgettingMetrics, MembershipInference

    forgetting = ForgettingMetrics()
    membership = MembershipInference(attacks=["entropy"])
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        limit_train_batches=1,
        logger=CSVLogger(logdir, name="", version=""),
        callbacks=[forgetting, membership],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = FakeModule()
    datamodule = FakeDataModule()
    trainer.fit(model, datamodule=datamodule)
    logged = {name: float(value) for name, value in trainer.callback_metrics.items()}
    trainer.test(model, datamodule=datamodule, verbose=False)
    if trainer.is_global_zero:
        values = {
            "world_size": trainer.world_size,
            "initial": {**forgetting.initial_metrics, **membership.initial_metrics},
            "final": {**forgetting.final_metrics, **membership.final_metrics},
            "test": {**forgetting.test_metrics, **membership.test_metrics},
            "logged": logged,
        }
        with open(out, "w") as handle:
            json.dump(values, handle, indent=1)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--logdir", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fit_and_record(args.devices, args.out, args.logdir)


if __name__ == "__main__":
    main()
    exit_without_teardown()
