"""Supervised training of the original classifier and of the retrain oracle."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.methods.base import (
    GradientUnlearningMethod,
    LRSchedulerCallable,
    OptimizerCallable,
    check_integer,
)


class Classifier(GradientUnlearningMethod):
    """Train a classifier with cross-entropy: the original model, or the retrain oracle on the retain set.

    Regime: gradient (automatic optimisation). Data: plain labelled ``(x, y)`` batches of a datamodule in
    ``mode="pretrain"`` (all of D; the corrupted D̃ in the noisy-label scenario) or ``mode="retrain"`` (the
    retain set only: the retrain oracle, the gold standard every unlearning method is judged against). The
    recipes of the papers (optimiser, schedule, epochs, augmentation) are set in the configs.

    Reference: the pretraining recipes of the seed papers.

    Args:
        model: The classifier to train (usually freshly initialised by ``load_classifier``).
        optimizer: Optimiser factory; ``None`` uses Adam with lr 1e-3.
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
        label_smoothing: Cross-entropy label smoothing in [0, 1).
    """

    data_modes: ClassVar[tuple[str, ...]] = ("pretrain", "retrain")

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.label_smoothing = label_smoothing

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Cross-entropy on one labelled batch."""
        x, y, _ = self.labelled_batch(batch)
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        accuracy = (logits.argmax(1) == y).float().mean()
        self.log("train/acc", accuracy, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """Adam, lr 1e-3."""
        return torch.optim.Adam(params, lr=1e-3)


class RetrainOracle(Classifier):
    """Retrain from scratch on the retain set: the exact-unlearning reference ("oracle").

    Regime: gradient. Data: the retain set only (datamodule ``mode="retrain"``), labelled. Unless
    ``reinitialize=False``, every submodule with ``reset_parameters`` is re-initialised from the seeded
    generator at construction, so a pretrained model passed by mistake still yields a true retrain.

    Reference: the retrain baseline of every seed paper (e.g. S. Shen et al., "Label-Agnostic Forgetting",
    ICLR 2024; M. Krähenmann et al., "Forget with Precision", 2023).

    Args:
        model: The classifier architecture to train.
        optimizer: Optimiser factory; ``None`` uses Adam with lr 1e-3.
        lr_scheduler: Optional scheduler factory, stepped once per epoch.
        label_smoothing: Cross-entropy label smoothing in [0, 1).
        reinitialize: Re-initialise the weights before training.
        seed: Seed of the re-initialisation.
    """

    data_modes: ClassVar[tuple[str, ...]] = ("retrain",)

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        reinitialize: bool = True,
        seed: int = 0,
    ) -> None:
        check_integer("seed", seed)
        super().__init__(model, optimizer=optimizer, lr_scheduler=lr_scheduler, label_smoothing=label_smoothing)
        if reinitialize:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for module in self.model.modules():
                    reset = getattr(module, "reset_parameters", None)
                    if callable(reset):
                        reset()
