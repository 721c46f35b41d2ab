"""L2UL's three variants (naive, +ADV, +ADV+IMP) on the embedded 5k MNIST digits, k = 16 instances.

Each variant starts from the same original classifier (``pretrained_classifier("mnist5k")``, trained once and
cached) with a fresh optimiser and the same forget set (``KInstances(16)``, seed 0), and runs until the forget set
is fully misclassified or the epoch cap is hit. Prints forget / retain / test accuracy per variant and whether
+ADV+IMP keeps retain and test accuracy above naive (the paper's qualitative claim).

The settings used here (``TUNED``: lr 1e-2, eps 1.0, N_adv 8, cap 300 epochs) are a faster MNIST setting, not a
fix: the paper's CIFAR values (lr 1e-3, eps 4.0, N_adv 20, cap 1000) also reach 0 % forget accuracy on these
digits (at step 379 in an external check), with test accuracy down to about 15 %. On this data every variant
misclassifies all 16 digits only by collapsing the classifier (test accuracy 10-42 %): each flip after the first
comes with a drift of the test predictions towards one class, and no setting tried (lambda 1-1000, lr 1e-4 to
1e-2, eps 1-4, SGD or Adam) avoided it. The library's loop matches the authors' on the same inputs, so this is the
method on this data, not the implementation; the paper-scale check is ``configs/l2ul/cifar10_resnet18_k16.yaml``.

Usage: ``python benchmarks/l2ul_variants.py [--k 16] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_unlearn.datamodules import KInstances, MNIST5kDataModule
from lightning_unlearn.methods.l2ul import L2UL, continual_accuracies
from lightning_unlearn.pretrained import pretrained_classifier

#: The mnist5k settings (the same as the shipped configs ``mnist5k/k16/l2ul`` and ``l2ul/mnist5k_k16_*``).
TUNED = dict(
    num_adv_per_instance=8,
    pgd_eps=1.0,
    pgd_step=0.1,
    pgd_iters=100,
    adv_batch_size=256,
    forget_batch_size=32,
    max_epochs=300,
    reg_lambda=1.0,
)
LR = 1e-2


def run_variant(variant: str, k: int, seed: int, lr: float = LR, **overrides: float) -> dict[str, float]:
    """Unlearn ``k`` instances with one variant from the original classifier; returns accuracies (%)."""
    seed_everything(seed, verbose=False)
    datamodule = MNIST5kDataModule(scenario=KInstances(k), seed=seed)
    model = pretrained_classifier("mnist5k", progress=False)
    method = L2UL(
        model,
        num_classes=10,
        variant=variant,  # type: ignore[arg-type]
        optimizer=lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=1e-4),
        seed=seed,
        **{**TUNED, **overrides},  # type: ignore[arg-type]
    )
    trainer = Trainer(
        max_epochs=100_000,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(method, datamodule=datamodule)
    seconds = time.perf_counter() - start
    metrics = continual_accuracies(method.model, datamodule, 0)
    metrics.update(steps=float(method.l2ul_step), hit_cap=float(bool(method.l2ul_hit_cap)), seconds=seconds)
    return metrics


def main() -> None:
    """Run the three variants and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--eps", type=float, default=TUNED["pgd_eps"])
    parser.add_argument("--n-adv", type=int, default=TUNED["num_adv_per_instance"])
    parser.add_argument("--max-epochs", type=int, default=TUNED["max_epochs"])
    parser.add_argument("--variants", nargs="+", default=["naive", "adv", "adv_imp"])
    args = parser.parse_args()
    overrides = dict(pgd_eps=args.eps, num_adv_per_instance=args.n_adv, max_epochs=args.max_epochs)

    datamodule = MNIST5kDataModule(scenario=KInstances(args.k), seed=args.seed)
    datamodule.setup("fit")
    original = pretrained_classifier("mnist5k", progress=False)
    before = continual_accuracies(original, datamodule, 0)
    rows = {"original": before}
    for variant in args.variants:
        rows[variant] = run_variant(variant, args.k, args.seed, args.lr, **overrides)

    print(
        f"L2UL on MNIST5k, k = {args.k}, seed {args.seed}, lr {args.lr}, eps {args.eps}, "
        f"N_adv {args.n_adv}, cap {args.max_epochs} epochs (accuracy %)"
    )
    print(f"{'variant':<10}{'forget':>9}{'retain':>9}{'test':>9}{'steps':>7}{'cap':>5}{'time s':>8}")
    for name, m in rows.items():
        steps = f"{int(m['steps']):>7}" if "steps" in m else f"{'-':>7}"
        cap = f"{int(m['hit_cap']):>5}" if "hit_cap" in m else f"{'-':>5}"
        secs = f"{m['seconds']:>8.1f}" if "seconds" in m else f"{'-':>8}"
        print(f"{name:<10}{m['forget']:>9.2f}{m['retain']:>9.2f}{m['test']:>9.2f}{steps}{cap}{secs}")
    if not {"naive", "adv_imp"} <= set(rows):
        return
    naive, full = rows["naive"], rows["adv_imp"]
    all_zero = all(rows[v]["forget"] == 0.0 for v in args.variants)
    better = full["retain"] > naive["retain"] and full["test"] > naive["test"]
    print(f"all variants at 0% forget accuracy: {all_zero}")
    print(f"+ADV+IMP keeps retain and test accuracy higher than naive: {better}")


if __name__ == "__main__":
    main()
