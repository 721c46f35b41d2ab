"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.phases import Phase, PhaseMode
from lightning_unlearn.methods.base import (
    MultiStageUnlearningMethod,
    OptimizerCallable,
    Stage,
    check_choice,
    check_integer,
    check_positive,
)
from lightning_unlearn.methods.baselines import draw_label_offsets
from lightning_unlearn.methods.saliency import SELECTIONS, SaliencyMask, forget_gradient_sum, saliency_mask
from lightning_unlearn.models.cut import detect_num_classes
from lightning_unlearn.seeding import seeded_generator
from lightning_unlearn.validation import check_sgd

SCHEDULES: tuple[str, ...] = ("alternate", "joint", "sequential")
RANDOM_LABELS: tuple[str, ...] = ("other", "uniform")
SALIENCY_REDUCTIONS: tuple[str, ...] = ("sample_sum", "batch_mean")
PRESETS: tuple[str, ...] = ("corrected", "reference")
MASK_FILE = "salun_mask.pt"
#: Offset of the seed of the per-step random labels (``fresh_labels``), apart from the other seeded draws.
FRESH_LABEL_SEED_OFFSET = 7_919


class SalUn(MultiStageUnlearningMethod):
    """Random-label unlearning in which only the weights salient for the forget loss may change.

    Stages (manual optimisation):

    1. ``saliency`` (1 epoch, no optimiser step; skipped when ``mask`` is given): the classifier in eval mode, the
       gradient of the summed forget cross-entropy is accumulated over the unshuffled forget set, summed across
       ranks once at the end (so 1 and N processes give the same statistic), and its magnitude ranks every weight
       globally across tensors; the top ``mask_ratio`` fraction forms the mask (exactly ``k = int(N * ratio)``
       weights, ties to the earlier entry; ``selection="threshold"`` keeps every weight at or above the k-th
       saliency).
    2. ``unlearn`` (``epochs`` epochs): cross-entropy towards fixed random labels on forget batches and towards
       the true labels on retain batches. Gradients of masked-out weights are zeroed and, after every step,
       masked-out weights are put back and their momentum zeroed, so they stay bitwise at the original values
       (``legacy_masked_decay=True`` only masks the gradient, letting weight decay and momentum move them, as in
       the paper-era code). ``schedule="alternate"`` takes one step on a forget batch and one on a retain batch
       while each lasts (both sets passed once per epoch); ``"joint"`` takes one step on
       ``CE(forget, random) + retain_weight * CE(retain)`` over paired batches (the paper's objective).

    The mask is a persistent buffer (checkpoints carry it, so a resumed run keeps it and does not recompute it)
    and is written to ``<log_dir>/salun_mask.pt`` at the end of fit (:meth:`save_mask`). The mask computation
    is reusable by other methods: see :mod:`lightning_unlearn.methods.saliency`.

    ``schedule="sequential"`` runs, in every unlearning epoch, the whole forget pass and then the whole retain pass
    (two Lightning epochs, one shared optimiser), as the authors' code does for CIFAR-10 and SVHN.

    Two presets. ``"corrected"`` (default): the saliency pass sums per-sample gradients of unshuffled forget
    batches (deterministic, batch-size independent); random labels are wrong labels, one fixed table per forget
    sample (as in :class:`~lightning_unlearn.methods.RandomLabel`); forget and retain steps alternate within an
    epoch. ``"reference"``, the authors' code (OPTML-Group/Unlearn-Saliency, ``generate_mask.py`` and
    ``unlearn/RL.py``): the saliency is the absolute value of the signed sum of per-batch *mean* gradients over
    shuffled forget batches (signs cancel across batches; a short last batch weighs as much as a full one); random
    labels are drawn afresh for every forget batch, uniformly over all classes (so a sample keeps its true label
    with probability 1/C); the schedule is ``"sequential"``. The code's training augmentation is not applied
    (the datamodule's transforms decide). The epoch budget, 1 (the saliency pass, unless ``mask`` is given) plus
    ``epochs`` (``2 * epochs`` under ``"sequential"``), follows from the stages (``trainer.max_epochs`` is set from
    it).

    Data: the labelled forget set (with sample indices) and the labelled retain set.

    Reference: C. Fan, J. Liu, Y. Zhang, E. Wong, D. Wei, S. Liu, "SalUn: Empowering Machine Unlearning via
    Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR 2024.

    Args:
        model: The trained classifier to unlearn.
        mask_ratio: Fraction of all weights that may change, in (0, 1]; 1.0 is plain random-label training.
        mask: Path of a saved mask (this method's ``salun_mask.pt`` or a ``{name: 0/1 tensor}`` file); skips
            the saliency stage.
        epochs: Unlearning epochs after the saliency stage.
        lr: Learning rate of the default SGD optimiser.
        momentum: Momentum of the default optimiser.
        weight_decay: Weight decay (coupled L2) of the default optimiser.
        optimizer: Optimiser factory replacing the default (its own lr wins).
        schedule: ``"alternate"``, ``"joint"`` or ``"sequential"`` (see above); ``None``: the preset's.
        retain_weight: Weight of the retain cross-entropy under ``"joint"``.
        random_label: ``"other"`` (uniform over the wrong classes) or ``"uniform"`` (over all classes); ``None``:
            the preset's.
        selection: ``"topk"`` or ``"threshold"`` (see above).
        legacy_masked_decay: Mask only the gradient (masked-out weights drift under weight decay and momentum).
        saliency_batch_size: Batch size of the saliency pass; ``None`` uses the datamodule's.
        seed: Seed of the random-label table (and of the per-batch labels with ``fresh_labels``).
        fresh_labels: Draw new random labels for every forget batch (seeded by ``seed`` and the step, so a resumed
            run draws the same) instead of one fixed table; ``None``: the preset's.
        saliency_reduction: ``"sample_sum"`` (per-sample gradients summed, then the magnitude) or
            ``"batch_mean"`` (the magnitude of the signed sum of per-batch mean gradients); ``None``: the preset's.
        preset: ``"corrected"`` or ``"reference"`` (see above).
    """

    label_offsets: Tensor

    def __init__(
        self,
        model: nn.Module,
        mask_ratio: float = 0.5,
        mask: str | None = None,
        epochs: int = 10,
        lr: float = 0.013,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerCallable | None = None,
        schedule: str | None = None,
        retain_weight: float = 1.0,
        random_label: str | None = None,
        selection: str = "topk",
        legacy_masked_decay: bool = False,
        saliency_batch_size: int | None = None,
        seed: int = 0,
        fresh_labels: bool | None = None,
        saliency_reduction: str | None = None,
        preset: Literal["corrected", "reference"] = "corrected",
    ) -> None:
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio!r}")
        check_integer("epochs", epochs, 1)
        check_sgd(momentum, weight_decay, lr=lr)
        check_choice("preset", preset, PRESETS)
        if schedule is not None:
            check_choice("schedule", schedule, SCHEDULES)
        check_positive("retain_weight", retain_weight, allow_zero=True)
        if random_label is not None:
            check_choice("random_label", random_label, RANDOM_LABELS)
        if saliency_reduction is not None:
            check_choice("saliency_reduction", saliency_reduction, SALIENCY_REDUCTIONS)
        if fresh_labels is not None and not isinstance(fresh_labels, bool):
            raise ValueError(f"fresh_labels must be true, false or None, got {fresh_labels!r}")
        check_choice("selection", selection, SELECTIONS)
        check_integer("saliency_batch_size", saliency_batch_size, 1, optional=True)
        check_integer("seed", seed)
        self._optimizer_factory = optimizer
        super().__init__(model)
        self.num_classes = detect_num_classes(model)
        reference = preset == "reference"
        self.schedule: str = schedule if schedule is not None else ("sequential" if reference else "alternate")
        self.random_label: str = random_label if random_label is not None else ("uniform" if reference else "other")
        self.fresh_labels: bool = fresh_labels if fresh_labels is not None else reference
        self.saliency_reduction: str = saliency_reduction or ("batch_mean" if reference else "sample_sum")
        self.register_buffer("label_offsets", torch.zeros(0, dtype=torch.long))
        self._sums: dict[str, Tensor] = {}
        self._count = 0

    def configure_models(self) -> None:
        """The (not yet computed) saliency mask over the classifier's trainable parameters."""
        self.saliency_mask = SaliencyMask.for_model(self.model)

    # ------------------------------------------------------------------ stages and data
    def stages(self) -> list[Stage]:
        """``saliency`` (skipped with a given mask), then ``unlearn``."""
        h = self.hparams
        stats = Phase(
            epochs=1,
            splits=("forget",),
            shuffle=self.saliency_reduction == "batch_mean",  # the authors' pass runs over shuffled batches
            labelled=True,
            unrepeated=True,
            batch_size=h["saliency_batch_size"],
        )
        saliency = Stage("saliency", 0 if h["mask"] is not None else 1, stats, trains=False)
        if self.schedule == "sequential":
            forget = Phase(epochs=1, splits=("forget",), labelled=True, with_index=True)
            retain = Phase(epochs=1, splits=("retain",), labelled=True)
            passes = []
            for epoch in range(1, int(h["epochs"]) + 1):
                passes += [Stage(f"forget{epoch}", 1, forget), Stage(f"retain{epoch}", 1, retain)]
            return [saliency, *passes]
        mode: PhaseMode = "max_size" if self.schedule == "alternate" else "max_size_cycle"
        unlearn = Phase(epochs=1, splits=("forget", "retain"), mode=mode, labelled=True, with_index=True)
        return [saliency, Stage("unlearn", h["epochs"], unlearn)]

    def on_fit_start(self) -> None:
        """Load a given mask and draw the random-label table once (both kept when resuming)."""
        super().on_fit_start()
        h = self.hparams
        if h["mask"] is not None and not bool(self.saliency_mask.ready):
            self.saliency_mask.fill(SaliencyMask.read(h["mask"]))
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if datamodule is None or getattr(datamodule, "forget_indices", None) is None:
            raise RuntimeError("SalUn needs an UnlearningDataModule (it reads the forget-set size)")
        size = len(datamodule.forget_indices)
        if self.label_offsets.numel() != size:
            offsets = draw_label_offsets(
                size, self.num_classes, self.method_generator(), exclude_true=self.random_label == "other"
            )
            self.label_offsets = offsets.to(self.device)

    def on_fit_end(self) -> None:
        """Rank 0 writes the mask to ``<log_dir>/salun_mask.pt``."""
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir is not None and bool(self.saliency_mask.ready):
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.save_mask(Path(log_dir) / MASK_FILE)

    def save_mask(self, path: str | Path) -> None:
        """Write the mask with its settings (format of :meth:`SaliencyMask.save`)."""
        h = self.hparams
        self.saliency_mask.save(path, ratio=h["mask_ratio"], selection=h["selection"], reduction="sample_sum")

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Accept a checkpoint whose label table has a different length than the empty placeholder."""
        offsets = state_dict.get("label_offsets")
        if offsets is not None:
            self.label_offsets = torch.empty_like(offsets)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------ steps
    def stage_step(self, stage: Stage, batch: Any, batch_idx: int, optimizer: Any) -> Tensor | None:
        """Accumulate the forget gradient (saliency) or take the masked random-label step(s) (unlearn)."""
        if stage.name == "saliency":
            self._accumulate(batch)
            return None
        self.model.train()
        h = self.hparams
        forget, retain = batch.get("forget"), batch.get("retain")
        if self.schedule == "joint":
            loss = self._forget_loss(forget) + h["retain_weight"] * self._retain_loss(retain)
            self._step(loss, optimizer)
            return loss.detach()
        total: Tensor | None = None
        for element, term in ((forget, self._forget_loss), (retain, self._retain_loss)):
            if element is None:
                continue
            loss = term(element)
            self._step(loss, optimizer)
            total = loss.detach() if total is None else total + loss.detach()
        return total

    def stage_end(self, stage: Stage) -> None:
        """After the saliency pass: reduce the statistic across ranks and build the mask."""
        if stage.name != "saliency":
            return
        names = self.saliency_mask.names
        params = dict(self.model.named_parameters())
        sums = [self._sums.get(n, torch.zeros(params[n].shape, dtype=torch.float64, device=self.device)) for n in names]
        count_t = torch.tensor([float(self._count)], dtype=torch.float64, device=self.device)
        flat = torch.cat([s.reshape(-1) for s in sums] + [count_t])
        if self._trainer is not None and self.trainer.world_size > 1:
            flat = self.trainer.strategy.reduce(flat, reduce_op="sum")
        count = max(float(flat[-1]), 1.0)
        parts = torch.split(flat[:-1].abs() / count, [params[n].numel() for n in names])
        saliency = {n: part.view_as(params[n]) for n, part in zip(names, parts, strict=True)}
        masks, threshold = saliency_mask(saliency, self.hparams["mask_ratio"], selection=self.hparams["selection"])
        self.saliency_mask.fill(masks)
        self._sums, self._count = {}, 0
        self._log_mask(threshold)

    def configure_stage_optimizer(self, stage: Stage) -> Optimizer | None:
        """SGD (momentum, coupled weight decay) over the classifier, or the injected optimiser."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return self._make_optimizer(params)

    def shares_optimizer(self) -> bool:
        """Under ``"sequential"`` every pass steps one optimiser, as in the authors' code."""
        return self.schedule == "sequential"

    # ------------------------------------------------------------------ helpers
    def _make_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        if self._optimizer_factory is not None:
            return self._optimizer_factory(params)
        h = self.hparams
        return torch.optim.SGD(params, lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"])

    def _accumulate(self, batch: Any) -> None:
        self.model.eval()
        element = batch.get("forget") if isinstance(batch, Mapping) else batch
        if element is None:
            return
        x, y, _ = self.labelled_batch(element)
        grads = forget_gradient_sum(self.model, x, y)
        scale = 1.0 / len(x) if self.saliency_reduction == "batch_mean" and len(x) else 1.0
        for name in self.saliency_mask.names:
            g = grads[name].to(torch.float64) * scale
            self._sums[name] = self._sums[name] + g if name in self._sums else g
        self._count += len(x) if self.saliency_reduction == "sample_sum" else 1

    def _forget_loss(self, element: Any) -> Tensor:
        x, y, index = self.labelled_batch(element)
        if index is None:
            raise RuntimeError("SalUn needs forget batches with sample indices")
        if self.fresh_labels:
            target = self._fresh_labels(y)
        else:
            target = (y + self.label_offsets[index]) % self.num_classes
        loss = F.cross_entropy(self.model(x), target)
        self.log("salun/loss_forget", loss.detach(), on_step=True, on_epoch=True, batch_size=len(x))
        kept = (target == y).float().mean()
        self.log("salun/true_label_kept_fraction", kept, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def _fresh_labels(self, y: Tensor) -> Tensor:
        """New random labels for one forget batch, from ``(seed, step)``: the same after a resume."""
        generator = seeded_generator(
            int(self.hparams["seed"]) * 1_000_003, FRESH_LABEL_SEED_OFFSET, int(self.global_step)
        )
        if self.random_label == "uniform":
            return torch.randint(0, self.num_classes, (len(y),), generator=generator).to(y.device)
        offsets = torch.randint(1, self.num_classes, (len(y),), generator=generator).to(y.device)
        return (y + offsets) % self.num_classes

    def _retain_loss(self, element: Any) -> Tensor:
        x, y, _ = self.labelled_batch(element)
        loss = F.cross_entropy(self.model(x), y)
        self.log("salun/loss_retain", loss.detach(), on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def _step(self, loss: Tensor, optimizer: Any) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        self.saliency_mask.mask_gradients(self.model)
        if self.hparams["legacy_masked_decay"]:
            optimizer.step()
            return
        before = self.saliency_mask.snapshot(self.model)
        optimizer.step()
        self.saliency_mask.restore(self.model, before, optimizer)

    def _log_mask(self, threshold: float | None) -> None:
        if self._trainer is None:
            return
        density = self.saliency_mask.num_selected() / max(self.saliency_mask.num_entries(), 1)
        self.log("salun/mask_density", density, on_step=False, on_epoch=True, batch_size=1)
        if threshold is not None:
            self.log("salun/threshold", threshold, on_step=False, on_epoch=True, batch_size=1)
