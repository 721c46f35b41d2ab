"""What a datamodule's training loader serves: the unlearning splits, or the whole or retain set for (re)training.

* ``"unlearn"``: the splits named by the current phase of the method's training plan, combined;
* ``"pretrain"``: the whole training set ``D`` (noisy labels under ``NoisyLabels``), to train the original model;
* ``"retrain"``: the retain set ``R``, to train the retrain oracle.

Evaluation loaders are the same in every mode.
"""

from __future__ import annotations

from typing import Literal

from lightning_unlearn.validation import check_choice

Mode = Literal["unlearn", "pretrain", "retrain"]
MODES: tuple[str, ...] = ("unlearn", "pretrain", "retrain")
#: Modes whose training loader is one shuffled loader over a whole set (``D`` or ``R``), batches ``(x, y)``.
TRAINING_MODES: tuple[str, ...] = ("pretrain", "retrain")

__all__ = ["MODES", "TRAINING_MODES", "Mode", "check_mode"]


def check_mode(mode: object) -> None:
    """Raise ``ValueError`` naming :data:`MODES` unless ``mode`` is one of them."""
    check_choice("mode", mode, MODES)
