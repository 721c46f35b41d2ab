"""Rich progress bar that also shows the running stage of multi-stage methods."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar


class StageProgressBar(RichProgressBar):
    """:class:`~lightning.pytorch.callbacks.RichProgressBar` showing ``stage`` for methods that have stages.

    Any LightningModule with a ``stage_name`` attribute (the multi-stage method base) gets its current stage
    name displayed beside the progress metrics; other modules show the usual metrics.
    """

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Progress-bar metrics plus the current stage name."""
        metrics = super().get_metrics(trainer, pl_module)
        if trainer.training:
            try:
                stage = getattr(pl_module, "stage_name", None)
            except (IndexError, ValueError, RuntimeError):
                stage = None
            if isinstance(stage, str):
                metrics = {"stage": stage, **metrics}
        return metrics
