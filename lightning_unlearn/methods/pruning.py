"""Weight-change pruning after overfitting copies: ``Pruning``, ``PruningLast`` and ``PruningComplex``.

Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
Unlearning Approaches", Deep Learning course project, ETH Zürich, 2023.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_unlearn.hints import warn_no_effect
from lightning_unlearn.methods.base import (
    OptimizerCallable,
    Stage,
    check_integer,
    check_positive,
)
from lightning_unlearn.methods.precision_common import (
    PRUNE_SEED_OFFSET,
    PrecisionStage,
    Preset,
    _check_common,
    _check_epochs,
    _PrecisionMultiStage,
    _resolve,
    _stage_optimizers,
    change_mask,
    reinit,
)
from lightning_unlearn.models.cut import final_linear


class _PruningBase(_PrecisionMultiStage):
    """Overfit copies, reset the least-changed weights of eligible tensors, finetune on the retain set.

    Budget: each stage's budget is optimiser steps, ``epochs * ceil(|split| / batch_size)`` for the stage's split
    (the forget set while overfitting, the retain set while finetuning), so the datamodule's ``batch_size`` is
    part of the setting: a larger batch takes fewer steps in the same epochs. ``cost/optimizer_steps`` reports
    what a run took.
    """

    copy_names: tuple[str, ...] = ("copy_forget",)
    copy_forget: nn.Module | None

    def __init__(
        self,
        model: nn.Module,
        overfit_lr: float,
        overfit_epochs: int,
        quantile: float,
        retain_lr: float,
        retain_epochs: int,
        shuffle_retain: bool | None,
        preset: str,
        momentum: float,
        weight_decay: float,
        stage_optimizers: dict[str, OptimizerCallable | None],
    ) -> None:
        _check_common(preset, momentum, weight_decay, overfit_lr=overfit_lr, retain_lr=retain_lr)
        _check_epochs("overfit_epochs", overfit_epochs)
        _check_epochs("retain_epochs", retain_epochs)
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        super().__init__(model, stage_optimizers)
        self.shuffle_retain = bool(_resolve(shuffle_retain, preset, True, False))
        if not self.eligible_names():
            raise ValueError(f"{type(self).__name__}: the classifier has no eligible tensor (>= 2 dimensions)")

    def eligible_names(self) -> list[str]:
        """Qualified parameter names (of the classifier) the edit may reset: every tensor with >= 2 dims."""
        return [n for n, p in self.model.named_parameters() if p.dim() >= 2]

    def edit_stage_name(self) -> str:
        """The stage after whose end the edit runs."""
        return "overfit_forget"

    def precision_stages(self) -> list[PrecisionStage]:
        """``overfit_forget`` then ``finetune``."""
        h = self.hparams
        return [
            PrecisionStage(
                "overfit_forget", h["overfit_epochs"], "forget", "copy_forget", h["overfit_lr"], global_batches=True
            ),
            PrecisionStage(
                "finetune", h["retain_epochs"], "retain", "model", h["retain_lr"], shuffle=self.shuffle_retain
            ),
        ]

    def stage_end(self, stage: Stage) -> None:
        """Apply the edit after the last overfit stage, then free the copies."""
        if stage.name == self.edit_stage_name():
            self.apply_edit()
            self.free_copies()

    def masks(self) -> dict[str, Tensor]:
        """Per eligible tensor, the mask of entries to reset."""
        copies = dict(self._copy_params("copy_forget"))
        q = float(self.hparams["quantile"])
        params = dict(self.model.named_parameters())
        return {n: change_mask(params[n], copies[n], q) for n in self.eligible_names()}

    def _copy_params(self, name: str) -> dict[str, Tensor]:
        network = getattr(self, name, None)
        if network is None:
            raise RuntimeError(f"{type(self).__name__}: copy {name!r} is missing (already freed?)")
        return dict(network.named_parameters())

    @torch.no_grad()
    def apply_edit(self) -> None:
        """Reset the masked entries of every eligible tensor (fresh Kaiming draws, ``named_parameters`` order)."""
        masks = self.masks()
        generator = self._generator(PRUNE_SEED_OFFSET)
        total = reset = 0
        for name, param in self.model.named_parameters():
            if name not in masks:
                continue
            count = reinit(param.data, masks[name], generator)
            reset += count
            total += param.numel()
            self._log_value(f"prune/reset_fraction/{name}", count / param.numel())
        self._log_value("prune/reset_count", reset)
        self._log_value("prune/eligible_count", total)
        self._log_value("prune/reset_fraction", reset / max(1, total))
        if reset == 0:
            warn_no_effect(self, f"reset 0 of {total} eligible weights")


class Pruning(_PruningBase):
    """Reset, in every weight tensor, the weights that changed least while overfitting a copy on the forget set.

    Regime: multi-stage (manual optimisation). Stages: ``overfit_forget`` (a copy of the classifier, a registered
    submodule, trained on the forget set with its true labels, ``overfit_epochs``, lr ``overfit_lr``, shuffled)
    → edit at the stage's end: for every parameter with >= 2 dimensions, ``reinit(θ, change_mask(θ0, copy,
    quantile))`` (Kaiming-normal fan-in draws from the seeded generator; biases, norm parameters and buffers
    untouched), then the copy is freed → ``finetune`` (retain set, ``retain_epochs``, lr ``retain_lr``). Each stage:
    new SGD, momentum 0.9, Nesterov, weight decay 5e-4, constant lr. Splits: labelled ``forget`` and ``retain``.
    The epoch budget ``overfit_epochs + retain_epochs`` follows from the stages (``trainer.max_epochs`` is set from
    it and the loaders are rebuilt every epoch).

    Quirk (``preset="reference"``): the retain loader is not shuffled.

    Under DDP the overfit stages train on *global* batches (``Phase.global_batches``): every rank walks the
    one-process batch order and trains on its share of each batch with a share-weighted loss, so the copies, and
    with them the edit, are those of one process (exactly for networks without batch norm; with batch norm each
    rank normalises its share with the share's own statistics). The finetune stage is ordinary data-parallel
    training.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (pruning, all layers).

    Args:
        model: The trained classifier to unlearn.
        overfit_lr: Learning rate of the overfit copy.
        overfit_epochs: Epochs of the overfit stage.
        quantile: Fraction of each tensor to reset, in (0, 1).
        retain_lr: Learning rate of the finetune stage.
        retain_epochs: Epochs of the finetune stage.
        shuffle_retain: Shuffle the retain set; ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the re-initialisation draws; ``None``: the run's global seed.
        momentum: SGD momentum of every stage.
        weight_decay: SGD weight decay of every stage.
        nesterov: Nesterov momentum.
        overfit_forget_optimizer: Optimiser factory of the overfit stage (its own lr wins).
        finetune_optimizer: Optimiser factory of the finetune stage.
        head_name: Name of the head submodule (the cut and the final linear layer); ``None`` detects it
            (the classifier's ``head_name``, else e.g. ``fc`` on a torchvision ResNet).
    """

    def __init__(
        self,
        model: nn.Module,
        overfit_lr: float = 1e-2,
        overfit_epochs: int = 20,
        quantile: float = 0.3,
        retain_lr: float = 1e-3,
        retain_epochs: int = 5,
        shuffle_retain: bool | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        overfit_forget_optimizer: OptimizerCallable | None = None,
        finetune_optimizer: OptimizerCallable | None = None,
        head_name: str | None = None,
    ) -> None:
        check_integer("seed", seed, optional=True)
        super().__init__(
            model,
            overfit_lr,
            overfit_epochs,
            quantile,
            retain_lr,
            retain_epochs,
            shuffle_retain,
            preset,
            momentum,
            weight_decay,
            _stage_optimizers(overfit_forget_optimizer=overfit_forget_optimizer, finetune_optimizer=finetune_optimizer),
        )


class PruningLast(_PruningBase):
    """As :class:`Pruning`, but only the weight of the final linear layer may be reset ("Pruning Last").

    The final linear layer is the last ``nn.Linear`` of the classifier's head (the reference takes the
    second-to-last ``state_dict`` entry, the same tensor on its ResNet-18). The head bias and every other
    parameter and buffer stay bit-identical through the edit.

    Regime, stages, splits, quirks and arguments: as :class:`Pruning`.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``prune_last_layer``).

    Args:
        model: The trained classifier to unlearn.
        overfit_lr: Learning rate of the overfit copy.
        overfit_epochs: Epochs of the overfit stage.
        quantile: Fraction of the head weight to reset, in (0, 1).
        retain_lr: Learning rate of the finetune stage.
        retain_epochs: Epochs of the finetune stage.
        shuffle_retain: Shuffle the retain set; ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the re-initialisation draws; ``None``: the run's global seed.
        momentum: SGD momentum of every stage.
        weight_decay: SGD weight decay of every stage.
        nesterov: Nesterov momentum.
        overfit_forget_optimizer: Optimiser factory of the overfit stage (its own lr wins).
        finetune_optimizer: Optimiser factory of the finetune stage.
        head_name: Name of the head submodule (the cut and the final linear layer); ``None`` detects it
            (the classifier's ``head_name``, else e.g. ``fc`` on a torchvision ResNet).
    """

    def __init__(
        self,
        model: nn.Module,
        overfit_lr: float = 1e-2,
        overfit_epochs: int = 20,
        quantile: float = 0.3,
        retain_lr: float = 1e-3,
        retain_epochs: int = 5,
        shuffle_retain: bool | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        overfit_forget_optimizer: OptimizerCallable | None = None,
        finetune_optimizer: OptimizerCallable | None = None,
        head_name: str | None = None,
    ) -> None:
        check_integer("seed", seed, optional=True)
        super().__init__(
            model,
            overfit_lr,
            overfit_epochs,
            quantile,
            retain_lr,
            retain_epochs,
            shuffle_retain,
            preset,
            momentum,
            weight_decay,
            _stage_optimizers(overfit_forget_optimizer=overfit_forget_optimizer, finetune_optimizer=finetune_optimizer),
        )

    def eligible_names(self) -> list[str]:
        """Only the weight of the final linear layer of the head."""
        weight = final_linear(self.model, self.head_name).weight
        return [n for n, p in self.model.named_parameters() if p is weight]


class PruningComplex(_PruningBase):
    """Reset weights that changed least both when overfitting the forget set and a retain sample.

    Regime: multi-stage (manual optimisation). Stages: ``overfit_forget`` (copy A of θ0 on the forget set, true
    labels, ``overfit_epochs``, lr ``overfit_lr``) → ``overfit_retain_sample`` (copy B of θ0, not of A, on a
    seeded sample S of the retain set of ``retain_sample_size`` or ``floor(retain_fraction * |R|)`` samples,
    ``overfit_epochs``, lr ``retain_overfit_lr``) → edit: for every tensor with >= 2 dims,
    ``reinit(θ, change_mask(θ0, A, q) & change_mask(θ0, B, q))``, copies freed → ``finetune`` (retain set,
    ``retain_epochs``, lr ``retain_lr``). Each stage: new SGD, momentum 0.9, Nesterov, weight decay 5e-4,
    constant lr. Splits: labelled ``forget``, ``retain_sample`` and ``retain``. The epoch budget ``2 *
    overfit_epochs + retain_epochs`` follows from the stages (``trainer.max_epochs`` is set from it and the loaders
    are rebuilt every epoch).

    Quirks (``preset="reference"``): copy B trains at ``overfit_lr // 3`` = 0.0, so B never moves, its mask
    is empty and nothing is reset; corrected: ``overfit_lr / 3``; the retain loader is not shuffled.

    Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
    Unlearning Approaches", ETH Zürich, 2023 (``selective_pruning_complex``).

    Args:
        model: The trained classifier to unlearn.
        overfit_lr: Learning rate of copy A.
        overfit_epochs: Epochs of each overfit stage.
        quantile: Quantile of each change mask, in (0, 1).
        retain_lr: Learning rate of the finetune stage.
        retain_epochs: Epochs of the finetune stage.
        retain_overfit_lr: Learning rate of copy B; ``None``: ``overfit_lr / 3`` (corrected) or
            ``overfit_lr // 3`` (reference).
        retain_fraction: Size of S as a fraction of the retain set, in (0, 1].
        retain_sample_size: Size of S (overrides ``retain_fraction``).
        shuffle_retain: Shuffle the retain set; ``None`` follows the preset.
        preset: ``"corrected"`` or ``"reference"``.
        seed: Seed of the re-initialisation draws; ``None``: the run's global seed.
        momentum: SGD momentum of every stage.
        weight_decay: SGD weight decay of every stage.
        nesterov: Nesterov momentum.
        overfit_forget_optimizer: Optimiser factory of copy A's stage (its own lr wins).
        overfit_retain_sample_optimizer: Optimiser factory of copy B's stage.
        finetune_optimizer: Optimiser factory of the finetune stage.
        head_name: Name of the head submodule (the cut and the final linear layer); ``None`` detects it
            (the classifier's ``head_name``, else e.g. ``fc`` on a torchvision ResNet).
    """

    copy_names = ("copy_forget", "copy_retain")
    copy_retain: nn.Module | None

    def __init__(
        self,
        model: nn.Module,
        overfit_lr: float = 1e-2,
        overfit_epochs: int = 20,
        quantile: float = 0.3,
        retain_lr: float = 1e-3,
        retain_epochs: int = 5,
        retain_overfit_lr: float | None = None,
        retain_fraction: float = 0.02,
        retain_sample_size: int | None = None,
        shuffle_retain: bool | None = None,
        preset: Preset = "corrected",
        seed: int | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = True,
        overfit_forget_optimizer: OptimizerCallable | None = None,
        overfit_retain_sample_optimizer: OptimizerCallable | None = None,
        finetune_optimizer: OptimizerCallable | None = None,
        head_name: str | None = None,
    ) -> None:
        check_integer("seed", seed, optional=True)
        if retain_overfit_lr is not None:
            check_positive("retain_overfit_lr", retain_overfit_lr, allow_zero=True)
        if not 0.0 < retain_fraction <= 1.0:
            raise ValueError(f"retain_fraction must be in (0, 1], got {retain_fraction!r}")
        check_integer("retain_sample_size", retain_sample_size, 1, optional=True)
        super().__init__(
            model,
            overfit_lr,
            overfit_epochs,
            quantile,
            retain_lr,
            retain_epochs,
            shuffle_retain,
            preset,
            momentum,
            weight_decay,
            _stage_optimizers(
                overfit_forget_optimizer=overfit_forget_optimizer,
                overfit_retain_sample_optimizer=overfit_retain_sample_optimizer,
                finetune_optimizer=finetune_optimizer,
            ),
        )
        self.retain_overfit_lr = float(_resolve(retain_overfit_lr, preset, overfit_lr / 3, overfit_lr // 3))

    def edit_stage_name(self) -> str:
        """The edit runs after copy B's stage."""
        return "overfit_retain_sample"

    def precision_stages(self) -> list[PrecisionStage]:
        """``overfit_forget``, ``overfit_retain_sample``, ``finetune``."""
        h = self.hparams
        return [
            PrecisionStage(
                "overfit_forget", h["overfit_epochs"], "forget", "copy_forget", h["overfit_lr"], global_batches=True
            ),
            PrecisionStage(
                "overfit_retain_sample",
                h["overfit_epochs"],
                "retain_sample",
                "copy_retain",
                self.retain_overfit_lr,
                global_batches=True,
            ),
            PrecisionStage(
                "finetune", h["retain_epochs"], "retain", "model", h["retain_lr"], shuffle=self.shuffle_retain
            ),
        ]

    def stage_end(self, stage: Stage) -> None:
        """Edit after the last overfit stage that runs (copy B's, or A's when B has 0 epochs)."""
        active = [s.name for s in self.active_stages()]
        edit_after = "overfit_retain_sample" if "overfit_retain_sample" in active else "overfit_forget"
        if stage.name == edit_after:
            self.apply_edit()
            self.free_copies()

    def masks(self) -> dict[str, Tensor]:
        """``change_mask(θ0, A, q) & change_mask(θ0, B, q)`` per eligible tensor; logs both mask fractions."""
        a = self._copy_params("copy_forget")
        b = self._copy_params("copy_retain")
        q = float(self.hparams["quantile"])
        params = dict(self.model.named_parameters())
        out: dict[str, Tensor] = {}
        n_a = n_b = total = 0
        for name in self.eligible_names():
            mask_a = change_mask(params[name], a[name], q)
            mask_b = change_mask(params[name], b[name], q)
            n_a += int(mask_a.sum())
            n_b += int(mask_b.sum())
            total += mask_a.numel()
            out[name] = mask_a & mask_b
        self._log_value("prune/mask_forget_fraction", n_a / max(1, total))
        self._log_value("prune/mask_retain_fraction", n_b / max(1, total))
        return out
