"""Training plans: what data an unlearning method receives in each epoch.

A method installs a plan on the datamodule (``datamodule.set_train_plan([...])``) before training. The plan is plain
data, so datamodules stay ignorant of methods. The datamodule serves the phase that contains
``trainer.current_epoch``; a plan with more than one phase needs ``reload_dataloaders_every_n_epochs=1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lightning_unlearn.validation import check_integer

PhaseMode = Literal["max_size_cycle", "min_size", "max_size", "sequential"]
PHASE_MODES: tuple[str, ...] = ("max_size_cycle", "min_size", "max_size", "sequential")


@dataclass(frozen=True)
class Phase:
    """One contiguous block of training epochs and the data it is served.

    Args:
        epochs: Number of epochs the phase lasts (>= 1).
        splits: Training split names served as a dict batch keyed by name. Known names: ``forget``, ``retain``,
            ``full`` (the whole training set), ``retain_labelled`` (seeded labelled subset of the retain set),
            ``retain_sample`` (seeded subset of the retain set of ``sample_size`` samples) and unions ``a+b``
            (one loader over ``a`` then ``b``).
        mode: How the split loaders are combined (``lightning.pytorch.utilities.CombinedLoader`` modes).
        shuffle: Whether each split loader shuffles.
        batch_size: Batch size of every split loader; ``None`` uses the datamodule's ``batch_size``.
        labelled: Whether elements carry labels; ``None`` uses the datamodule's ``labelled``.
        with_index: Append each sample's position in its split to every element.
        sample_size: Size of ``retain_sample`` when the phase uses it.
        unrepeated: Under DDP give every sample to exactly one rank (no padding duplicates), for statistics
            passes that must count each sample once; ranks may then see one batch more or less, so use it only
            for phases without gradient synchronisation. Ignored on one process.
        global_batches: Under DDP serve every rank the whole one-process batch sequence (same order, same batch
            size); the method trains on its share of each batch with a share-weighted loss
            (:func:`~lightning_unlearn.datamodules.samplers.global_batch_share`), so the phase's outcome does not depend
            on the number of processes. Ignored on one process; exclusive with ``unrepeated``.
    """

    epochs: int
    splits: tuple[str, ...] = ("forget", "retain")
    mode: PhaseMode = "max_size_cycle"
    shuffle: bool = True
    batch_size: int | None = None
    labelled: bool | None = None
    with_index: bool = False
    sample_size: int | None = None
    unrepeated: bool = False
    global_batches: bool = False

    def __post_init__(self) -> None:
        check_integer("Phase.epochs", self.epochs, 1)
        if not self.splits:
            raise ValueError("Phase.splits must name at least one split")
        if self.mode not in PHASE_MODES:
            raise ValueError(f"Phase.mode must be one of {PHASE_MODES}, got {self.mode!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"Phase.batch_size must be >= 1 or None, got {self.batch_size!r}")
        if self.sample_size is not None and self.sample_size < 1:
            raise ValueError(f"Phase.sample_size must be >= 1 or None, got {self.sample_size!r}")
        if self.unrepeated and self.global_batches:
            raise ValueError("Phase.unrepeated and Phase.global_batches exclude each other")


def phase_at(plan: Sequence[Phase], epoch: int) -> tuple[int, Phase]:
    """Return ``(phase_index, phase)`` of the phase containing ``epoch``; the last phase covers later epochs."""
    if not plan:
        raise ValueError("The training plan is empty")
    start = 0
    for i, phase in enumerate(plan):
        if epoch < start + phase.epochs:
            return i, phase
        start += phase.epochs
    return len(plan) - 1, plan[-1]


def plan_epochs(plan: Sequence[Phase]) -> int:
    """Total number of epochs of a plan."""
    return sum(p.epochs for p in plan)
