"""Baseline unlearning methods: finetuning on the retain set, gradient ascent and random labels."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods.base import (
    GradientUnlearningMethod,
    LRSchedulerCallable,
    OptimizerCallable,
    check_integer,
    check_positive,
)
from lightning_unlearn.methods.random_labels import draw_label_offsets as draw_label_offsets  # re-exported
from lightning_unlearn.models.cut import detect_num_classes
from lightning_unlearn.validation import check_sgd, is_integer


class _SGDDefaults(GradientUnlearningMethod):
    """Shared SGD default optimiser built from the ``lr``, ``momentum``, ``weight_decay`` and ``nesterov`` args."""

    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """SGD from the method's ``lr``, ``momentum``, ``weight_decay`` and ``nesterov`` hyperparameters."""
        h = self.hparams
        return torch.optim.SGD(
            params,
            lr=h["lr"],
            momentum=h["momentum"],
            weight_decay=h["weight_decay"],
            nesterov=h["nesterov"] and h["momentum"] > 0,
        )

    def _retain_term(self, batch: dict[str, Any], prefix: str) -> Tensor | float:
        """``retain_weight * CE(retain batch)``, logged as ``<prefix>/retain_loss``; 0 without a retain term."""
        weight = self.hparams["retain_weight"]
        if weight <= 0:
            return 0.0
        x, y, _ = self.labelled_batch(batch["retain"])
        retain_loss = F.cross_entropy(self(x), y)
        self.log(f"{prefix}/retain_loss", retain_loss, on_step=True, on_epoch=True, batch_size=len(x))
        return weight * retain_loss


class Finetune(_SGDDefaults):
    """Fine-tune on the retain set only and rely on catastrophic forgetting of the forget set.

    Regime: gradient (automatic optimisation). Data: the labelled retain set. Defaults follow "Forget with
    Precision" (SGD lr 1e-3, momentum 0.9, Nesterov, weight decay 5e-4; 5 epochs set by ``trainer.max_epochs``).

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023.

    Args:
        model: The trained classifier to unlearn.
        lr: Learning rate of the default SGD optimiser.
        momentum: Momentum of the default optimiser.
        weight_decay: Weight decay of the default optimiser.
        nesterov: Nesterov momentum for the default optimiser.
        optimizer: Optimiser factory replacing the default (its own lr wins).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
    """

    train_splits = ("retain",)

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        check_sgd(momentum, weight_decay, lr=lr)
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy on a retain batch."""
        x, y, _ = self.labelled_batch(batch["retain"])
        loss = F.cross_entropy(self(x), y)
        self.log("finetune/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss


class GradientAscent(_SGDDefaults):
    """Ascend the cross-entropy on the forget set; with ``retain_weight > 0`` also descend on the retain set.

    ``loss = retain_weight * CE(retain) - forget_weight * CE(forget)``. With ``retain_weight = 0`` the method
    sees only the forget set (one epoch = one pass over it); otherwise ("NegGrad+") batches pair forget and
    retain samples and an epoch is one pass over the retain set. ``forget_loss_ceiling`` stops the ascent on
    batches whose forget loss already exceeds it, which keeps the unbounded objective from wrecking the model.

    Regime: gradient (automatic optimisation). Data: labelled forget set (and retain set for NegGrad+).

    Reference: A. Golatkar, A. Achille, S. Soatto, "Eternal Sunshine of the Spotless Net", CVPR 2020 (NegGrad);
    M. Kurmanji, P. Triantafillou, J. Hayes, E. Triantafillou, "Towards Unbounded Machine Unlearning", NeurIPS
    2023 (NegGrad+).

    Args:
        model: The trained classifier to unlearn.
        lr: Learning rate of the default SGD optimiser.
        forget_weight: Weight of the (negated) forget cross-entropy, > 0.
        retain_weight: Weight of the retain cross-entropy, >= 0 (0: plain gradient ascent).
        forget_loss_ceiling: Forget loss above which a batch's ascent term is dropped; ``None``: never.
        momentum: Momentum of the default optimiser.
        weight_decay: Weight decay of the default optimiser.
        nesterov: Nesterov momentum for the default optimiser.
        optimizer: Optimiser factory replacing the default (its own lr wins).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        forget_weight: float = 1.0,
        retain_weight: float = 0.0,
        forget_loss_ceiling: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        check_sgd(momentum, weight_decay, lr=lr)
        check_positive("forget_weight", forget_weight)
        check_positive("retain_weight", retain_weight, allow_zero=True)
        if forget_loss_ceiling is not None:
            check_positive("forget_loss_ceiling", forget_loss_ceiling)
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """Forget only, or forget paired with retain (cycled) when ``retain_weight > 0``."""
        splits = ("forget", "retain") if self.hparams["retain_weight"] > 0 else ("forget",)
        return [Phase(epochs=max(1, max_epochs), splits=splits, labelled=True)]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Weighted retain descent minus forget ascent."""
        h = self.hparams
        x_f, y_f, _ = self.labelled_batch(batch["forget"])
        forget_loss = F.cross_entropy(self(x_f), y_f)
        ascend = h["forget_loss_ceiling"] is None or forget_loss.detach() < h["forget_loss_ceiling"]
        loss = -h["forget_weight"] * forget_loss if ascend else forget_loss * 0.0
        self.log("gradient_ascent/forget_loss", forget_loss, on_step=True, on_epoch=True, batch_size=len(x_f))
        loss = loss + self._retain_term(batch, "gradient_ascent")
        self.log("gradient_ascent/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x_f))
        return loss


class RandomLabel(_SGDDefaults):
    """Train the forget set on fixed random wrong labels, optionally with cross-entropy on the retain set.

    Each forget sample gets one wrong label, uniform over the other classes and drawn once from the method's
    seeded generator (identical on every rank, fixed across epochs and restored on resume).
    ``loss = forget_weight * CE(forget, random labels) + retain_weight * CE(retain)``.

    Regime: gradient (automatic optimisation). Data: labelled forget set (with sample indices), and the retain
    set when ``retain_weight > 0``.

    Reference: A. Golatkar, A. Achille, S. Soatto, "Eternal Sunshine of the Spotless Net", CVPR 2020; C. Fan et
    al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR 2024 (the "RL" baseline).

    Args:
        model: The trained classifier to unlearn.
        num_classes: Number of classes; ``None`` reads ``model.num_classes`` or the ``out_features`` of the
            classifier's final linear layer.
        lr: Learning rate of the default SGD optimiser.
        forget_weight: Weight of the forget (random label) cross-entropy, > 0.
        retain_weight: Weight of the retain cross-entropy, >= 0.
        seed: Seed of the random labels.
        momentum: Momentum of the default optimiser.
        weight_decay: Weight decay of the default optimiser.
        nesterov: Nesterov momentum for the default optimiser.
        optimizer: Optimiser factory replacing the default (its own lr wins).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
    """

    label_offsets: Tensor

    def __init__(
        self,
        model: nn.Module,
        num_classes: int | None = None,
        lr: float = 1e-3,
        forget_weight: float = 1.0,
        retain_weight: float = 1.0,
        seed: int = 0,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        check_sgd(momentum, weight_decay, lr=lr)
        check_positive("forget_weight", forget_weight)
        check_positive("retain_weight", retain_weight, allow_zero=True)
        check_integer("seed", seed)
        classes = num_classes if num_classes is not None else detect_num_classes(model)
        if not is_integer(classes) or classes < 2:
            raise ValueError(f"RandomLabel needs num_classes >= 2 (given or as model.num_classes), got {classes!r}")
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.num_classes = classes
        self.register_buffer("label_offsets", torch.zeros(0, dtype=torch.long))

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """Forget (with indices), paired with retain when ``retain_weight > 0``."""
        splits = ("forget", "retain") if self.hparams["retain_weight"] > 0 else ("forget",)
        return [Phase(epochs=max(1, max_epochs), splits=splits, labelled=True, with_index=True)]

    def on_fit_start(self) -> None:
        """Draw the per-sample label offsets once (kept if restored from a checkpoint)."""
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if datamodule is None or getattr(datamodule, "forget_indices", None) is None:
            raise RuntimeError("RandomLabel needs an UnlearningDataModule (it reads the forget-set size)")
        size = len(datamodule.forget_indices)
        if self.label_offsets.numel() != size:
            offsets = draw_label_offsets(size, self.num_classes, self.method_generator())
            self.label_offsets = offsets.to(self.device)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Accept a checkpoint whose label table has a different length than the empty placeholder."""
        offsets = state_dict.get("label_offsets")
        if offsets is not None:
            self.label_offsets = torch.empty_like(offsets)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def random_labels(self, y: Tensor, index: Tensor) -> Tensor:
        """Fixed random wrong labels of forget samples at positions ``index``."""
        return (y + self.label_offsets[index]) % self.num_classes

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Random-label forget loss plus the optional retain loss."""
        h = self.hparams
        x_f, y_f, idx = self.labelled_batch(batch["forget"])
        if idx is None:
            raise RuntimeError("RandomLabel needs forget batches with sample indices")
        forget_loss = F.cross_entropy(self(x_f), self.random_labels(y_f, idx))
        loss = h["forget_weight"] * forget_loss
        self.log("random_label/forget_loss", forget_loss, on_step=True, on_epoch=True, batch_size=len(x_f))
        loss = loss + self._retain_term(batch, "random_label")
        self.log("random_label/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x_f))
        return loss
