"""l1-sparse unlearning: finetuning on the retain set with a linearly decaying l1 penalty."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.methods.base import (
    GradientUnlearningMethod,
    LRSchedulerCallable,
    OptimizerCallable,
    check_choice,
    check_integer,
    check_positive,
)
from lightning_unlearn.validation import check_sgd

ALL_OFF: tuple[str, ...] = ("zero", "constant")
SCOPES: tuple[str, ...] = ("all", "weights")


def l1_alpha(alpha: float, epoch: int, epochs: int, no_l1_epochs: int = 0, all_off: str = "zero") -> float:
    """Penalty coefficient of 0-based ``epoch``: ``alpha * (1 - epoch / (epochs - no_l1_epochs))``, then 0.

    The coefficient decays linearly over the first ``epochs - no_l1_epochs`` epochs (it never reaches 0 within
    them) and is 0 in the last ``no_l1_epochs``. When ``no_l1_epochs == epochs`` it is 0 throughout
    (``all_off="zero"``) or ``alpha`` throughout (``"constant"``).
    """
    active = epochs - no_l1_epochs
    if active <= 0:
        return alpha if all_off == "constant" else 0.0
    if epoch < active:
        return alpha * (1.0 - epoch / active)
    return 0.0


def l1_norm(params: Iterable[Tensor]) -> Tensor:
    """Sum of absolute values over all given tensors."""
    terms = [p.abs().sum() for p in params]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class L1Sparse(GradientUnlearningMethod):
    """Finetune on the retain set with an l1 penalty whose coefficient decays linearly by epoch.

    ``loss = CE(retain) + alpha_e * ||theta||_1`` with ``alpha_e = alpha * (1 - e / (epochs - no_l1_epochs))`` for
    the 0-based epoch ``e`` (0 in the last ``no_l1_epochs`` epochs); the penalty covers every parameter (biases and
    batch-norm affine included; ``l1_scope="weights"``: tensors of two or more dimensions only), on top of the
    optimiser's weight decay. The forget set is never read.

    Regime: gradient (automatic optimisation). Data: the labelled retain set. The epoch budget is ``epochs``
    (``trainer.max_epochs`` is set from it). The default ``alpha`` (1e-4 over 10 epochs at lr 0.01) is the one of
    the authors' pre-release run script; the paper does not state one.

    Reference: J. Jia, J. Liu, P. Ram, Y. Yao, G. Liu, Y. Liu, P. Sharma, S. Liu, "Model Sparsity Can Simplify
    Machine Unlearning", NeurIPS 2023.

    Args:
        model: The trained classifier to unlearn.
        alpha: Initial l1 coefficient, >= 0.
        epochs: Number of epochs (the schedule's length).
        lr: Learning rate of the default SGD optimiser.
        no_l1_epochs: Final epochs without the penalty.
        l1_all_off: Coefficient when ``no_l1_epochs == epochs``: ``"zero"`` or ``"constant"`` (``alpha``).
        l1_scope: ``"all"`` parameters or ``"weights"`` only.
        momentum: Momentum of the default optimiser.
        weight_decay: Weight decay (coupled L2) of the default optimiser.
        optimizer: Optimiser factory replacing the default (its own lr wins).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
    """

    train_splits = ("retain",)
    budget_argument = "epochs"

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1e-4,
        epochs: int = 10,
        lr: float = 0.01,
        no_l1_epochs: int = 0,
        l1_all_off: str = "zero",
        l1_scope: str = "all",
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        check_positive("alpha", alpha, allow_zero=True)
        check_integer("epochs", epochs, 1)
        check_integer("no_l1_epochs", no_l1_epochs, 0)
        if no_l1_epochs > epochs:
            raise ValueError(f"no_l1_epochs must be <= epochs ({epochs}), got {no_l1_epochs!r}")
        check_choice("l1_all_off", l1_all_off, ALL_OFF)
        check_choice("l1_scope", l1_scope, SCOPES)
        check_sgd(momentum, weight_decay, lr=lr)
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)

    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """SGD with the method's ``lr``, ``momentum`` and ``weight_decay``."""
        h = self.hparams
        return torch.optim.SGD(params, lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"])

    def alpha_at(self, epoch: int) -> float:
        """The l1 coefficient of 0-based ``epoch``."""
        h = self.hparams
        return l1_alpha(h["alpha"], epoch, h["epochs"], h["no_l1_epochs"], h["l1_all_off"])

    def penalised_parameters(self) -> list[Tensor]:
        """Parameters under the penalty (every trainable one, or tensors of >= 2 dimensions)."""
        params: list[Tensor] = [p for p in self.model.parameters() if p.requires_grad]
        return params if self.hparams["l1_scope"] == "all" else [p for p in params if p.dim() >= 2]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Retain cross-entropy plus the epoch's l1 penalty."""
        x, y, _ = self.labelled_batch(batch["retain"])
        ce = F.cross_entropy(self(x), y)
        alpha = self.alpha_at(int(self.current_epoch))
        norm = l1_norm(self.penalised_parameters())
        loss = ce + alpha * norm if alpha > 0 else ce
        for name, value in (("ce", ce), ("l1_norm", norm), ("loss", loss)):
            self.log(f"l1sparse/{name}", value.detach(), on_step=True, on_epoch=True, batch_size=len(x))
        self.log("l1sparse/alpha", alpha, on_step=False, on_epoch=True, batch_size=len(x))
        return loss
