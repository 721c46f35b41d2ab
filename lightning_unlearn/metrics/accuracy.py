"""Exact top-1 accuracy of one evaluation split."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class SplitAccuracy(Metric):
    """Fraction of a split's samples whose argmax logit equals the stored label, logged as ``acc/<split>``.

    An exact count over the whole split (not a mean of per-batch accuracies): ``correct`` and ``total`` are int64
    sums reduced with ``"sum"`` across processes, so 1 and N processes give the same value when every sample is
    evaluated on exactly one rank.

    Direction depends on the split, so ``higher_is_better`` is ``None``: ``acc/forget`` lower = more forgotten,
    judged by closeness to the retrained model's value; ``acc/retain`` and ``acc/test*`` higher = better.

    Returns ``nan`` for a split without samples.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    correct: Tensor
    total: Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.add_state("correct", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Count the correct predictions of one batch.

        Args:
            logits: Logits of shape ``[n, C]``.
            target: Integer labels of shape ``[n]``.

        Raises:
            ValueError: If the shapes do not match.
        """
        if logits.ndim != 2 or target.ndim != 1 or target.shape[0] != logits.shape[0]:
            raise ValueError(
                f"SplitAccuracy expects logits [n, C] and target [n], got {tuple(logits.shape)} and "
                f"{tuple(target.shape)}"
            )
        pred = logits.argmax(dim=1)
        correct = (pred == target.to(pred.device)).sum()
        self.correct += correct.to(device=self.correct.device, dtype=torch.int64)
        self.total += target.shape[0]

    def compute(self) -> Tensor:
        """Return ``correct / total`` as a float64 scalar (``nan`` when the split is empty)."""
        if int(self.total) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.correct.device)
        return self.correct.to(torch.float64) / self.total.to(torch.float64)
