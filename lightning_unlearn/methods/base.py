"""Base classes of every unlearning method, one per training regime.

* :class:`UnlearningMethod` stores the injected classifier, saves the plain hyperparameters (never objects,
  so checkpoints load with ``weights_only=True``), applies the method's epoch budget to the Trainer
  (:meth:`UnlearningMethod.epoch_budget`, :mod:`lightning_unlearn.methods.budget`), installs the method's training
  plan on the datamodule and provides the evaluation steps that the metric callbacks consume.
* :class:`GradientUnlearningMethod`: automatic optimisation with one injected optimiser (finetune, gradient
  ascent, L2UL).
* :class:`MultiStageUnlearningMethod`: manual optimisation over declared :class:`Stage` s, one optimiser per
  training stage, the stage derived from ``current_epoch`` so a resumed run lands in the right stage (LAF,
  hybrid, pruning + finetune).
* :class:`OnePassUnlearningMethod`: a single statistics stage with no optimiser; statistics are reduced across
  ranks and the edit is applied once (SSD, activation statistics).

Every method shares one guard against non-finite values (:attr:`UnlearningMethod.check_finite`, on by default):
gradients are checked before each optimiser step (the step is not applied), parameters after it (before any
callback can save them) and after each stage end (an edit producing NaN/inf is undone). The guard raises
:class:`FloatingPointError`; the run stops before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.optim import Optimizer

from lightning_unlearn.compat import ddp_allow_unused_parameters, is_last_training_batch, record_optimizer_step
from lightning_unlearn.datamodules.batches import unpack_batch
from lightning_unlearn.datamodules.phases import Phase, phase_at, plan_epochs
from lightning_unlearn.methods.budget import EpochBudget, apply_budget
from lightning_unlearn.seeding import seeded_generator
from lightning_unlearn.validation import check_choice as check_choice  # re-exported: methods import it from here
from lightning_unlearn.validation import check_integer as check_integer
from lightning_unlearn.validation import check_positive as check_positive

_PLAIN = (bool, int, float, str, type(None))
_POST_STEP_HOOK = "_lightning_unlearn_finite_check"
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


def _all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every element of every tensor is finite, in one fused pass and a single host sync.

    The fast path is ``torch._foreach_norm`` (L2, the fastest fused norm on CPU and GPU): a norm is NaN/inf when an
    element is. A sum of squares can also overflow for huge finite values, so a non-finite norm is confirmed
    element-wise (the slow path runs only then).
    """
    dense = [t for t in tensors if not t.is_sparse]
    exact = [t.coalesce().values() for t in tensors if t.is_sparse]  # checked element-wise
    if dense:
        norms = torch._foreach_norm(dense)
        device = norms[0].device
        if not bool(torch.isfinite(torch.stack([n.to(device, torch.float32) for n in norms])).all()):
            exact += dense
    return all(bool(torch.isfinite(t).all()) for t in exact)


def _non_finite_names(named: Iterable[tuple[str, Tensor]]) -> list[str]:
    """Names of the tensors holding a NaN or inf (the slow, per-tensor check run only after a failure)."""
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _name_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class UnlearningMethod(LightningModule):
    """Base of every method: an injected classifier plus the method's own training logic.

    Subclasses set the class attributes below, override :meth:`training_step` (or the stage hooks of the
    multi-stage base) and as little else as possible.

    Args:
        model: The trained classifier to unlearn (its ``forward`` maps pixels in [0, 1] to logits).

    Attributes:
        needs_labels: ``False`` when the method never reads labels of the training splits; it then receives
            inputs only.
        budget_argument: Name of the hyperparameter holding the number of epochs the method runs (e.g.
            ``"epochs"`` for a method whose schedule has a fixed length); ``None`` (default): the method declares
            no budget of its own and ``trainer.max_epochs`` is the budget. See :meth:`epoch_budget`.
        train_splits: Training split names served in each dict batch (default plan).
        data_modes: Datamodule modes the method accepts.
        check_finite: Stop the run with :class:`FloatingPointError` on a NaN/inf gradient (checked before each
            optimiser step, which is then not applied), parameter (checked after each step, before any callback
            saves it) or edit result (checked after each stage end, the edit undone). Default ``True``; set it
            to ``False`` on a subclass or instance to turn the guard off. Under 16-bit mixed precision with a
            gradient scaler, inf gradients are the scaler's business (it skips the step) and only parameters
            are checked. Cost per step: two fused norm passes (the stepped gradients, then the stepped
            parameters), about 2 ms each for an 11M-parameter ResNet-18 on a CPU.
    """

    needs_labels: ClassVar[bool] = True
    budget_argument: ClassVar[str | None] = None
    train_splits: ClassVar[tuple[str, ...]] = ("forget", "retain")
    data_modes: ClassVar[tuple[str, ...]] = ("unlearn",)
    check_finite: bool = True

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
    def epoch_budget(self) -> EpochBudget | None:
        """The epochs the method runs and whether its loaders change between epochs; ``None``: the trainer's.

        Default: from :attr:`budget_argument` (one phase, loaders kept), or ``None`` without one. When ``fit``
        starts, :func:`~lightning_unlearn.methods.budget.apply_budget` sets an unset ``trainer.max_epochs`` from
        it (and ``reload_dataloaders_every_n_epochs`` when the loaders change) and refuses a contradicting value.
        """
        if self.budget_argument is None:
            return None
        epochs = int(self.hparams[self.budget_argument])
        return EpochBudget(epochs, detail=f"{self.budget_argument}={epochs}")

    def required_epochs(self) -> int | None:
        """The number of epochs the method runs (``None``: ``trainer.max_epochs`` is the budget)."""
        budget = self.epoch_budget()
        return None if budget is None else budget.epochs

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """Training data per epoch; default: one phase of ``train_splits`` for the whole run."""
        return [Phase(epochs=max(1, max_epochs), splits=self.train_splits, labelled=self.needs_labels)]

    def setup(self, stage: str) -> None:
        """Check the datamodule's mode, apply the epoch budget, then install the training plan before loaders exist.

        Raises:
            ValueError: If the datamodule's mode is not one of :attr:`data_modes`, or the trainer's ``max_epochs``
                or ``reload_dataloaders_every_n_epochs`` contradict the method's :meth:`epoch_budget`.
        """
        if stage != "fit" or self._trainer is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        mode = getattr(datamodule, "mode", None)
        if mode is not None and mode not in self.data_modes:
            raise ValueError(
                f"{type(self).__name__} needs a datamodule with mode in {self.data_modes}, got mode={mode!r}"
            )
        apply_budget(self.trainer, self)
        if datamodule is not None and hasattr(datamodule, "set_train_plan") and mode == "unlearn":
            max_epochs = self.trainer.max_epochs if self.trainer.max_epochs not in (None, -1) else 1
            datamodule.set_train_plan(self.train_plan(int(max_epochs)))

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Logits of one evaluation batch (a ``LabelledBatch``), returned for the metric callbacks."""
        return self._eval_step(batch)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Logits of one test batch (a ``LabelledBatch``), returned for the metric callbacks."""
        return self._eval_step(batch)

    def _eval_step(self, batch: Any) -> dict[str, Tensor]:
        x, y, index = self.labelled_batch(batch)
        if index is None:  # a user's (x, y) batches: positions within the batch
            index = torch.arange(len(x), device=x.device)
        return {"logits": self(x).detach(), "target": y, "index": index}

    # ------------------------------------------------------------------ non-finite guard
    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Refuse to apply an optimiser step whose gradients hold NaN/inf (see :attr:`check_finite`).

        Runs in automatic and manual optimisation alike (after backward, before ``optimizer.step``). It also
        installs, once per optimiser, a post-step hook that checks the updated parameters before any callback
        (e.g. ``ModelCheckpoint``) can save them.

        Raises:
            FloatingPointError: If a gradient of a parameter about to be stepped is not finite.
        """
        if not self.check_finite:
            return
        self._install_post_step_check(optimizer)
        if getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None) is not None:
            return  # the AMP grad scaler skips steps with inf gradients and lowers its scale
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if _all_finite([p.grad for p in params]):
            return
        names = self._parameter_names()
        bad = _non_finite_names((names.get(id(p), "<unnamed>"), p.grad) for p in params)
        already = _non_finite_names(self.named_parameters()) + _non_finite_names(self.named_buffers())
        state = (
            f"Note: {_name_list(already)} already held NaN/inf before this step (an earlier step, the forward pass "
            "of this batch or the classifier given), so the weights in memory are not usable."
            if already
            else "The step was not applied: the weights in memory are those after the last good step."
        )
        raise FloatingPointError(
            f"{self._guard_where()}: non-finite gradient (NaN/inf) of {_name_list(bad)}; the run stopped. {state} "
            "Nothing was saved after the last good step: the last checkpoint and the original classifier file "
            "are untouched. Lower the learning rate, check the loss and the data for NaN/inf, or clip gradients "
            "(trainer.gradient_clip_val)."
        )

    def _install_post_step_check(self, optimizer: Optimizer) -> None:
        if not hasattr(optimizer, "register_step_post_hook"):  # not a torch optimiser (e.g. a DeepSpeed engine)
            return
        if getattr(optimizer, _POST_STEP_HOOK, None) is None:  # marked on the optimiser: one hook per optimiser
            setattr(optimizer, _POST_STEP_HOOK, optimizer.register_step_post_hook(self._check_parameters_after_step))

    def _check_parameters_after_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        """Post-step hook: the stepped parameters must be finite (finite gradients can still overflow)."""
        if not self.check_finite:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if _all_finite(params):
            return
        names = self._parameter_names()
        bad = _non_finite_names((names.get(id(p), "<unnamed>"), p) for p in params)
        raise FloatingPointError(
            f"{self._guard_where()}: the optimiser step made {_name_list(bad)} non-finite (NaN/inf) although the "
            "gradients were finite (the update overflowed: learning rate too large?); the run stopped. The "
            "weights in memory are not usable, but nothing was saved after this step: the last checkpoint and "
            "the original classifier file are untouched."
        )

    def _check_finite_after_edit(self, what: str, snapshot: Mapping[str, Tensor]) -> None:
        """Undo an in-place edit of the classifier (restore ``snapshot``) that left NaN/inf in it, then raise."""
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if _all_finite(tensors):
            return
        bad = _non_finite_names(self.model.named_parameters()) + _non_finite_names(self.model.named_buffers())
        with torch.no_grad():
            self.model.load_state_dict(snapshot)
        bad_names = _name_list([f"model.{n}" for n in bad])
        raise FloatingPointError(
            f"{self._guard_where(stepping=False)}: {what} made {bad_names} non-finite (NaN/inf); the run stopped. "
            "The edit was undone: the weights in memory are those before it. Nothing was saved after it: the last "
            "checkpoint and the original classifier file are untouched."
        )

    def _parameter_names(self) -> dict[int, str]:
        return {id(p): name for name, p in self.named_parameters()}

    def _guard_stage_name(self) -> str | None:
        """Name of the running stage for the guard's messages (``None``: the method has no stages)."""
        return None

    def _guard_where(self, stepping: bool = True) -> str:
        """Where the guard fired: ``Method (stage 'x') at epoch E, optimiser step S``.

        ``stepping``: ``S`` is the step being taken (numbered from 1); otherwise ``after S optimiser step(s)``.
        """
        where = type(self).__name__
        if self._trainer is None:
            return where
        stage = self._guard_stage_name()
        where += f" (stage {stage!r})" if stage else ""
        steps = int(self.trainer.global_step)
        step = f"optimiser step {steps + 1}" if stepping else f"after {steps} optimiser step(s)"
        return f"{where} at epoch {self.current_epoch}, {step}"

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
        return seeded_generator(int(seed if seed is not None else 0), offset)

    @staticmethod
    def split_batch(batch: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Unpack one split's batch into ``(x, y, index)``; the parts it does not carry are ``None``.

        The library's batches are named (``LabelledBatch``, ``LabelledPair``, ``UnlabelledBatch``, or the input
        tensor alone) and read by field; the phase of the method's plan decides which one a split yields. A plain
        tuple or list from a user's datamodule is read as ``(x, y)`` or ``(x, y, index)``; see
        :func:`~lightning_unlearn.datamodules.batches.unpack_batch`.
        """
        return unpack_batch(batch)

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
        check_integer(f"Stage {self.name!r}: epochs", self.epochs, 0)


class MultiStageUnlearningMethod(UnlearningMethod):
    """Base of methods made of declared stages, by manual optimisation with one optimiser per training stage.

    Subclasses implement :meth:`stages`, :meth:`configure_stage_optimizer` and :meth:`stage_step` (and, for
    statistics stages, :meth:`stage_end`). The current stage is derived from ``current_epoch``; which stage
    ends have run is kept in the persistent buffer ``completed_stages``, so a run resumed from any checkpoint
    lands in the right stage and never repeats or skips an edit. The epoch budget is the sum of the stage epochs
    (:meth:`epoch_budget`): ``trainer.max_epochs`` is set from it, and the loaders are rebuilt every epoch when
    there is more than one stage.
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

    def epoch_budget(self) -> EpochBudget:
        """The sum of the stage epochs; the loaders change between epochs when there is more than one stage.

        Raises:
            ValueError: If no stage lasts an epoch or more.
        """
        stages = self.active_stages()
        if not stages:
            raise ValueError(f"{type(self).__name__} declares no stage with epochs > 0")
        detail = ", ".join(f"{s.name}={s.epochs}" for s in stages)
        return EpochBudget(plan_epochs(self._stage_phases()), reload_dataloaders=len(stages) > 1, detail=detail)

    def train_plan(self, max_epochs: int) -> list[Phase]:
        """One phase per stage, with the stage's epochs (their sum is the :meth:`epoch_budget`)."""
        if not self.active_stages():
            raise ValueError(f"{type(self).__name__} declares no stage with epochs > 0")
        return self._stage_phases()

    def shares_optimizer(self) -> bool:
        """Whether every training stage steps one optimiser (its state carried across stages).

        The default is one optimiser per training stage; methods whose passes alternate over one student (SCRUB's
        max and min passes, SalUn's sequential schedule) return ``True``, and :meth:`configure_stage_optimizer`
        is then called once, with the first training stage.
        """
        return False

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """One optimiser per training stage, in stage order (statistics stages have none), or one shared."""
        optimizers: list[Optimizer] = []
        for stage in self.active_stages():
            if not stage.trains:
                continue
            if optimizers and self.shares_optimizer():
                break
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
        position = 0 if self.shares_optimizer() else sum(1 for s in stages[:index] if s.trains)
        optimizers = self.optimizers()
        if not isinstance(optimizers, list):
            optimizers = [optimizers]
        return optimizers[position]

    def setup(self, stage: str) -> None:
        """As the base; under DDP also let DDP tolerate parameters that a stage does not use.

        Stages train different parts (LAF's VAEs then the extractor; pruning's overfit copy then the classifier),
        so each step leaves some parameters without gradient, which plain DDP rejects. The flag is set on the
        trainer's DDP strategy before it wraps the module (a user-given ``find_unused_parameters`` is kept).
        """
        super().setup(stage)
        if stage != "fit" or self._trainer is None or self.trainer.world_size < 2:
            return
        ddp_allow_unused_parameters(self.trainer.strategy)

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
        last = is_last_training_batch(self.trainer, batch_idx)
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

    def _guard_stage_name(self) -> str | None:
        """Name of the stage running at the current epoch (``None`` when out of the declared stages)."""
        try:
            return self.current_stage.name
        except (IndexError, ValueError):
            return None

    def _finish_stages_before(self, index: int) -> None:
        stages = self.active_stages()
        while int(self.completed_stages) < min(index, len(stages)):
            done = int(self.completed_stages)
            self._end_stage_checked(stages[done])
            self.completed_stages.fill_(done + 1)
            if not stages[done].trains:
                self._count_edit_as_step()

    def _end_stage_checked(self, stage: Stage) -> None:
        """Run :meth:`stage_end`; with :attr:`check_finite`, undo and raise if it left NaN/inf in the classifier."""
        if not self.check_finite:
            self.stage_end(stage)
            return
        snapshot = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.stage_end(stage)
        self._check_finite_after_edit(f"the end of stage {stage.name!r} (its edit)", snapshot)

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps taken, without the one step counted for each statistics stage's edit."""
        edits = sum(1 for stage in self.active_stages()[: int(self.completed_stages)] if not stage.trains)
        return max(super().optimizer_steps - edits, 0)

    def _count_edit_as_step(self) -> None:
        """Count a statistics stage's edit as one step, so checkpointing and step logging see progress."""
        if self._trainer is None:
            return
        record_optimizer_step(self.trainer)


class OnePassUnlearningMethod(MultiStageUnlearningMethod):
    """Base of gradient-free methods: accumulate statistics in one pass, reduce them across ranks, edit once.

    Subclasses implement :meth:`accumulate` (called per batch under ``no_grad`` unless it enables gradients
    itself) and :meth:`apply_edit` (called once, after the pass, with every rank holding the reduced
    statistics). The persistent ``fitted`` buffer marks an edited model; fitting it again raises
    ``RuntimeError``. The epoch budget is the single statistics epoch (``trainer.max_epochs`` is set to 1).
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

    def _end_stage_checked(self, stage: Stage) -> None:
        """As the base, and an edit undone by the non-finite guard leaves the model marked not fitted."""
        fitted = bool(self.fitted)
        try:
            super()._end_stage_checked(stage)
        except FloatingPointError:
            self.fitted.fill_(fitted)
            raise
