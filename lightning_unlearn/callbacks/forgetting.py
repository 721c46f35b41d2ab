"""Per-split accuracy callback: ``acc/<split>`` before unlearning, at each validation and at test."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torchmetrics import Metric

from lightning_unlearn.callbacks.base import SplitMetricsCallback
from lightning_unlearn.metrics.accuracy import SplitAccuracy

__all__ = ["ForgettingMetrics"]


class ForgettingMetrics(SplitMetricsCallback):
    """Logs ``acc/<split>`` (exact top-1 accuracy) for every evaluation split.

    Logged once before unlearning starts (its own pass over the validation loaders, at step 0, kept in
    :attr:`initial_metrics`), at each validation epoch end (latest values in :attr:`final_metrics`) and at test
    (:attr:`test_metrics`). One :class:`~lightning_unlearn.metrics.SplitAccuracy` per split, so values are exact
    counts under DDP.

    Direction: ``acc/forget`` lower = more forgotten (judged by closeness to the retrained model's value);
    ``acc/retain`` and ``acc/test*`` higher = better.

    Args:
        log_initial: Evaluate and log once before unlearning starts.
        every_n_epochs: Evaluate at validation only every this many training epochs (and at the last one).
        evaluate_at_end: Evaluate the final model when training ends if it was not evaluated after its last step.
    """

    def __init__(self, log_initial: bool = True, every_n_epochs: int = 1, evaluate_at_end: bool = True) -> None:
        super().__init__(log_initial=log_initial, every_n_epochs=every_n_epochs, evaluate_at_end=evaluate_at_end)
        self.accuracies: dict[str, SplitAccuracy] = {}

    def configure_splits(self, split_names: Sequence[str]) -> None:
        """One accuracy metric per split (created up front so every process joins every reduction)."""
        self.accuracies = {name: SplitAccuracy() for name in split_names}

    def split_metrics(self) -> list[Metric]:
        """The per-split accuracies."""
        return list(self.accuracies.values())

    def update_split(self, split: str, logits: Tensor, target: Tensor, index: Tensor) -> None:
        """Count one batch of ``split``."""
        self.accuracies[split].update(logits, target)

    def compute_values(self) -> dict[str, float]:
        """``{"acc/<split>": accuracy}`` in split order."""
        return {f"acc/{name}": float(metric.compute()) for name, metric in self.accuracies.items()}
