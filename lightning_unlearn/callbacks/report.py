"""What a run of the command line gives, for a plain ``Trainer``: metrics, cost, the table and ``classifier.pt``."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from rich.console import Console

from lightning_unlearn.callbacks.cost import UnlearningCost
from lightning_unlearn.callbacks.forgetting import ForgettingMetrics
from lightning_unlearn.callbacks.summary import collect_metrics, metrics_table
from lightning_unlearn.hints import tuning_hint
from lightning_unlearn.validation import is_number

__all__ = ["CLASSIFIER_FILE", "UnlearningReport"]

#: File name of the exported unlearned classifier, in the run's log folder.
CLASSIFIER_FILE = "classifier.pt"
#: The metric the damage check reads.
RETAIN_ACCURACY = "acc/retain"


class UnlearningReport(Callback):
    """End-of-fit report of an unlearning run: the before/after table, ``cost/*`` and the unlearned classifier.

    Add it to a plain ``Trainer`` to get what ``lightning-unlearn fit`` gives (the command line adds it itself):

    - when the trainer has no :class:`ForgettingMetrics` and the datamodule names its evaluation splits (every
      library datamodule does), one is added (accuracy on every split; it shares the evaluation pass of the other
      metric callbacks,
      before and after unlearning); when it has no :class:`UnlearningCost`, one is added (``cost/*``);
    - at the end of ``fit``, the unlearned classifier (the method's ``model``) is saved as a raw state dict in
      ``<log_dir>/classifier.pt`` (``out_dir`` when given), which ``load_classifier`` reads; the original
      classifier's file is never written;
    - rank 0 prints a rich table of every metric before and after unlearning, and where the files are;
    - when ``acc/retain`` fell by more than ``max_retain_drop``, a one-line warning names the method's knob to
      turn (published hyperparameters often damage another network; the defaults stay the papers').

    The library's datamodules write ``splits.json`` (exactly what was forgotten) into the same folder.

    Args:
        out_dir: Folder of ``classifier.pt``; ``None``: the trainer's ``log_dir`` (nothing is saved when the
            trainer has neither a logger nor a ``default_root_dir``).
        print_table: Print the table (rank 0).
        export: Save ``classifier.pt``.
        max_retain_drop: Largest tolerated fall of the retain accuracy (a fraction: ``0.05`` = 5 points) before a
            warning; ``None`` turns the check off.

    Raises:
        ValueError: If ``max_retain_drop`` is not a number in ``[0, 1]`` or ``None``.
    """

    def __init__(
        self,
        out_dir: str | Path | None = None,
        print_table: bool = True,
        export: bool = True,
        max_retain_drop: float | None = 0.05,
    ) -> None:
        if max_retain_drop is not None and not (is_number(max_retain_drop) and 0.0 <= max_retain_drop <= 1.0):
            raise ValueError(f"max_retain_drop must be a fraction in [0, 1] or None, got {max_retain_drop!r}")
        self.max_retain_drop = max_retain_drop
        self.warnings: list[str] = []
        self.out_dir = None if out_dir is None else str(out_dir)
        self.print_table = print_table
        self.export = export
        self.classifier_path: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Add the metric and cost callbacks the report reads, when the trainer has none."""
        if stage != "fit":
            return
        added: list[Callback] = []
        datamodule = getattr(trainer, "datamodule", None)
        has_splits = datamodule is not None and hasattr(datamodule, "eval_split_names")
        configured = list(trainer.callbacks)  # type: ignore[attr-defined]
        if has_splits and not any(isinstance(c, ForgettingMetrics) for c in configured):
            added.append(ForgettingMetrics())
        if not any(isinstance(c, UnlearningCost) for c in configured):
            added.append(UnlearningCost())
        for callback in added:
            # Appended while Lightning walks the list for ``setup``: the new callbacks' own ``setup`` runs too.
            trainer.callbacks.append(callback)  # type: ignore[attr-defined]

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the unlearned classifier (rank 0) and print the before/after table."""
        folder = self.out_dir if self.out_dir is not None else trainer.log_dir
        if self.export and folder is not None and getattr(pl_module, "model", None) is not None:
            from lightning_unlearn.models import export_classifier

            path = Path(folder) / CLASSIFIER_FILE
            if trainer.is_global_zero:
                os.makedirs(folder, exist_ok=True)
                export_classifier(pl_module.model, path)  # type: ignore[arg-type]
            self.classifier_path = path
        trainer.strategy.barrier()
        initial, final = collect_metrics(trainer.callbacks)  # type: ignore[attr-defined]
        self.check_damage(pl_module, initial, final)
        if not (self.print_table and trainer.is_global_zero):
            return
        console = Console()
        if initial or final:
            console.print(metrics_table(initial, final))
        if folder is not None:
            console.print(f"Logs, splits.json, checkpoints and {CLASSIFIER_FILE}: [bold]{folder}[/bold]")
            if trainer.logger is not None:
                console.print(f"Watch it in TensorBoard: [bold]tensorboard --logdir {os.path.dirname(folder)}[/bold]")

    def check_damage(self, pl_module: LightningModule, initial: dict[str, float], final: dict[str, float]) -> None:
        """Warn when the retain accuracy fell by more than ``max_retain_drop`` (the warning names the knob)."""
        before, after = initial.get(RETAIN_ACCURACY), final.get(RETAIN_ACCURACY)
        if self.max_retain_drop is None or before is None or after is None:
            return
        if before - after > self.max_retain_drop:
            text = (
                f"{type(pl_module).__name__}: {RETAIN_ACCURACY} fell from {before:.1%} to {after:.1%} (more than "
                f"max_retain_drop={self.max_retain_drop:g}); {tuning_hint(pl_module, 'damage')}"
            )
            self.warnings.append(text)
            rank_zero_warn(text)
