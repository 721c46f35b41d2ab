"""Label poisoning of the forget set: ``Poison``, ``PoisonFull`` and the two-stage ``Hybrid``.

Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
Unlearning Approaches", Deep Learning course project, ETH Zürich, 2023.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.phases import Phase
from lightning_unlearn.methods.base import (
    GradientUnlearningMethod,
    LRSchedulerCallable,
    OptimizerCallable,
    check_choice,
    check_integer,
)
from lightning_unlearn.methods.precision_common import (
    PrecisionStage,
    Preset,
    _accuracy,
    _check_common,
    _check_epochs,
    _num_classes,
    _PrecisionMultiStage,
    _RandomLabels,
    _resolve,
    _stage_optimizers,
    stage_sgd,
)
from lightning_unlearn.models.cut import resolve_head_name


class _PoisonBase(_RandomLabels, GradientUnlearningMethod):
    """Shared code of :class:`Poison` and :class:`PoisonFull`."""

    stage_label: str = "poison"
    budget_argument = "epochs"

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.head_name: str = resolve_head_name(model, self.hparams.get("head_name"))
        self.num_classes = _num_classes(model, self.head_name)
        self.register_buffer("poison_draws", torch.zeros(0, dtype=torch.long))

    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """SGD(lr, momentum 0.9, Nesterov, weight decay 5e-4) from the hyperparameters."""
        h = self.hparams
        return stage_sgd(params, h["lr"], h["momentum"], h["weight_decay"], h["nesterov"])

    def on_fit_start(self) -> None:
        """Draw the random labels once (kept when restored from a checkpoint)."""
        super().on_fit_start()
        self._ensure_labels()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Accept a checkpoint whose label table differs in length from the empty placeholder."""
        self._resize_label_buffer(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _log_step(self, loss: Tensor, logits: Tensor, y: Tensor, kept: Tensor | None, batch_idx: int) -> None:
        name = self.stage_label
        n = len(y)
        self.log(f"train/{name}/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log(f"train/{name}/acc", _accuracy(logits.detach(), y), on_step=False, on_epoch=True, batch_size=n)
        if kept is not None and kept.numel():
            self.log(
                "poison/true_label_kept_fraction",
                kept.float().mean(),
                on_step=False,
                on_epoch=True,
                batch_size=int(kept.numel()),
            )
        if batch_idx == 0:
            optimizer: Any = self.optimizers()
            lr = float(optimizer.param_groups[0]["lr"])
            self.log(f"lr/{name}", lr, on_step=False, on_epoch=True, batch_size=1)


class Poison(_PoisonBase):
    """Train the forget set on random labels drawn once: the "Poison" method of "Forget with Precision".

    Regime: gradient (automatic optimisation), one stage ``poison``: the forget set with fixed random labels
    (uniform over all classes, true class included), ``epochs`` passes (default 1: ⌈|F|/128⌉ steps), SGD lr 7e-4,
    momentum 0.9, Nesterov, weight decay 5e-4, constant lr, shuffled. No retain data. Splits: ``forget`` with
    sample indices; labels are read only for the ``poison/true_label_kept_fraction`` diagnostic (and
    ``exclude_true_label``). The epoch budget is ``epochs`` (``trainer.max_epochs`` is set from it).

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``poison(lr=0.0007, epochs=1)``).

    Args:
        model: The trained classifier to unlearn.
        lr: Learning rate.
        epochs: Number of passes over the forget set (the epoch budget: ``trainer.max_epochs`` is set from it).
        exclude_true_label: Draw labels among the wrong classes only (library extension; default False).
        seed: Seed of the random labels; ``None``: the run's global seed (``seed_everything``), else 0.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (coupled L2).
        nesterov: Nesterov momentum.
        optimizer: Optimiser factory replacing the default SGD (its own lr wins).
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
        head_name: Name of the head submodule (the cut and the final linear layer); ``None`` detects it
            (the classifier's ``head_name``, else e.g. ``fc`` on a torchvision ResNet).
    """

    train_splits = ("forget",)
    stage_label = "poison"

    def __init__(
        self,
        model: nn.Module,
        lr: float = 7e-4,
        epochs: int = 1,
        exclude_true_label: bool = False,
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        head_name: str | None = None,
    ) -> None:
        _check_common("corrected", momentum, weight_decay, lr=lr)
        _check_epochs("epochs", epochs)
        check_integer("seed", seed, optional=True)
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """The labelled forget set with sample indices, shuffled."""
        return [Phase(epochs=max(1, max_epochs), splits=("forget",), labelled=True, with_index=True)]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy of a forget batch against its random labels."""
        x, y, index = self.labelled_batch(batch["forget"])
        if index is None:
            raise RuntimeError("Poison needs forget batches with sample indices")
        target = self.poisoned_labels(index, y)
        logits = self(x)
        loss = F.cross_entropy(logits, target)
        self._log_step(loss, logits, target, target == y, batch_idx)
        return loss


class PoisonFull(_PoisonBase):
    """Train the union of the retain set and the random-labelled forget set, with a cosine schedule.

    Regime: gradient (automatic optimisation), one stage ``poison_full``: ``retain + forget`` (one loader over
    the union, forget samples with fixed random labels), ``epochs`` passes, SGD lr 2e-3, momentum 0.9, Nesterov,
    weight decay 5e-4, ``CosineAnnealingLR(T_max=epochs, eta_min=0)`` stepped per epoch. Splits: labelled
    ``retain`` and ``forget`` (with union positions). The epoch budget is ``epochs`` (``trainer.max_epochs`` is set
    from it).

    Quirk (``preset="reference"``): the union is iterated unshuffled (retain in index order, then every
    poisoned sample: each epoch ends with ⌈|F|/128⌉ poisoned-only steps); corrected: shuffled.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``poison_full(lr=0.002, epochs=5)``).

    Args:
        model: The trained classifier to unlearn.
        lr: Initial learning rate.
        epochs: Number of passes over the union (the epoch budget: ``trainer.max_epochs`` is set from it).
        schedule: ``"cosine"`` (reference) or ``"constant"``.
        shuffle: Shuffle the union; ``None`` follows the preset.
        exclude_true_label: Draw labels among the wrong classes only (default False).
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the random labels; ``None``: the run's global seed.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        nesterov: Nesterov momentum.
        optimizer: Optimiser factory replacing the default SGD (its own lr wins).
        lr_scheduler: Scheduler factory replacing the schedule given by ``schedule``.
        head_name: Name of the head submodule (the cut and the final linear layer); ``None`` detects it
            (the classifier's ``head_name``, else e.g. ``fc`` on a torchvision ResNet).
    """

    train_splits = ("retain", "forget")
    stage_label = "poison_full"

    def __init__(
        self,
        model: nn.Module,
        lr: float = 2e-3,
        epochs: int = 5,
        schedule: Literal["cosine", "constant"] = "cosine",
        shuffle: bool | None = None,
        exclude_true_label: bool = False,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        head_name: str | None = None,
    ) -> None:
        _check_common(preset, momentum, weight_decay, lr=lr)
        _check_epochs("epochs", epochs)
        check_integer("seed", seed, optional=True)
        check_choice("schedule", schedule, ("cosine", "constant"))
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.shuffle: bool = bool(_resolve(shuffle, preset, True, False))
        self._retain_size = 0

    def setup(self, stage: str) -> None:
        """Read the retain-set size (forget samples follow it in the union)."""
        datamodule: Any = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "retain_indices"):
            self._retain_size = len(datamodule.retain_indices)
        super().setup(stage)

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """One loader over ``retain+forget`` with union positions."""
        return [
            Phase(
                epochs=max(1, max_epochs),
                splits=("retain+forget",),
                labelled=True,
                with_index=True,
                shuffle=self.shuffle,
            )
        ]

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """SGD plus the per-epoch cosine schedule (unless ``schedule="constant"`` or a scheduler is injected)."""
        config = super().configure_optimizers()
        if self._scheduler_factory is not None or self.hparams["schedule"] == "constant":
            return config
        optimizer = config if isinstance(config, Optimizer) else None
        if optimizer is None:
            raise RuntimeError("PoisonFull expects a single optimiser")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, int(self.hparams["epochs"])), eta_min=0.0
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy on a union batch, forget samples against their random labels."""
        x, y, index = self.labelled_batch(batch["retain+forget"])
        if index is None:
            raise RuntimeError("PoisonFull needs union batches with sample indices")
        is_forget = index >= self._retain_size
        target = y.clone()
        if bool(is_forget.any()):
            forget_pos = index[is_forget] - self._retain_size
            target[is_forget] = self.poisoned_labels(forget_pos, y[is_forget])
        logits = self(x)
        loss = F.cross_entropy(logits, target)
        self._log_step(loss, logits, target, (target == y)[is_forget], batch_idx)
        return loss


class Hybrid(_PrecisionMultiStage):
    """Poison the forget set with random labels, then finetune on the retain set ("Hybrid" / two-stage simple).

    Regime: multi-stage (manual optimisation). Stages: ``poison`` (forget set with fixed random labels,
    ``forget_epochs``, lr ``forget_lr``, shuffled) → ``recover`` (retain set, ``retain_epochs``, lr
    ``retain_lr``, new optimiser). Each stage: SGD momentum 0.9, Nesterov, weight decay 5e-4, constant lr.
    Splits: labelled ``forget`` (with indices) and ``retain``. The epoch budget ``forget_epochs + retain_epochs``
    follows from the stages (``trainer.max_epochs`` is set from it and the loaders are rebuilt every epoch).

    Quirk (``preset="reference"``): the retain loader is not shuffled; corrected: shuffled.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``two_stage_simple``).

    Args:
        model: The trained classifier to unlearn.
        forget_lr: Learning rate of the poison stage.
        forget_epochs: Epochs of the poison stage.
        retain_lr: Learning rate of the recover stage.
        retain_epochs: Epochs of the recover stage.
        shuffle_retain: Shuffle the retain set; ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the random labels; ``None``: the run's global seed.
        momentum: SGD momentum of every stage.
        weight_decay: SGD weight decay of every stage.
        nesterov: Nesterov momentum.
        poison_optimizer: Optimiser factory of the poison stage (its own lr wins).
        recover_optimizer: Optimiser factory of the recover stage.
        head_name: Name of the head submodule (the cut and the final linear layer); ``None`` detects it
            (the classifier's ``head_name``, else e.g. ``fc`` on a torchvision ResNet).
    """

    def __init__(
        self,
        model: nn.Module,
        forget_lr: float = 1e-2,
        forget_epochs: int = 1,
        retain_lr: float = 1e-3,
        retain_epochs: int = 5,
        shuffle_retain: bool | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        poison_optimizer: OptimizerCallable | None = None,
        recover_optimizer: OptimizerCallable | None = None,
        head_name: str | None = None,
    ) -> None:
        _check_common(preset, momentum, weight_decay, forget_lr=forget_lr, retain_lr=retain_lr)
        _check_epochs("forget_epochs", forget_epochs)
        _check_epochs("retain_epochs", retain_epochs)
        check_integer("seed", seed, optional=True)
        super().__init__(
            model, _stage_optimizers(poison_optimizer=poison_optimizer, recover_optimizer=recover_optimizer)
        )
        self.shuffle_retain = bool(_resolve(shuffle_retain, preset, True, False))

    def precision_stages(self) -> list[PrecisionStage]:
        """``poison`` then ``recover``."""
        h = self.hparams
        return [
            PrecisionStage("poison", h["forget_epochs"], "poisoned_forget", "model", h["forget_lr"]),
            PrecisionStage(
                "recover", h["retain_epochs"], "retain", "model", h["retain_lr"], shuffle=self.shuffle_retain
            ),
        ]
