"""Cost of an unlearning run: ``cost/unlearn_time_s``, ``cost/optimizer_steps`` and ``cost/time_ratio``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_unlearn.validation import is_number

__all__ = ["COST_FILE", "UnlearningCost", "read_reference_time"]

#: File written beside the run's logs (and read beside a reference checkpoint).
COST_FILE = "cost.json"


def read_reference_time(reference_ckpt: str | Path) -> float:
    """The recorded run time of the model saved at ``reference_ckpt``.

    Looks for ``cost.json`` in the checkpoint's folder (written by :class:`UnlearningCost` at the end of a
    ``lightning-unlearn fit`` run, beside ``classifier.pt``), then for ``<checkpoint>.json`` (written by
    :func:`~lightning_unlearn.pretrained.pretrained_classifier` for cached models), and reads ``unlearn_time_s``
    (or ``train_time_s``).

    Raises:
        FileNotFoundError: If neither file exists.
        ValueError: If the file holds no positive time.
    """
    path = Path(reference_ckpt)
    candidates = [path.parent / COST_FILE, path.with_suffix(".json")]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        record = json.loads(candidate.read_text())
        value = record.get("unlearn_time_s", record.get("train_time_s"))
        if not is_number(value) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{candidate} records no positive run time (unlearn_time_s / train_time_s): {value!r}")
        return float(value)
    raise FileNotFoundError(
        f"no recorded run time for {path}: expected {candidates[0]} or {candidates[1]} (pass reference_time_s instead)"
    )


class UnlearningCost(Callback):
    """Measures the wall time and optimiser steps of the unlearning and logs them.

    Logged at every training epoch end (cumulative, identical on every rank):

    - ``cost/unlearn_time_s``: wall-clock seconds spent in training epochs (batches, optimiser steps and stage ends
      such as a pruning or dampening edit), from each epoch's start to its end or to the start of that epoch's
      validation, whichever comes first. Metric evaluation (also the initial pass before unlearning) and checkpoint
      I/O are outside these intervals. Each interval starts and ends after a device synchronise and a barrier; the
      seconds are rank 0's, broadcast. A resumed run adds to the time restored from the checkpoint.
    - ``cost/optimizer_steps``: optimiser steps taken (the module's ``optimizer_steps`` when it has one, which
      excludes the one-step bookkeeping of statistics edits, else ``trainer.global_step``).
    - ``cost/time_ratio``: ``cost/unlearn_time_s`` divided by the retrain oracle's time (same hardware and process
      count for a fair ratio), when ``reference_time_s`` or ``reference_ckpt`` is given. Lower = cheaper.

    At the end of ``fit`` the totals are written to ``<log_dir>/cost.json`` (rank 0), so a retrain-oracle run can
    serve as the reference of later runs.

    Args:
        reference_time_s: Run time of the retrain oracle in seconds.
        reference_ckpt: A retrain oracle's checkpoint whose time is recorded beside it (see
            :func:`read_reference_time`); read at setup. Ignored when ``reference_time_s`` is given.

    Raises:
        ValueError: If ``reference_time_s`` is not a positive finite number.
    """

    def __init__(self, reference_time_s: float | None = None, reference_ckpt: str | None = None) -> None:
        super().__init__()
        if reference_time_s is not None and not (math.isfinite(reference_time_s) and reference_time_s > 0):
            raise ValueError(f"reference_time_s must be a positive finite number, got {reference_time_s!r}")
        self.reference_time_s = reference_time_s
        self.reference_ckpt = reference_ckpt
        #: Seconds accumulated over closed training intervals (rank 0's, broadcast).
        self.elapsed_s = 0.0
        #: The values logged last (``{"cost/...": value}``).
        self.last_values: dict[str, float] = {}
        self._start: float | None = None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Read the reference time early, so a missing record fails before any work."""
        if stage == "fit" and self.reference_time_s is None and self.reference_ckpt is not None:
            self.reference_time_s = read_reference_time(self.reference_ckpt)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open the epoch's interval."""
        self._synchronise(trainer, pl_module)
        self._start = time.perf_counter()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the interval before an in-epoch validation (metric callbacks are not unlearning)."""
        self._close(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the interval (if validation did not) and log the cumulative cost."""
        self._close(trainer, pl_module)
        self.last_values = self.values(trainer, pl_module)
        for name, value in self.last_values.items():
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=False, batch_size=1)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write ``cost.json`` beside the logs (rank 0)."""
        log_dir = trainer.log_dir
        if not trainer.is_global_zero or log_dir is None:
            return
        record = {
            **{name.removeprefix("cost/"): value for name, value in self.values(trainer, pl_module).items()},
            "world_size": trainer.world_size,
            "accelerator": type(trainer.accelerator).__name__,
        }
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        (Path(log_dir) / COST_FILE).write_text(json.dumps(record, indent=2))

    # ------------------------------------------------------------------ values
    def values(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """The current ``cost/*`` values."""
        steps = getattr(pl_module, "optimizer_steps", None)
        values = {
            "cost/unlearn_time_s": self.elapsed_s,
            "cost/optimizer_steps": float(steps if isinstance(steps, int) else trainer.global_step),
        }
        if self.reference_time_s is not None:
            values["cost/time_ratio"] = self.elapsed_s / self.reference_time_s
        return values

    def _close(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._start is None:
            return
        self._synchronise(trainer, pl_module)
        local = time.perf_counter() - self._start
        self._start = None
        self.elapsed_s += float(trainer.strategy.broadcast(local, src=0))

    @staticmethod
    def _synchronise(trainer: Trainer, pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        trainer.strategy.barrier()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The accumulated seconds (so a resumed run keeps counting)."""
        return {"elapsed_s": self.elapsed_s}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the accumulated seconds."""
        self.elapsed_s = float(state_dict.get("elapsed_s", 0.0))
