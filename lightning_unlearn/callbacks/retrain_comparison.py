"""Comparison with the retrained model: ``gap/*`` and ``dist/*`` (``metrics.md`` §4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_unlearn.callbacks.base import SplitMetricsCallback
from lightning_unlearn.metrics.accuracy import SplitAccuracy
from lightning_unlearn.metrics.distances import OutputDistance
from lightning_unlearn.models.factory import load_classifier

__all__ = ["RetrainComparison"]

#: Splits whose accuracy enters a gap, in logging order.
_GAP_SPLITS: tuple[str, ...] = ("forget", "retain", "test", "test_retain")


class RetrainComparison(SplitMetricsCallback):
    """Compares the unlearned model with a retrain oracle loaded from ``reference_ckpt`` (``metrics.md`` §4).

    The oracle is built with :func:`~lightning_unlearn.models.load_classifier` (``torch.load(weights_only=True)``;
    a raw state dict as written by :func:`~lightning_unlearn.models.export_classifier`, or a Lightning checkpoint)
    once, on first use, then moved to the module's device, put in eval mode and frozen. It is held by the callback,
    not the module, so it is not trained, not saved in checkpoints and not wrapped by DDP. At every evaluation it
    runs beside the unlearned model on the same inputs (``batch[0]`` of each ``(x, y, index)`` batch).

    Logged names (all lower = closer to the retrained model, ideal 0):

    - ``gap/acc_forget``, ``gap/acc_retain``, ``gap/acc_test``: ``|acc_u - acc_r|`` on the ``forget``, ``retain``
      and test splits; the test gap uses ``test_retain`` when the datamodule provides it (the scenario's TA in
      class-wise forgetting) and ``test`` otherwise. A gap whose split is not provided is not logged. The
      oracle's accuracies are computed once, at the first evaluation that sees the split, and cached in
      :attr:`reference_metrics` (as ``acc/<split>``; kept in this callback's checkpoint state); the unlearned
      model's are computed by this callback. With ``log_initial=False`` and ``Trainer(limit_val_batches < 1.0)``
      the cached values would cover only part of each split.
    - ``gap/avg``: mean of the logged accuracy gaps (the SalUn MIA-efficacy gap is not included here).
    - ``dist/activation_l2``, ``dist/activation_l1``, ``dist/js``, ``dist/js_std``: softmax-output distances on the
      ``forget`` split (:class:`~lightning_unlearn.metrics.OutputDistance`).

    Logged at the same moments as the other metric callbacks: before unlearning (step 0, :attr:`initial_metrics`),
    at validation epoch ends (:attr:`final_metrics`) and at test (:attr:`test_metrics`). All states are sums, so 1
    and N processes log the same values.

    Args:
        arch: Architecture id of the oracle (see :data:`~lightning_unlearn.models.ARCHITECTURES`).
        num_classes: Number of classes.
        reference_ckpt: Path of the retrain oracle's weights.
        in_channels: Input channels passed to ``load_classifier`` (``None`` = the architecture's default).
        input_size: Input size passed to ``load_classifier`` (only for architectures that need it).
        log_initial: Evaluate and log once before unlearning starts.
        every_n_epochs: Evaluate at validation only every this many training epochs (and at the last one).

    Raises:
        ValueError: From ``load_classifier`` on an unusable checkpoint, or, when evaluating, if the datamodule has no
            ``forget`` split.
        FileNotFoundError: If ``reference_ckpt`` does not exist.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        reference_ckpt: str,
        in_channels: int | None = None,
        input_size: int | None = None,
        log_initial: bool = True,
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__(log_initial=log_initial, every_n_epochs=every_n_epochs)
        self.arch = arch
        self.num_classes = num_classes
        self.reference_ckpt = reference_ckpt
        self.in_channels = in_channels
        self.input_size = input_size
        #: Cached accuracies of the retrain oracle, ``{"acc/<split>": value}``.
        self.reference_metrics: dict[str, float] = {}
        self.distance = OutputDistance()
        self.accuracies: dict[str, SplitAccuracy] = {}
        self.reference_accuracies: dict[str, SplitAccuracy] = {}
        self._reference: nn.Module | None = None

    @property
    def state_key(self) -> str:
        """Distinguishes instances comparing with different oracles in one trainer's checkpoint."""
        return self._generate_state_key(reference_ckpt=self.reference_ckpt)

    # ------------------------------------------------------------------ the oracle
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Load the oracle once (on every process), so a bad checkpoint fails before any work."""
        self._load_reference()

    def _load_reference(self) -> nn.Module:
        if self._reference is None:
            model = load_classifier(
                self.arch,
                self.num_classes,
                self.reference_ckpt,
                in_channels=self.in_channels,
                input_size=self.input_size,
            )
            model.eval()
            model.requires_grad_(False)
            self._reference = model
        return self._reference

    def reference_logits(self, inputs: Tensor) -> Tensor:
        """The oracle's logits on ``inputs``, in eval mode, on the inputs' device, without gradients."""
        reference = self._load_reference()
        first = next(reference.parameters(), None)
        if first is not None and first.device != inputs.device:
            with torch.inference_mode(False):  # ordinary tensors even when called inside Lightning's eval loop
                reference.to(inputs.device)
        reference.eval()
        with torch.no_grad():
            return reference(inputs).detach()

    @staticmethod
    def _inputs(batch: Any) -> Tensor:
        if isinstance(batch, Tensor):
            return batch
        if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) > 0:
            if isinstance(batch[0], Tensor):
                return batch[0]
        raise TypeError(
            "RetrainComparison needs evaluation batches (x, y, index) whose first element is the input tensor, got "
            f"{type(batch).__name__}"
        )

    # ------------------------------------------------------------------ SplitMetricsCallback hooks
    def configure_splits(self, split_names: Sequence[str]) -> None:
        """Accuracy metrics for the gap splits present, and oracle accuracies for those not yet cached.

        Raises:
            ValueError: If there is no ``forget`` split.
        """
        if "forget" not in split_names:
            raise ValueError(
                f"RetrainComparison needs a 'forget' evaluation split (the datamodule provides {list(split_names)})"
            )
        present = [name for name in _GAP_SPLITS if name in split_names]
        self.accuracies = {name: SplitAccuracy() for name in present}
        self.reference_accuracies = {
            name: SplitAccuracy() for name in present if f"acc/{name}" not in self.reference_metrics
        }

    def split_metrics(self) -> list[Metric]:
        """The distance, the unlearned model's accuracies and the not yet cached oracle accuracies."""
        return [self.distance, *self.accuracies.values(), *self.reference_accuracies.values()]

    def accepts(self, split: str) -> bool:
        """Only the forget, retain and test splits are needed."""
        return split in self.accuracies

    def update_batch(self, split: str, outputs: Any, batch: Any) -> None:
        """Count the unlearned model's batch, then run the oracle on the same inputs when needed."""
        super().update_batch(split, outputs, batch)
        if split != "forget" and split not in self.reference_accuracies:
            return
        logits = outputs["logits"]
        reference = self.reference_logits(self._inputs(batch).to(logits.device))
        if split == "forget":
            self.distance.update(logits, reference)
        if split in self.reference_accuracies:
            self.reference_accuracies[split].update(reference, outputs["target"])

    def update_split(self, split: str, logits: Tensor, target: Tensor, index: Tensor) -> None:
        """Count the unlearned model's correct predictions on ``split``."""
        self.accuracies[split].update(logits, target)

    def compute_values(self) -> dict[str, float]:
        """``gap/*`` then ``dist/*``; the first computation of an oracle accuracy is cached."""
        for name, metric in self.reference_accuracies.items():
            self.reference_metrics[f"acc/{name}"] = float(metric.compute())
        self.reference_accuracies = {}
        unlearned = {name: float(metric.compute()) for name, metric in self.accuracies.items()}
        test_split = "test_retain" if "test_retain" in unlearned else "test"
        values: dict[str, float] = {}
        for gap, split in (("acc_forget", "forget"), ("acc_retain", "retain"), ("acc_test", test_split)):
            if split in unlearned:
                values[f"gap/{gap}"] = abs(unlearned[split] - self.reference_metrics[f"acc/{split}"])
        values["gap/avg"] = sum(values.values()) / len(values)
        distances = self.distance.compute()
        values.update({f"dist/{name}": float(value) for name, value in distances.items()})
        return values

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Initial and latest values, and the cached oracle accuracies."""
        return {**super().state_dict(), "reference_metrics": dict(self.reference_metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the values saved by :meth:`state_dict`."""
        super().load_state_dict(state_dict)
        cached = state_dict.get("reference_metrics", {})
        if isinstance(cached, Mapping):
            self.reference_metrics = {str(k): float(v) for k, v in cached.items()}
            self._split_names = None  # rebuild the oracle metrics without the restored splits
