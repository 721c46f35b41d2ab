"""A method's epoch budget and data plan, and the Trainer settings that follow from them.

Most unlearning methods fix their own length: a multi-stage method runs the sum of its stage epochs (SCRUB's
alternating passes, LAF's VAE, unlearning and repair stages), a schedule-driven gradient method runs its ``epochs``
argument (Boundary Shrink, L1-sparse), JiT makes a single pass. Such a method declares an :class:`EpochBudget`
(:meth:`~lightning_unlearn.methods.base.UnlearningMethod.epoch_budget`); methods whose length is the user's choice
(Finetune, GradientAscent, RandomLabel, L2UL's safety net) declare none, and ``trainer.max_epochs`` is the budget.

:func:`apply_budget` turns the declaration into Trainer settings when ``fit`` starts (the base class calls it from
``setup("fit")``, before the training plan is installed), so neither a plain ``Trainer()`` user nor a config has to
repeat the arithmetic:

* ``trainer.max_epochs`` not set: it is set to the method's epochs. "Not set" means ``None`` or ``-1``, or
  Lightning's own default of 1000, which Lightning fills in for an unset ``max_epochs`` before the module's
  ``setup`` runs when no ``max_steps`` limit is given (so an explicit ``max_epochs=1000`` without ``max_steps``
  is also treated as unset). A ``max_steps`` or ``max_time`` limit stays a further cap.
* ``trainer.max_epochs`` set to another value: :class:`ValueError` naming the method, its epochs and the fix.
* loaders that change between epochs (more than one phase in the plan): ``reload_dataloaders_every_n_epochs`` is
  set from Lightning's default 0 to 1; any value other than 0 or 1 is refused.

The command line (:class:`~lightning_unlearn.main.UnlearnCLI`) reads the same declaration through
:func:`trainer_settings` to build its Trainer with these values, so Lightning does not warn about an unset
``max_epochs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning.pytorch import Trainer

from lightning_unlearn.compat import set_max_epochs

if TYPE_CHECKING:
    from lightning_unlearn.methods.base import UnlearningMethod

__all__ = [
    "LIGHTNING_DEFAULT_MAX_EPOCHS",
    "EpochBudget",
    "apply_budget",
    "declares_budget",
    "max_epochs_is_unset",
    "trainer_settings",
]

#: The ``max_epochs`` Lightning substitutes for an unset value when no ``max_steps`` is given.
LIGHTNING_DEFAULT_MAX_EPOCHS = 1000


@dataclass(frozen=True)
class EpochBudget:
    """The epochs a method runs and whether its training loaders change between epochs.

    Args:
        epochs: Number of training epochs (>= 1).
        reload_dataloaders: Whether the training data changes between epochs (a plan of several phases), so the
            Trainer must rebuild the loaders every epoch.
        detail: How the epochs come about, for messages (e.g. ``"overfit=20, retain=5"`` or ``"epochs=10"``).
    """

    epochs: int
    reload_dataloaders: bool = False
    detail: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"EpochBudget.epochs must be an integer >= 1, got {self.epochs!r}")


def declares_budget(method_class: type[UnlearningMethod]) -> bool:
    """Whether instances of ``method_class`` declare their own epoch budget (read from the class, nothing is built).

    ``True`` for a class that names a :attr:`~lightning_unlearn.methods.base.UnlearningMethod.budget_argument` or
    overrides :meth:`~lightning_unlearn.methods.base.UnlearningMethod.epoch_budget` (every multi-stage method);
    its configs leave ``trainer.max_epochs`` and ``reload_dataloaders_every_n_epochs`` to the method.
    """
    from lightning_unlearn.methods.base import UnlearningMethod

    if not (isinstance(method_class, type) and issubclass(method_class, UnlearningMethod)):
        raise TypeError(f"method_class must be an UnlearningMethod subclass, got {method_class!r}")
    return method_class.budget_argument is not None or method_class.epoch_budget is not UnlearningMethod.epoch_budget


def max_epochs_is_unset(max_epochs: int | None, max_steps: int = -1) -> bool:
    """Whether a Trainer's ``max_epochs`` means "not set by the user" (see the module docstring).

    Args:
        max_epochs: ``trainer.max_epochs`` (or the value a config gives the Trainer).
        max_steps: ``trainer.max_steps`` (``-1``: no step limit).
    """
    if max_epochs is None or max_epochs == -1:
        return True
    return max_epochs == LIGHTNING_DEFAULT_MAX_EPOCHS and max_steps == -1


def _describe(method: UnlearningMethod, budget: EpochBudget) -> str:
    detail = f" ({budget.detail})" if budget.detail else ""
    return f"{type(method).__name__} runs {budget.epochs} epoch{'s' if budget.epochs != 1 else ''}{detail}"


def _check_reload(method: UnlearningMethod, budget: EpochBudget, reload: Any) -> bool:
    """Whether ``reload`` must be raised from 0 to 1; ``ValueError`` for a value other than 0 or 1."""
    if not budget.reload_dataloaders or reload in (None, 1):
        return False
    if reload == 0:
        return True
    raise ValueError(
        f"{_describe(method, budget)} with different training data between epochs: the loaders must be rebuilt "
        "every epoch. Remove trainer.reload_dataloaders_every_n_epochs (it is set from the method) or set "
        f"trainer.reload_dataloaders_every_n_epochs=1 (got {reload!r}; allowed: 0 or 1)"
    )


def _check_epochs(method: UnlearningMethod, budget: EpochBudget, max_epochs: int | None, max_steps: int) -> bool:
    """Whether ``max_epochs`` must be set from the budget; ``ValueError`` for a different user value."""
    if max_epochs_is_unset(max_epochs, max_steps):
        return True
    if max_epochs == budget.epochs:
        return False
    raise ValueError(
        f"{_describe(method, budget)}: remove trainer.max_epochs (it is set from the method) or set "
        f"trainer.max_epochs={budget.epochs} (got {max_epochs})"
    )


def apply_budget(trainer: Trainer, method: UnlearningMethod) -> EpochBudget | None:
    """Make the trainer's epoch limit and loader reloading follow the method's :class:`EpochBudget`.

    Called by :meth:`UnlearningMethod.setup <lightning_unlearn.methods.base.UnlearningMethod.setup>` for ``fit``,
    before the training plan is installed; a method without a budget leaves the trainer as it is.

    Args:
        trainer: The trainer about to fit ``method``.
        method: The unlearning method.

    Returns:
        The method's budget (``None``: ``trainer.max_epochs`` is the budget).

    Raises:
        ValueError: If ``trainer.max_epochs`` is set to another number of epochs than the method runs, or
            ``reload_dataloaders_every_n_epochs`` is neither 0 nor 1 for a method whose loaders change.
    """
    budget = method.epoch_budget()
    if budget is None:
        return None
    set_reload = _check_reload(method, budget, getattr(trainer, "reload_dataloaders_every_n_epochs", None))
    if _check_epochs(method, budget, trainer.max_epochs, int(getattr(trainer, "max_steps", -1))):
        set_max_epochs(trainer, budget.epochs)
    if set_reload:
        # A plain Trainer attribute (set by its data connector), read when the fit loop decides to rebuild loaders.
        trainer.reload_dataloaders_every_n_epochs = 1  # type: ignore[attr-defined]
    return budget


def trainer_settings(method: UnlearningMethod, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Trainer arguments that the method's budget adds to ``settings`` (the configured Trainer arguments).

    The command line builds its Trainer with them; values the configuration gives are kept (and checked again by
    :func:`apply_budget` when ``fit`` starts).

    Args:
        method: The unlearning method.
        settings: The Trainer arguments configured so far (``max_epochs``, ``max_steps``,
            ``reload_dataloaders_every_n_epochs``, ...).

    Returns:
        ``max_epochs`` when the configuration leaves it unset, ``reload_dataloaders_every_n_epochs`` when the
        loaders change between epochs and the configuration leaves it at 0 or unset; empty without a budget.

    Raises:
        ValueError: As :func:`apply_budget`, for configured values that contradict the budget.
    """
    budget = method.epoch_budget()
    if budget is None:
        return {}
    added: dict[str, Any] = {}
    max_steps = settings.get("max_steps")
    if _check_epochs(method, budget, settings.get("max_epochs"), -1 if max_steps is None else int(max_steps)):
        added["max_epochs"] = budget.epochs
    if _check_reload(method, budget, settings.get("reload_dataloaders_every_n_epochs", 0)):
        added["reload_dataloaders_every_n_epochs"] = 1
    return added
