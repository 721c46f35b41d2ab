"""Membership-inference callback: ``mia/<name>`` before unlearning, at validation and at test."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torchmetrics import Metric

from lightning_unlearn.callbacks.base import SplitMetricsCallback
from lightning_unlearn.metrics.membership import MembershipAttack, available_attacks, build_attack

__all__ = ["MembershipInference"]


class MembershipInference(SplitMetricsCallback):
    """Runs membership-inference attacks and logs ``mia/<attack name>``.

    Each attack is a :class:`~lightning_unlearn.metrics.MembershipAttack` selected by its registered name (see
    :func:`~lightning_unlearn.metrics.available_attacks`); e.g. ``"entropy"`` logs
    ``mia/entropy_forget_member_rate`` (share of the forget split predicted member; lower = more forgotten,
    ideal = the retrained model's value). Only the splits the attacks consume are evaluated.

    Logged once before unlearning starts (kept in :attr:`initial_metrics`), at validation epoch ends (every
    ``every_n_epochs`` training epochs and at the last; latest in :attr:`final_metrics`) and at test
    (:attr:`test_metrics`). The attacks are fitted on the data gathered from all processes, on process 0, and the
    values broadcast, so 1 and N processes log the same numbers.

    Args:
        attacks: Registered attack names; ``None`` = ``["entropy"]``.
        every_n_epochs: Run the attacks at validation only every this many training epochs (and at the last).
        retain_subsample: If set, each attack uses a seeded random subset of this many retain samples (bounds the
            fitting cost; ``None`` = all of the retain split, faithful to the protocols).
        seed: Seed of every random step of the attacks.
        log_initial: Evaluate and log once before unlearning starts.
        evaluate_at_end: Evaluate the final model when training ends if it was not evaluated after its last step.

    Raises:
        ValueError: On an unknown attack name (listing the allowed ones), an empty list, ``every_n_epochs < 1`` or
            ``retain_subsample < 1``.
        TypeError: If ``attacks`` is not a list of names.
    """

    def __init__(
        self,
        attacks: list[str] | None = None,
        every_n_epochs: int = 1,
        retain_subsample: int | None = None,
        seed: int = 0,
        log_initial: bool = True,
        evaluate_at_end: bool = True,
    ) -> None:
        super().__init__(log_initial=log_initial, every_n_epochs=every_n_epochs, evaluate_at_end=evaluate_at_end)
        names = ["entropy"] if attacks is None else [attacks] if isinstance(attacks, str) else attacks
        if not isinstance(names, Sequence) or not all(isinstance(name, str) for name in names):
            raise TypeError(f"attacks must be a list of attack names from {available_attacks()}, got {attacks!r}")
        if not names:
            raise ValueError(f"attacks must name at least one attack from {available_attacks()}")
        unknown = [name for name in names if name not in available_attacks()]
        if unknown:
            raise ValueError(f"unknown attacks {unknown}; allowed: {available_attacks()}")
        if retain_subsample is not None and retain_subsample < 1:
            raise ValueError(f"retain_subsample must be None or an integer >= 1, got {retain_subsample!r}")
        self.attack_names: list[str] = list(dict.fromkeys(names))
        self.retain_subsample = retain_subsample
        self.seed = seed
        self.attacks: dict[str, MembershipAttack] = {
            name: build_attack(name, seed=seed, retain_subsample=retain_subsample) for name in self.attack_names
        }

    @property
    def state_key(self) -> str:
        """Distinguishes instances running different attacks in one trainer's checkpoint."""
        return self._generate_state_key(attacks=self.attack_names)

    def configure_splits(self, split_names: Sequence[str]) -> None:
        """Check that every split an attack requires is provided.

        Raises:
            ValueError: Naming the attack and the missing splits.
        """
        for name, attack in self.attacks.items():
            required = attack.required_splits()
            missing = [split for split in required if split not in split_names]
            if missing:
                raise ValueError(
                    f"attack {name!r} needs the evaluation splits {list(required)}; missing {missing} "
                    f"(the datamodule provides {list(split_names)})"
                )

    def split_metrics(self) -> list[Metric]:
        """The attack metrics."""
        return list(self.attacks.values())

    def accepts(self, split: str) -> bool:
        """Whether any attack consumes ``split``."""
        return any(split in attack.splits for attack in self.attacks.values())

    def update_split(self, split: str, logits: Tensor, target: Tensor, index: Tensor) -> None:
        """Feed the batch to every attack consuming ``split``."""
        for attack in self.attacks.values():
            if split in attack.splits:
                attack.update(split, logits, target, index)

    def compute_values(self) -> dict[str, float]:
        """``{"mia/<attack name>": value}`` in attack order."""
        return {f"mia/{attack.name}": float(attack.compute()) for attack in self.attacks.values()}
