"""A quiet CPU ``Trainer`` for tests: no logger, checkpoints, progress bar or model summary."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer


def quiet_trainer(tmp_path: Any, **overrides: Any) -> Trainer:
    """One-epoch CPU trainer writing only under ``tmp_path``; ``overrides`` replace any option."""
    options: dict[str, Any] = dict(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    options.update(overrides)
    return Trainer(**options)
