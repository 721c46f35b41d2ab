"""Shared machinery of the metric callbacks: feed every evaluation split into metrics, compute, log."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_unlearn.validation import check_integer

__all__ = ["SplitMetricsCallback", "evaluate_together"]

_OUTPUT_KEYS: tuple[str, ...] = ("logits", "target", "index")


class SplitMetricsCallback(Callback):
    """Base class of callbacks that evaluate metrics on every named evaluation split.

    The mechanism lives here once; subclasses only say which metrics they own, which splits they consume and how a
    batch updates them:

    - **Before unlearning** (``on_train_start``), unless ``log_initial=False``: :meth:`evaluate` runs its own pass
      over ``trainer.datamodule.val_dataloader()`` (a dict ``{split: DataLoader}``) with the module in eval mode
      under ``no_grad``, calling ``pl_module.validation_step`` for each batch, then restores every submodule's
      mode. The values go to every logger at step 0 (global rank 0) and to :attr:`initial_metrics`. On resume
      from a checkpoint the stored initial values are kept.
    - **Each validation epoch** (not the sanity check; for fitting only every ``every_n_epochs`` epochs and at the
      last epoch): ``outputs`` of ``on_validation_batch_end`` update the metrics, and at the epoch end the values
      are computed (collectively on all processes), logged with ``pl_module.log(..., sync_dist=False)`` (they are
      already identical on every process) and stored in :attr:`final_metrics`.
    - **End of training** (``on_train_end``), unless ``evaluate_at_end=False``: if the model was trained after the
      last evaluation (validation only every N epochs, an early stop, or no validation at all), the final model is
      evaluated once, the values go to every logger at the last step and to :attr:`final_metrics`, so the final
      numbers are always those of the final model. Skipped under ``Trainer(limit_val_batches=0)``. Several metric
      callbacks share one pass, here and before unlearning (:func:`evaluate_together`).
    - **Test**: the same with the test hooks; values are logged and stored in :attr:`test_metrics`.

    ``dataloader_idx`` maps to a split name through ``trainer.datamodule.eval_split_names`` (else the keys of the
    dict of evaluation loaders). Evaluation steps must return ``{"logits", "target", "index"}``.

    Args:
        log_initial: Evaluate and log once before unlearning starts.
        every_n_epochs: Evaluate at validation only every this many training epochs (and at the last one).
        evaluate_at_end: Evaluate the final model when training ends if it was not evaluated after its last step.

    Raises:
        ValueError: If ``every_n_epochs`` is smaller than 1.
    """

    def __init__(self, *, log_initial: bool = True, every_n_epochs: int = 1, evaluate_at_end: bool = True) -> None:
        check_integer("every_n_epochs", every_n_epochs, 1)
        self.log_initial = log_initial
        self.every_n_epochs = every_n_epochs
        self.evaluate_at_end = evaluate_at_end
        self.initial_metrics: dict[str, float] = {}
        self.final_metrics: dict[str, float] = {}
        self.test_metrics: dict[str, float] = {}
        self._split_names: tuple[str, ...] | None = None
        self._active = False
        self._initial_restored = False
        self._warned_partial = False
        self._pending: dict[str, dict[str, float]] = {}  # values of a shared pass, by moment, not yet taken
        self._stale = False  # trained since the last evaluation

    # ------------------------------------------------------------------ to override
    def configure_splits(self, split_names: Sequence[str]) -> None:  # noqa: B027
        """Build or check the metrics for these evaluation splits (called when the split names change).

        Args:
            split_names: Evaluation split names in ``dataloader_idx`` order.
        """

    @abstractmethod
    def split_metrics(self) -> list[Metric]:
        """Every metric this callback owns (moved to the module's device and reset before each evaluation)."""

    def accepts(self, split: str) -> bool:
        """Whether batches of ``split`` are needed (others are skipped, and not even run in :meth:`evaluate`)."""
        return True

    def update_batch(self, split: str, outputs: Any, batch: Any) -> None:
        """Update the metrics with one evaluation step's ``outputs`` (and, if needed, its ``batch``).

        The default checks that ``outputs`` holds ``logits``, ``target`` and ``index`` and calls
        :meth:`update_split`; override it when the inputs themselves are needed (e.g. to run a second model).

        Raises:
            TypeError: If ``outputs`` is not a dict with those keys.
        """
        if not isinstance(outputs, Mapping) or any(key not in outputs for key in _OUTPUT_KEYS):
            raise TypeError(
                f"{type(self).__name__} needs validation_step/test_step to return a dict with keys "
                f"{list(_OUTPUT_KEYS)}, got {type(outputs).__name__}"
                + (f" with keys {list(outputs)}" if isinstance(outputs, Mapping) else "")
            )
        self.update_split(split, outputs["logits"], outputs["target"], outputs["index"])

    @abstractmethod
    def update_split(self, split: str, logits: Tensor, target: Tensor, index: Tensor) -> None:
        """Update the metrics with one evaluation batch of ``split``."""

    @abstractmethod
    def compute_values(self) -> dict[str, float]:
        """Compute every metric (collectively on all processes) as ``{logged name: value}``."""

    # ------------------------------------------------------------------ public
    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Run one evaluation pass over the datamodule's validation loaders and compute the metrics.

        Must be called on every process (the computation is collective).

        Args:
            trainer: The trainer, with a datamodule providing ``val_dataloader()``.
            pl_module: The module whose ``validation_step`` returns ``{"logits", "target", "index"}``.

        Returns:
            ``{logged name: value}``.

        Raises:
            ValueError: If the trainer has no datamodule with ``val_dataloader``.
            TypeError: If ``val_dataloader()`` returns neither a dict nor a list of loaders.
        """
        return evaluate_together([self], trainer, pl_module)[0]

    # ------------------------------------------------------------------ fit
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Evaluate once before unlearning and log the values at step 0 (one pass shared by the metric callbacks)."""
        if not self.log_initial or self._initial_restored:
            return
        self.initial_metrics = self._shared_pass("initial", trainer, pl_module)
        _send_to_loggers(trainer, self.initial_metrics, step=0)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Note that the model changed since the last evaluation."""
        self._stale = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Evaluate the final model once if it was trained after the last evaluation (see the class docstring)."""
        if "final" not in self._pending and not self._wants("final", trainer):
            return
        self.final_metrics = self._shared_pass("final", trainer, pl_module)
        self._stale = False
        _send_to_loggers(trainer, self.final_metrics, step=trainer.global_step)

    def _wants(self, moment: str, trainer: Trainer) -> bool:
        """Whether this callback takes part in the shared ``"initial"`` or ``"final"`` pass."""
        if moment in self._pending:
            return False
        if moment == "initial":
            return self.log_initial and not self._initial_restored
        return self.evaluate_at_end and self._stale and trainer.limit_val_batches != 0

    def _shared_pass(self, moment: str, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """This callback's values of the ``moment`` pass.

        The first metric callback to ask runs one pass (:func:`evaluate_together`) for every metric callback of the
        trainer that takes part; the others find their values ready.
        """
        if moment not in self._pending:
            callbacks = getattr(trainer, "callbacks", [])
            peers = [cb for cb in callbacks if isinstance(cb, SplitMetricsCallback) and cb._wants(moment, trainer)]
            if self not in peers:
                peers.append(self)
            for peer, values in zip(peers, evaluate_together(peers, trainer, pl_module), strict=True):
                peer._pending[moment] = values
        return self._pending.pop(moment)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Reset the metrics when this validation epoch is evaluated."""
        self._active = not trainer.sanity_checking and self._due(trainer)
        if self._active:
            self._begin(pl_module, self._stage_split_names(trainer, trainer.val_dataloaders))
            limit = trainer.limit_val_batches
            if not (isinstance(limit, float) and limit == 1.0) and not self._warned_partial:
                self._warned_partial = True
                rank_zero_warn(
                    f"{type(self).__name__}: Trainer(limit_val_batches={limit!r}) evaluates only part of each split; "
                    "validation metrics then differ from the full-split values logged before unlearning"
                )

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Update the metrics of the batch's split."""
        if self._active:
            self._feed(self._name_of(dataloader_idx), outputs, batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Compute, log and keep the values as :attr:`final_metrics`."""
        values = self._end_epoch(pl_module)
        if values is not None:
            self.final_metrics = values
            self._stale = False

    # ------------------------------------------------------------------ test
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Reset the metrics."""
        self._active = True
        self._begin(pl_module, self._stage_split_names(trainer, trainer.test_dataloaders))

    on_test_batch_end = on_validation_batch_end

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Compute, log and keep the values as :attr:`test_metrics`."""
        values = self._end_epoch(pl_module)
        if values is not None:
            self.test_metrics = values

    def _end_epoch(self, pl_module: LightningModule) -> dict[str, float] | None:
        if not self._active:
            return None
        self._active = False
        values = self._finish()
        self._log(pl_module, values)
        return values

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Initial and latest values, so that a resumed run keeps its before-unlearning numbers."""
        return {"initial_metrics": dict(self.initial_metrics), "final_metrics": dict(self.final_metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the values saved by :meth:`state_dict`."""
        self.initial_metrics = {str(k): float(v) for k, v in state_dict.get("initial_metrics", {}).items()}
        self.final_metrics = {str(k): float(v) for k, v in state_dict.get("final_metrics", {}).items()}
        self._initial_restored = bool(self.initial_metrics)

    # ------------------------------------------------------------------ helpers
    def _due(self, trainer: Trainer) -> bool:
        if trainer.state.fn != TrainerFn.FITTING or self.every_n_epochs == 1:
            return True
        epoch = trainer.current_epoch + 1
        max_epochs = trainer.max_epochs
        is_last = max_epochs is not None and max_epochs > 0 and epoch >= max_epochs
        return epoch % self.every_n_epochs == 0 or is_last

    def _stage_split_names(self, trainer: Trainer, loaders: Any) -> tuple[str, ...]:
        names = getattr(getattr(trainer, "datamodule", None), "eval_split_names", None)
        if names:
            return tuple(str(name) for name in names)
        if isinstance(loaders, Mapping):
            return tuple(str(name) for name in loaders)
        raise ValueError(
            f"{type(self).__name__} needs trainer.datamodule.eval_split_names or a dict {{split: DataLoader}} of "
            "evaluation loaders to name the splits"
        )

    def _name_of(self, dataloader_idx: int) -> str:
        names = self._split_names or ()
        if not 0 <= dataloader_idx < len(names):
            raise ValueError(f"dataloader_idx {dataloader_idx} has no split name; eval_split_names = {list(names)}")
        return names[dataloader_idx]

    def _begin(self, pl_module: LightningModule, split_names: tuple[str, ...]) -> None:
        if split_names != self._split_names:
            self.configure_splits(split_names)
            self._split_names = split_names
        device = pl_module.device
        if device.type == "mps":  # float64 states are not supported there
            device = torch.device("cpu")
        for metric in self.split_metrics():
            metric.to(device)
            metric.reset()

    def _feed(self, split: str, outputs: Any, batch: Any) -> None:
        if self.accepts(split):
            self.update_batch(split, outputs, batch)

    def _finish(self) -> dict[str, float]:
        with warnings.catch_warnings():
            # a split without samples on any process is reported as nan; the torchmetrics warning is noise here
            warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method.*")
            values = self.compute_values()
        for metric in self.split_metrics():
            metric.reset()
        return values

    @staticmethod
    def _log(pl_module: LightningModule, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=False, add_dataloader_idx=False)


def evaluate_together(
    callbacks: Sequence[SplitMetricsCallback], trainer: Trainer, pl_module: LightningModule
) -> list[dict[str, float]]:
    """One evaluation pass over the datamodule's validation loaders that feeds several metric callbacks.

    Each batch's ``validation_step`` runs once (module in eval mode, ``no_grad``, every submodule's mode restored
    afterwards) and its outputs go to every callback that accepts the split; a split no callback accepts is not
    loaded. Must be called on every process with the callbacks in the same order (the computation is collective).

    Args:
        callbacks: The metric callbacks to evaluate.
        trainer: The trainer, with a datamodule providing ``val_dataloader()``.
        pl_module: The module whose ``validation_step`` returns ``{"logits", "target", "index"}``.

    Returns:
        One ``{logged name: value}`` per callback, in order.

    Raises:
        ValueError: If the trainer has no datamodule with ``val_dataloader``.
        TypeError: If ``val_dataloader()`` returns neither a dict nor a list of loaders.
    """
    if not callbacks:
        return []
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "val_dataloader"):
        owners = ", ".join(type(cb).__name__ for cb in callbacks)
        raise ValueError(
            f"{owners}: evaluation needs trainer.datamodule with val_dataloader(); pass the data as a datamodule or "
            "set log_initial=False"
        )
    loaders = datamodule.val_dataloader()
    if isinstance(loaders, Mapping):
        items = list(loaders.items())
    elif isinstance(loaders, Sequence):
        names = getattr(datamodule, "eval_split_names", None)
        if names is None or len(names) != len(loaders):
            raise ValueError("a list of validation loaders needs datamodule.eval_split_names of the same length")
        items = list(zip(names, loaders, strict=True))
    else:
        raise TypeError(f"val_dataloader() must return a dict {{split: DataLoader}}, got {type(loaders).__name__}")
    split_names = tuple(name for name, _ in items)
    for callback in callbacks:
        callback._begin(pl_module, split_names)
    multiple = len(items) > 1
    with _eval_mode(pl_module), torch.no_grad(), trainer.precision_plugin.val_step_context():
        for dataloader_idx, (name, loader) in enumerate(items):
            consumers = [callback for callback in callbacks if callback.accepts(name)]
            if not consumers:
                continue
            for batch_idx, batch in enumerate(loader):
                batch = trainer.strategy.batch_to_device(batch, pl_module.device, dataloader_idx=dataloader_idx)
                if multiple:
                    outputs = pl_module.validation_step(batch, batch_idx, dataloader_idx=dataloader_idx)
                else:
                    outputs = pl_module.validation_step(batch, batch_idx)
                for callback in consumers:
                    callback.update_batch(name, outputs, batch)
    return [callback._finish() for callback in callbacks]


def _send_to_loggers(trainer: Trainer, values: Mapping[str, float], step: int) -> None:
    """Log ``values`` at ``step`` to every logger (global rank 0), outside Lightning's ``self.log``."""
    if trainer.is_global_zero and values:
        for logger in trainer.loggers:
            logger.log_metrics(dict(values), step=step)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode and restore every submodule's own mode afterwards."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training
