"""Comparison with the retrained model: ``gap/*`` and ``dist/*``."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_unlearn.callbacks.base import SplitMetricsCallback
from lightning_unlearn.datamodules.batches import unpack_batch
from lightning_unlearn.metrics.accuracy import SplitAccuracy
from lightning_unlearn.metrics.attacks import SVCConfidenceMIA
from lightning_unlearn.metrics.distances import OutputDistance
from lightning_unlearn.models.factory import load_classifier, load_weights

__all__ = ["RetrainComparison"]

#: Splits whose accuracy enters a gap, in logging order.
_GAP_SPLITS: tuple[str, ...] = ("forget", "retain", "test", "test_retain")
#: Name of the SalUn MIA efficacy, whose gap enters ``gap/avg``.
_SVC = f"mia/{SVCConfidenceMIA.name}"


class RetrainComparison(SplitMetricsCallback):
    """Compares the unlearned model with a retrain oracle loaded from ``reference_ckpt``.

    The oracle is built with :func:`~lightning_unlearn.models.load_classifier` from ``arch`` / ``num_classes``, or,
    for your own architecture, by loading the checkpoint into a copy of ``reference_model`` (any ``nn.Module`` of
    the classifier's architecture, e.g. the same YAML spec as the method's ``model``; see
    :func:`~lightning_unlearn.models.load_weights`). Either way the file is read with
    ``torch.load(weights_only=True)`` (a raw state dict as written by
    :func:`~lightning_unlearn.models.export_classifier`, or a Lightning checkpoint) once, on first use, then
    moved to the module's device, put in eval mode and frozen. It is held by the callback, not the module, so it
    is not trained, not saved in checkpoints and not wrapped by DDP. At every evaluation it runs beside the
    unlearned model on the same inputs (the ``input`` of each evaluation ``LabelledBatch``).

    Logged names (all lower = closer to the retrained model, ideal 0):

    - ``gap/acc_forget``, ``gap/acc_retain``, ``gap/acc_test``: ``|acc_u - acc_r|`` on the ``forget``, ``retain``
      and test splits; the test gap uses ``test_retain`` when the datamodule provides it (the scenario's TA in
      class-wise forgetting) and ``test`` otherwise. A gap whose split is not provided is not logged. The
      oracle's accuracies are computed once, at the first evaluation that sees the split, and cached in
      :attr:`reference_metrics` (as ``acc/<split>``; kept in this callback's checkpoint state); the unlearned
      model's are computed by this callback. With ``log_initial=False`` and ``Trainer(limit_val_batches < 1.0)``
      the cached values would cover only part of each split.
    - ``gap/mia_svc_confidence_efficacy``: ``|efficacy_u - efficacy_r|`` of SalUn's MIA efficacy
      (:class:`~lightning_unlearn.metrics.SVCConfidenceMIA`, both models attacked with the same protocol; the
      oracle's value is cached like its accuracies). Needs the ``retain`` and a test split; ``svc_gap=False``
      turns it off.
    - ``gap/avg``: mean of the logged gaps (SalUn's "Avg. Gap" over UA, MIA-Efficacy, RA and TA; the UA gap equals
      the forget-accuracy gap).
    - ``dist/activation_l2``, ``dist/activation_l1``, ``dist/js``, ``dist/js_std``: softmax-output distances on the
      ``forget`` split (:class:`~lightning_unlearn.metrics.OutputDistance`).
    - ``dist/zrf``: ZRF score, ``1 - JS`` (the code form of ``dist/js``) between the unlearned model and a randomly
      initialised model of the same architecture (seeded with ``zrf_seed``; with ``reference_model``, a copy whose
      submodules' ``reset_parameters`` ran), on the forget-class test samples
      (``test_forget``) when the datamodule provides them (class scenarios) and on ``forget`` otherwise. Closer to
      the retrained model's value is better (the value is the unlearned model's; the oracle's is not computed).

    Logged at the same moments as the other metric callbacks: before unlearning (step 0, :attr:`initial_metrics`),
    at validation epoch ends (:attr:`final_metrics`) and at test (:attr:`test_metrics`). All states are sums, so 1
    and N processes log the same values.

    Args:
        arch: Architecture id of the oracle (see :data:`~lightning_unlearn.models.ARCHITECTURES`); not needed with
            ``reference_model``.
        num_classes: Number of classes (with ``arch``).
        reference_ckpt: Path of the retrain oracle's weights (required).
        in_channels: Input channels passed to ``load_classifier`` (``None`` = the architecture's default).
        input_size: Input size passed to ``load_classifier`` (only for architectures that need it).
        log_initial: Evaluate and log once before unlearning starts.
        every_n_epochs: Evaluate at validation only every this many training epochs (and at the last one).
        svc_gap: Also compute the MIA-efficacy gap (one SVC fit per evaluation, plus one for the oracle).
        zrf_seed: Seed of the random model of ``dist/zrf``; ``None`` turns ``dist/zrf`` off.
        evaluate_at_end: Evaluate the final model when training ends if it was not evaluated after its last step.
        reference_model: The oracle's architecture as a module (its own weights are replaced by the checkpoint's;
            the module passed is not modified).

    Raises:
        ValueError: If ``reference_ckpt`` is missing, or neither ``reference_model`` nor ``arch`` and
            ``num_classes`` are given.
        ValueError: From ``load_classifier`` on an unusable checkpoint, or, when evaluating, if the datamodule has no
            ``forget`` split.
        FileNotFoundError: If ``reference_ckpt`` does not exist.
    """

    def __init__(
        self,
        arch: str | None = None,
        num_classes: int | None = None,
        reference_ckpt: str | None = None,
        in_channels: int | None = None,
        input_size: int | None = None,
        log_initial: bool = True,
        every_n_epochs: int = 1,
        svc_gap: bool = True,
        zrf_seed: int | None = 0,
        evaluate_at_end: bool = True,
        reference_model: nn.Module | None = None,
    ) -> None:
        if not reference_ckpt:
            raise ValueError("RetrainComparison needs reference_ckpt, the retrain oracle's weights")
        if reference_model is None and (arch is None or num_classes is None):
            raise ValueError(
                "RetrainComparison needs the oracle's architecture: reference_model (a module) or arch and num_classes"
            )
        super().__init__(log_initial=log_initial, every_n_epochs=every_n_epochs, evaluate_at_end=evaluate_at_end)
        self.reference_model = reference_model
        self.svc_gap = svc_gap
        self.zrf_seed = zrf_seed
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
        self.svc: SVCConfidenceMIA | None = None
        self.reference_svc: SVCConfidenceMIA | None = None
        self.zrf_distance = OutputDistance()
        self._zrf_split = "forget"
        self._reference: nn.Module | None = None
        self._random: nn.Module | None = None

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
            if self.reference_model is not None:
                model = load_weights(copy.deepcopy(self.reference_model), str(self.reference_ckpt))
            else:
                model = load_classifier(
                    str(self.arch),
                    int(self.num_classes or 0),
                    self.reference_ckpt,
                    in_channels=self.in_channels,
                    input_size=self.input_size,
                )
            model.eval()
            model.requires_grad_(False)
            self._reference = model
        return self._reference

    def _load_random(self) -> nn.Module:
        if self._random is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(self.zrf_seed or 0))
                if self.reference_model is not None:
                    model = copy.deepcopy(self.reference_model)
                    for module in model.modules():
                        reset = getattr(module, "reset_parameters", None)
                        if callable(reset):
                            reset()
                else:
                    model = load_classifier(
                        str(self.arch),
                        int(self.num_classes or 0),
                        in_channels=self.in_channels,
                        input_size=self.input_size,
                    )
            model.eval()
            model.requires_grad_(False)
            self._random = model
        return self._random

    def reference_logits(self, inputs: Tensor) -> Tensor:
        """The oracle's logits on ``inputs``, in eval mode, on the inputs' device, without gradients."""
        return self._frozen_logits(self._load_reference(), inputs)

    def random_logits(self, inputs: Tensor) -> Tensor:
        """Logits of the seeded random model of ``dist/zrf`` on ``inputs`` (eval mode, no gradients)."""
        return self._frozen_logits(self._load_random(), inputs)

    @staticmethod
    def _frozen_logits(model: nn.Module, inputs: Tensor) -> Tensor:
        first = next(model.parameters(), None)
        if first is not None and first.device != inputs.device:
            with torch.inference_mode(False):  # ordinary tensors even when called inside Lightning's eval loop
                model.to(inputs.device)
        model.eval()
        with torch.no_grad():
            return model(inputs).detach()

    @staticmethod
    def _inputs(batch: Any) -> Tensor:
        try:
            x = unpack_batch(batch)[0]
        except TypeError:
            x = None
        if not isinstance(x, Tensor):
            raise TypeError(
                "RetrainComparison needs evaluation batches (a LabelledBatch, or a tuple (x, y[, index])) whose "
                f"input is a tensor, got {type(batch).__name__}"
            )
        return x

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
        has_svc_splits = "retain" in split_names and ("test" in split_names or "test_retain" in split_names)
        self.svc = SVCConfidenceMIA() if self.svc_gap and has_svc_splits else None
        cached = _SVC in self.reference_metrics
        self.reference_svc = SVCConfidenceMIA() if self.svc is not None and not cached else None
        self._zrf_split = "test_forget" if "test_forget" in split_names else "forget"

    def split_metrics(self) -> list[Metric]:
        """The distances, the unlearned model's accuracies and attack, and the oracle's not yet cached ones."""
        metrics: list[Metric] = [self.distance, *self.accuracies.values(), *self.reference_accuracies.values()]
        if self.zrf_seed is not None:
            metrics.append(self.zrf_distance)
        metrics.extend(m for m in (self.svc, self.reference_svc) if m is not None)
        return metrics

    def accepts(self, split: str) -> bool:
        """Only the forget, retain and test splits (and ``test_forget`` for ZRF) are needed."""
        return split in self.accuracies or (self.zrf_seed is not None and split == self._zrf_split)

    def update_batch(self, split: str, outputs: Any, batch: Any) -> None:
        """Count the unlearned model's batch, then run the oracle (and the random model) on the same inputs."""
        super().update_batch(split, outputs, batch)
        logits = outputs["logits"]
        if self.zrf_seed is not None and split == self._zrf_split:
            self.zrf_distance.update(logits, self.random_logits(self._inputs(batch).to(logits.device)))
        reference_svc = self.reference_svc is not None and split in SVCConfidenceMIA.splits
        if split != "forget" and split not in self.reference_accuracies and not reference_svc:
            return
        reference = self.reference_logits(self._inputs(batch).to(logits.device))
        if split == "forget":
            self.distance.update(logits, reference)
        if split in self.reference_accuracies:
            self.reference_accuracies[split].update(reference, outputs["target"])
        if reference_svc and self.reference_svc is not None:
            self.reference_svc.update(split, reference, outputs["target"], outputs["index"])

    def update_split(self, split: str, logits: Tensor, target: Tensor, index: Tensor) -> None:
        """Count the unlearned model's correct predictions on ``split`` and feed its MIA-efficacy attack."""
        if split in self.accuracies:
            self.accuracies[split].update(logits, target)
        if self.svc is not None and split in SVCConfidenceMIA.splits:
            self.svc.update(split, logits, target, index)

    def compute_values(self) -> dict[str, float]:
        """``gap/*`` then ``dist/*``; the first computation of an oracle accuracy is cached."""
        for name, metric in self.reference_accuracies.items():
            self.reference_metrics[f"acc/{name}"] = float(metric.compute())
        self.reference_accuracies = {}
        if self.reference_svc is not None:
            self.reference_metrics[_SVC] = float(self.reference_svc.compute())
            self.reference_svc = None
        unlearned = {name: float(metric.compute()) for name, metric in self.accuracies.items()}
        test_split = "test_retain" if "test_retain" in unlearned else "test"
        values: dict[str, float] = {}
        for gap, split in (("acc_forget", "forget"), ("acc_retain", "retain"), ("acc_test", test_split)):
            if split in unlearned:
                values[f"gap/{gap}"] = abs(unlearned[split] - self.reference_metrics[f"acc/{split}"])
        if self.svc is not None:
            values["gap/mia_svc_confidence_efficacy"] = abs(float(self.svc.compute()) - self.reference_metrics[_SVC])
        values["gap/avg"] = sum(values.values()) / len(values)
        distances = self.distance.compute()
        values.update({f"dist/{name}": float(value) for name, value in distances.items()})
        if self.zrf_seed is not None:
            values["dist/zrf"] = 1.0 - float(self.zrf_distance.compute()["js"])
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
