"""Fit L2UL on N CPU processes (gloo) and save each rank's request state; used by ``test_l2ul.py``.

Run as ``python ddp_l2ul_script.py --devices N --out PREFIX``: a BatchNorm ``tiny_cnn`` on ``ToyDataModule`` with
``KInstances(7)`` (7 forget instances: not divisible by 2 processes nor by the forget batch size), ``adv_imp``.
Every rank writes ``PREFIX.rank{r}.pt`` with its forget tensors, adversarial set, ``Omega~``, ``theta0``, the
step at which it stopped, the trainer's global step and its per-step stopping decisions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from trainers import exit_without_teardown

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_factories import ToyDataModule  # noqa: E402

from lightning_unlearn.datamodules import KInstances  # noqa: E402
from lightning_unlearn.methods.l2ul import L2UL  # noqa: E402
from lightning_unlearn.models.tiny import TinyCNN  # noqa: E402

K = 7


class RecordingL2UL(L2UL):
    """Records, after every step, the step counter and whether the stopping rule has fired."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decisions: list[tuple[int, bool]] = []

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        self.decisions.append((int(self.l2ul_step), bool(self.l2ul_done)))


def run(devices: int, out: str) -> None:
    torch.manual_seed(0)
    model = TinyCNN(num_classes=10, in_channels=1, batch_norm=True)
    # Different global seeds per rank: nothing of the request state may depend on the global RNG.
    torch.manual_seed(1234 + int(__import__("os").environ.get("LOCAL_RANK", "0")))
    method = RecordingL2UL(
        model,
        num_classes=10,
        variant="adv_imp",
        num_adv_per_instance=2,
        pgd_iters=3,
        pgd_eps=0.5,
        adv_batch_size=4,
        forget_batch_size=2,
        max_epochs=3,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
        seed=3,
    )
    data = ToyDataModule(scenario=KInstances(K), batch_size=4)
    trainer = Trainer(
        max_epochs=200,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=out + ".d",
    )
    trainer.fit(method, datamodule=data)
    anchor, omega = method._anchor_and_omega()
    torch.save(
        {
            "world_size": trainer.world_size,
            "forget_x": method.forget_x.cpu(),
            "forget_labels": method.forget_labels.cpu(),
            "adv_x": method.adv_x.cpu(),
            "adv_y": method.adv_y.cpu(),
            "adv_src": method.adv_src.cpu(),
            "omega": {k: v.cpu() for k, v in omega.items()},
            "theta0": {k: v.cpu() for k, v in anchor.items()},
            "stopped_step": int(method.l2ul_step),
            "done": bool(method.l2ul_done),
            "hit_cap": bool(method.l2ul_hit_cap),
            "cap_steps": method.cap_steps,
            "global_step": int(trainer.global_step),
            "decisions": [list(d) for d in method.decisions],
        },
        f"{out}.rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    run(args.devices, args.out)
    exit_without_teardown()
