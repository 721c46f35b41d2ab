"""Base classes of every unlearning method, one per training regime.

* :class:`UnlearningMethod` stores the injected classifier, saves the plain hyperparameters (never objects,
  so checkpoints load with ``weights_only=True``), installs the method's training plan on the datamodule and
  provides the evaluation steps that the metric callbacks consume.
* :class:`GradientUnlearningMethod`: automatic optimisation with one injected optimiser (finetune, gradient
  ascent, L2UL).
* :class:`MultiStageUnlearningMethod`: manual optimisation over declared :class:`Stage` s, one optimiser per
  training stage, the stage derived from ``current_epoch`` so a resumed run lands in the right stage (LAF,
  hybrid, pruning + finetune).
* :class:`OnePassUnlearningMethod`: a single statistics stage with no optimiser; statistics are reduced across
  ranks and the edit is applied once (SSD, activation statistics).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.datamodules.phases import Phase, phase_at, plan_epochs

_PLAIN = (bool, int, float, str, type(None))
DataMode = Literal["unlearn", "pretrain", "retrain"]


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is made only of primitives (safe for ``weights_only`` checkpoint loading)."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


class UnlearningMethod(LightningModule):
    """Base of every method: an injected classifier plus the method's own training logic.

    Subclasses set the class attributes below, override :meth:`training_step` (or the stage hooks of the
    multi-stage base) and as little else as possible.

    Args:
        model: The trained classifier to unlearn (its ``forward`` maps pixels in [0, 1] to logits).

    Attributes:
        needs_labels: ``False`` when the method never reads labels of the training splits; it then receives
            inputs only.
        train_splits: Training split names served in each dict batch (default plan).
        data_modes: Datamodule modes the method accepts.
    """

    needs_labels: ClassVar[bool] = True
    train_splits: ClassVar[tuple[str, ...]] = ("forget", "retain")
    data_modes: ClassVar[tuple[str, ...]] = ("unlearn",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        self._drop_object_hparams()
        self.configure_models()
        self.configure_metrics()

    # ------------------------------------------------------------------ construction hooks
    def configure_models(self) -> None:
        """Build extra modules (frozen copies, auxiliary networks). Default: nothing."""

    def configure_metrics(self) -> None:
        """Build method-owned metrics. Default: nothing (evaluation metrics belong to callbacks)."""

    def _drop_object_hparams(self) -> None:
        for store in (self._hparams, getattr(self, "_hparams_initial", None)):
            if store is None:
                continue
            for key in [k for k, v in store.items() if not _is_plain(v)]:
                del store[key]

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        """Logits of the wrapped classifier."""
        return self.model(x)

    # ------------------------------------------------------------------ training data
    def train_plan(self, max_epochs: int) -> list[Phase]:
        """Training data per epoch; default: one phase of ``train_splits`` for the whole run."""
        return [Phase(epochs=max(1, max_epochs), splits=self.train_splits, labelled=self.needs_labels)]

    def setup(self, stage: str) -> None:
        """Check the datamodule's mode and install the training plan before loaders are built."""
        if stage != "fit" or self._trainer is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        mode = getattr(datamodule, "mode", None)
        if mode is not None and mode not in self.data_modes:
            raise ValueError(
                f"{type(self).__name__} needs a datamodule with mode in {self.data_modes}, got mode={mode!r}"
            )
        if datamodule is not None and hasattr(datamodule, "set_train_plan") and mode == "unlearn":
            max_epochs = self.trainer.max_epochs if self.trainer.max_epochs not in (None, -1) else 1
            datamodule.set_train_plan(self.train_plan(int(max_epochs)))

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Logits of one evaluation batch ``(x, y, index)``, returned for the metric callbacks."""
        return self._eval_step(batch)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Logits of one test batch ``(x, y, index)``, returned for the metric callbacks."""
        return self._eval_step(batch)

    def _eval_step(self, batch: Any) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        index = batch[2] if len(batch) > 2 else torch.arange(len(x), device=x.device)
        return {"logits": self(x).detach(), "target": y, "index": index}

    # ------------------------------------------------------------------ helpers
    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps taken so far in this fit (``cost/optimizer_steps``; 0 without a trainer)."""
        return int(self.trainer.global_step) if self._trainer is not None else 0

    def method_generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the method's ``seed`` hyperparameter (or 0) plus ``offset``.

        Identical on every rank, so random draws (labels, re-initialisations) agree under DDP.
        """
        seed = self.hparams.get("seed")
        return torch.Generator().manual_seed(int(seed if seed is not None else 0) + offset)

    @staticmethod
    def split_batch(batch: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Unpack one split's element batch into ``(x, y, index)``; missing parts are ``None``.

        Labelled elements are ``(x, y)`` or ``(x, y, index)``; unlabelled ones ``x`` or ``(x, index)``; the
        datamodule's phase decides, so pass ``labelled`` knowledge via the method's plan.
        """
        if isinstance(batch, Tensor):
            return batch, None, None
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
        return batch[0], batch[1], None

    @classmethod
    def labelled_batch(cls, batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        """Like :meth:`split_batch` for a split that must carry labels (``RuntimeError`` otherwise)."""
        x, y, index = cls.split_batch(batch)
        if y is None:
            raise RuntimeError(f"{cls.__name__} needs labelled batches, got inputs only")
        return x, y, index


class GradientUnlearningMethod(UnlearningMethod):
    """Base of methods trained by automatic optimisation with one (injected) optimiser.

    Args:
        model: The trained classifier to unlearn.
        optimizer: Optimiser factory called with the parameters to train; ``None`` uses
            :meth:`default_optimizer`.
        lr_scheduler: Optional learning-rate scheduler factory, stepped once per epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        self._optimizer_factory = optimizer
        self._scheduler_factory = lr_scheduler
        super().__init__(model)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters handed to the optimiser (default: every trainable parameter of the classifier)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def default_optimizer(self, params: Iterable[nn.Parameter]) -> Optimizer:
        """Optimiser used when none is injected (SGD, lr 1e-3, momentum 0.9)."""
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """One optimiser over :meth:`trainable_parameters`, plus the optional per-epoch scheduler."""
        params = list(self.trainable_parameters())
        factory = self._optimizer_factory
        optimizer = factory(params) if factory is not None else self.default_optimizer(params)
        if self._scheduler_factory is None:
            return optimizer
        scheduler = self._scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


@dataclass(frozen=True)
class Stage:
    """One declared stage of a multi-stage method.

    Args:
        name: Short name, shown in the progress bar and used in logged names.
        epochs: Number of epochs (a statistics stage lasts one epoch).
        phase: Data the stage receives (its ``epochs`` field is overridden by ``epochs``).
        trains: Whether the stage steps an optimiser (``False``: statistics only, no gradients).
    """

    name: str
    epochs: int
    phase: Phase = field(default_factory=lambda: Phase(epochs=1))
    trains: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"Stage {self.name!r}: epochs must be an integer >= 0, got {self.epochs!r}")


class MultiStageUnlearningMethod(UnlearningMethod):
    """Base of methods made of declared stages, by manual optimisation with one optimiser per training stage.

    Subclasses implement :meth:`stages`, :meth:`configure_stage_optimizer` and :meth:`stage_step` (and, for
    statistics stages, :meth:`stage_end`). The current stage is derived from ``current_epoch``; which stage
    ends have run is kept in the persistent buffer ``completed_stages``, so a run resumed from any checkpoint
    lands in the right stage and never repeats or skips an edit. ``trainer.max_epochs`` must equal the sum of
    the stage epochs.
    """

    completed_stages: Tensor

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.automatic_optimization = False
        self.register_buffer("completed_stages", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ to implement
    def stages(self) -> list[Stage]:
        """The ordered stages of the method."""
        raise NotImplementedError

    def configure_stage_optimizer(self, stage: Stage) -> Optimizer | None:
        """The optimiser of a training stage (called once per stage when optimisers are configured)."""
        return None

    def stage_step(self, stage: Stage, batch: Any, batch_idx: int, optimizer: Any) -> Tensor | None:
        """One training step of ``stage``; returns the loss for logging.

        ``optimizer`` is the stage's (Lightning-wrapped) optimiser, ``None`` for a statistics stage.
        """
        raise NotImplementedError

    def stage_end(self, stage: Stage) -> None:
        """Called exactly once after the last batch of ``stage`` (before that epoch's validation)."""

    # ------------------------------------------------------------------ stage bookkeeping
    def active_stages(self) -> list[Stage]:
        """Declared stages that last at least one epoch."""
        return [s for s in self.stages() if s.epochs > 0]

    def stage_index_at(self, epoch: int) -> int:
        """Index (into :meth:`active_stages`) of the stage running at ``epoch``."""
        index, _ = phase_at(self._stage_phases(), epoch)
        return index

    def _stage_phases(self) -> list[Phase]:
        return [dataclasses.replace(s.phase, epochs=s.epochs) for s in self.active_stages()]

    @property
    def current_stage(self) -> Stage:
        """The stage running at the trainer's current epoch."""
        return self.active_stages()[self.stage_index_at(self.current_epoch)]

    @property
    def stage_name(self) -> str:
        """Name of the current stage (shown by the progress bar)."""
        return self.current_stage.name

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """One phase per stage, with the stage's epochs; checks ``max_epochs`` against the stages."""
        stages = self.active_stages()
        if not stages:
            raise ValueError(f"{type(self).__name__} declares no stage with epochs > 0")
        plan = self._stage_phases()
        total = plan_epochs(plan)
        if max_epochs != total:
            names = ", ".join(f"{s.name}={s.epochs}" for s in stages)
            raise ValueError(
                f"{type(self).__name__} runs {total} epochs ({names}); set trainer.max_epochs={total} "
                f"(got {max_epochs}) and trainer.reload_dataloaders_every_n_epochs=1"
            )
        return plan

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """One optimiser per training stage, in stage order (statistics stages have none)."""
        optimizers = []
        for stage in self.active_stages():
            if not stage.trains:
                continue
            optimizer = self.configure_stage_optimizer(stage)
            if optimizer is None:
                name = type(self).__name__
                raise NotImplementedError(f"{name} gives no optimiser for stage {stage.name!r}")
            optimizers.append(optimizer)
        return optimizers if optimizers else None

    def _stage_optimizer(self, index: int) -> Any:
        stages = self.active_stages()
        if not stages[index].trains:
            return None
        position = sum(1 for s in stages[:index] if s.trains)
        optimizers = self.optimizers()
        if not isinstance(optimizers, list):
            optimizers = [optimizers]
        return optimizers[position]

    def on_fit_start(self) -> None:
        """Refuse to run the stages again on a module that already ran them (unless resuming)."""
        if int(self.completed_stages) > 0 and self.trainer.ckpt_path is None:
            raise RuntimeError(
                f"{type(self).__name__} has already run {int(self.completed_stages)} stage(s) on this model; "
                "start from the original classifier, or resume with ckpt_path"
            )

    def on_train_epoch_start(self) -> None:
        """Log the stage index; finish any stage whose end was not reached before a restart."""
        index = self.stage_index_at(self.current_epoch)
        self._finish_stages_before(index)
        self.log("stage/index", float(index), on_step=False, on_epoch=True)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        """Dispatch to :meth:`stage_step` of the current stage with its optimiser."""
        index = self.stage_index_at(self.current_epoch)
        stage = self.active_stages()[index]
        if stage.trains:
            loss = self.stage_step(stage, batch, batch_idx, self._stage_optimizer(index))
        else:
            with torch.no_grad():
                loss = self.stage_step(stage, batch, batch_idx, None)
        if loss is not None:
            name = f"train/{stage.name}/loss"
            self.log(name, loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=1)
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Run the stage end right after the stage's last batch, before validation and checkpointing."""
        trainer = self.trainer
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or (
            batch_idx + 1 >= trainer.num_training_batches
        )
        if last and self._is_last_epoch_of_stage(self.current_epoch):
            self._finish_stages_before(self.stage_index_at(self.current_epoch) + 1)

    def on_train_epoch_end(self) -> None:
        """Fallback for epochs whose last batch was never seen (e.g. limited batches)."""
        if self._is_last_epoch_of_stage(self.current_epoch):
            self._finish_stages_before(self.stage_index_at(self.current_epoch) + 1)

    def _is_last_epoch_of_stage(self, epoch: int) -> bool:
        return self.stage_index_at(epoch + 1) != self.stage_index_at(epoch) or epoch + 1 >= sum(
            s.epochs for s in self.active_stages()
        )

    def _finish_stages_before(self, index: int) -> None:
        stages = self.active_stages()
        while int(self.completed_stages) < min(index, len(stages)):
            done = int(self.completed_stages)
            self.stage_end(stages[done])
            self.completed_stages.fill_(done + 1)
            if not stages[done].trains:
                self._count_edit_as_step()

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps taken, without the one step counted for each statistics stage's edit."""
        edits = sum(1 for stage in self.active_stages()[: int(self.completed_stages)] if not stage.trains)
        return max(super().optimizer_steps - edits, 0)

    def _count_edit_as_step(self) -> None:
        """Count a statistics stage's edit as one step, so checkpointing and step logging see progress."""
        if self._trainer is None:
            return
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()


class OnePassUnlearningMethod(MultiStageUnlearningMethod):
    """Base of gradient-free methods: accumulate statistics in one pass, reduce them across ranks, edit once.

    Subclasses implement :meth:`accumulate` (called per batch under ``no_grad`` unless it enables gradients
    itself) and :meth:`apply_edit` (called once, after the pass, with every rank holding the reduced
    statistics). The persistent ``fitted`` buffer marks an edited model; fitting it again raises
    ``RuntimeError``. Run with ``trainer.max_epochs=1``.
    """

    fitted: Tensor
    statistics_phase: ClassVar[Phase] = Phase(epochs=1, splits=("forget",), shuffle=False)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def stages(self) -> list[Stage]:
        """A single statistics stage."""
        return [Stage("statistics", 1, self.statistics_phase, trains=False)]

    def accumulate(self, batch: Any, batch_idx: int) -> None:
        """Add one batch to the method's statistics."""
        raise NotImplementedError

    def apply_edit(self) -> None:
        """Edit the classifier from the reduced statistics."""
        raise NotImplementedError

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over all ranks (identity on one process)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return tensor
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def stage_step(self, stage: Stage, batch: Any, batch_idx: int, optimizer: Any) -> Tensor | None:
        """Accumulate statistics of one batch."""
        self.accumulate(batch, batch_idx)
        return None

    def stage_end(self, stage: Stage) -> None:
        """Apply the edit once and mark the model fitted."""
        with torch.no_grad():
            self.apply_edit()
        self.fitted.fill_(True)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (or >= 0 with ``allow_zero``)."""
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming the allowed values unless ``value`` is one of them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
