"""What a run of the command line gives, for a plain ``Trainer``: metrics, cost, the table and ``classifier.pt``."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from rich.console import Console

from lightning_unlearn.callbacks.base import SplitMetricsCallback
from lightning_unlearn.callbacks.cost import UnlearningCost
from lightning_unlearn.callbacks.forgetting import ForgettingMetrics
from lightning_unlearn.callbacks.summary import collect_metrics, metrics_table

__all__ = ["CLASSIFIER_FILE", "UnlearningReport"]

#: File name of the exported unlearned classifier, in the run's log folder.
CLASSIFIER_FILE = "classifier.pt"


class UnlearningReport(Callback):
    """End-of-fit report of an unlearning run: the before/after table, ``cost/*`` and the unlearned classifier.

    Add it to a plain ``Trainer`` to get what ``lightning-unlearn fit`` gives (the command line adds it itself):

    - when the trainer has no metric callback and the datamodule names its evaluation splits (every library
      datamodule does), a :class:`ForgettingMetrics` is added (accuracy on every split,
      before and after unlearning); when it has no :class:`UnlearningCost`, one is added (``cost/*``);
    - at the end of ``fit``, the unlearned classifier (the method's ``model``) is saved as a raw state dict in
      ``<log_dir>/classifier.pt`` (``out_dir`` when given), which ``load_classifier`` reads; the original
      classifier's file is never written;
    - rank 0 prints a rich table of every metric before and after unlearning, and where the files are.

    The library's datamodules write ``splits.json`` (exactly what was forgotten) into the same folder.

    Args:
        out_dir: Folder of ``classifier.pt``; ``None``: the trainer's ``log_dir`` (nothing is saved when the
            trainer has neither a logger nor a ``default_root_dir``).
        print_table: Print the table (rank 0).
        export: Save ``classifier.pt``.
    """

    def __init__(self, out_dir: str | Path | None = None, print_table: bool = True, export: bool = True) -> None:
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
        if has_splits and not any(isinstance(c, SplitMetricsCallback) for c in configured):
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
        if not (self.print_table and trainer.is_global_zero):
            return
        initial, final = collect_metrics(trainer.callbacks)  # type: ignore[attr-defined]
        console = Console()
        if initial or final:
            console.print(metrics_table(initial, final))
        if folder is not None:
            console.print(f"Logs, splits.json, checkpoints and {CLASSIFIER_FILE}: [bold]{folder}[/bold]")
            if trainer.logger is not None:
                console.print(f"Watch it in TensorBoard: [bold]tensorboard --logdir {os.path.dirname(folder)}[/bold]")
