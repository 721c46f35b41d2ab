"""The few places where the library reaches into Lightning internals, each behind one documented function.

Everything else in the package uses Lightning's public API (``Trainer`` properties such as
``num_training_batches`` and ``should_stop``, the LightningCLI hooks, ``LightningArgumentParser`` methods). What is
left has no public equivalent in Lightning 2.x; each function below names the attribute it touches, why, and
the versions it was checked on. ``tests/test_compat.py`` runs every function against the installed Lightning
with real (tiny) Trainer runs, so an upgrade that moves an attribute fails there first, not in a user's run.

Tested with Lightning 2.4 to 2.6 (the range allowed by the package's dependencies).
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Trainer

__all__ = [
    "TESTED_LIGHTNING",
    "ddp_allow_unused_parameters",
    "end_fit_after_current_epoch",
    "is_last_training_batch",
    "record_optimizer_step",
    "set_max_epochs",
]

#: Lightning versions (``major.minor``) the functions of this module were run against.
TESTED_LIGHTNING: tuple[str, ...] = ("2.4", "2.5", "2.6")


def ddp_allow_unused_parameters(strategy: Any) -> bool:
    """Let a DDP strategy tolerate parameters without gradient, unless the user chose otherwise.

    Touches ``DDPStrategy._ddp_kwargs`` (the keyword arguments later given to ``DistributedDataParallel``). Lightning
    only takes them in the strategy's constructor (``DDPStrategy(find_unused_parameters=True)``, or the
    ``"ddp_find_unused_parameters_true"`` alias); a LightningModule whose stages train different parts of the
    network has no public way to request the flag for the strategy the user configured. It must be called before
    the strategy wraps the module (``LightningModule.setup`` runs early enough).

    Args:
        strategy: The trainer's strategy (``trainer.strategy``).

    Returns:
        Whether the strategy has DDP keyword arguments (``False`` for single-device and non-DDP strategies, which
        are left alone). A ``find_unused_parameters`` value given by the user is kept.
    """
    ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)
    if not isinstance(ddp_kwargs, dict):
        return False
    ddp_kwargs.setdefault("find_unused_parameters", True)
    return True


def is_last_training_batch(trainer: Trainer, batch_idx: int) -> bool:
    """Whether ``batch_idx`` is the last training batch of the current epoch.

    The public ``trainer.num_training_batches`` answers whenever the epoch length is known (it already accounts for
    ``limit_train_batches``). For loaders without a length it is ``inf``; only then is the training epoch loop's
    progress flag ``trainer.fit_loop.epoch_loop.batch_progress.is_last_batch`` read, which Lightning sets once its
    data fetcher has looked one batch ahead and found the end. No public property exposes that flag.

    Args:
        trainer: The running trainer (inside ``on_train_batch_end`` or ``training_step``).
        batch_idx: Index of the current batch in the epoch.
    """
    total = trainer.num_training_batches
    if isinstance(total, int) or (isinstance(total, float) and math.isfinite(total)):
        if batch_idx + 1 >= total:
            return True
    epoch_loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    progress = getattr(epoch_loop, "batch_progress", None)
    return bool(getattr(progress, "is_last_batch", False))


def record_optimizer_step(trainer: Trainer) -> None:
    """Count one optimiser step under manual optimisation without calling ``optimizer.step()``.

    A gradient-free edit (a one-pass method's statistics stage) changes the weights once; counting it as a step
    makes ``trainer.global_step`` move, so step-based checkpointing and logging see the progress. Under manual
    optimisation ``global_step`` is the completed count of
    ``trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress``, which Lightning only advances from
    its wrapper of ``optimizer.step``; there is no public way to advance it.

    Args:
        trainer: The running trainer of a module with ``automatic_optimization = False``.
    """
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    progress.increment_completed()


def end_fit_after_current_epoch(trainer: Trainer) -> None:
    """Make the current epoch the last one of ``fit``: stop after this batch, validate, report it as final.

    ``trainer.should_stop`` (public) ends the epoch after the current batch and lets the validation loop run.
    Setting the fit loop's epoch budget ``trainer.fit_loop.max_epochs`` to ``current_epoch + 1`` in addition makes
    ``trainer.max_epochs`` (a read-only property) tell callbacks that this epoch is the last one, so callbacks that
    evaluate at the end of training (the library's metric callbacks) report the final model, and the run ends with
    ``current_epoch == max_epochs`` like a run that used its whole budget. Lightning has no public setter for the
    epoch budget of a running fit.

    Args:
        trainer: The running trainer (inside a training hook).
    """
    trainer.should_stop = True
    trainer.fit_loop.max_epochs = trainer.current_epoch + 1


def set_max_epochs(trainer: Trainer, max_epochs: int) -> None:
    """Set the epoch budget of the trainer's fit loop (what ``trainer.max_epochs`` reports).

    Touches ``trainer.fit_loop.max_epochs``: ``Trainer.max_epochs`` is a read-only property of it and Lightning has no
    public setter. ``Trainer.fit`` fills the attribute from the constructor's ``max_epochs`` (1000 when unset and no
    ``max_steps`` is given) before the module's ``setup`` hook runs and reads it when deciding whether to stop, so
    a value set from ``LightningModule.setup("fit")`` governs the run. A method that declares its own epoch budget
    sets it this way (see :mod:`lightning_unlearn.methods.budget`).

    Args:
        trainer: The trainer about to fit (inside ``setup("fit")``).
        max_epochs: The number of epochs to run (>= 0, or -1 for no epoch limit).
    """
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < -1:
        raise ValueError(f"max_epochs must be an integer >= -1, got {max_epochs!r}")
    trainer.fit_loop.max_epochs = max_epochs
