"""Command line: ``lightning-unlearn fit|validate|test --config ...`` (LightningCLI, subclass mode).

Any method, datamodule or callback is chosen by ``class_path``; config fragments (method, data, trainer) compose
with repeated ``--config``; a ``--config`` value may name a shipped config (``quickstart``,
``mnist5k/class_removal/laf``; see :mod:`lightning_unlearn.presets`). TensorBoard is the default logger and a
rich progress bar the default progress bar;
``ForgettingMetrics``, ``UnlearningCost`` (with the time ratio to a configured ``RetrainComparison``'s oracle when
its run time is recorded) and ``ModelCheckpoint(save_last=True)`` are added when not configured.
At the end of ``fit`` a table summarises the metrics before and after unlearning, the unlearned classifier is
exported as ``<log_dir>/classifier.pt`` (a raw state dict that ``load_classifier`` reads) and the split indices
are in ``<log_dir>/splits.json``.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_unlearn.callbacks import (
    ForgettingMetrics,
    RetrainComparison,
    SplitMetricsCallback,
    StageProgressBar,
    UnlearningCost,
    UnlearningReport,
)
from lightning_unlearn.callbacks.cost import read_reference_time
from lightning_unlearn.datamodules import UnlearningDataModule
from lightning_unlearn.presets import configs_command, resolve_config_args

DEFAULT_LOG_DIR = "runs"


class UnlearnCLI(LightningCLI):
    """LightningCLI with the library's defaults (logger, progress bar, checkpoints, safe loading, the report)."""

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        defaults: dict[str, Any] = {
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": DEFAULT_LOG_DIR, "name": "unlearn"},
            },
        }
        defaults.update(kwargs.pop("trainer_defaults", {}))
        super().__init__(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            trainer_defaults=defaults,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
            **kwargs,
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, {}):
            # Checkpoints are loaded as plain tensors and primitives only: no code runs on load.
            parser.set_defaults({"weights_only": True})
        return parser

    def _parse_ckpt_path(self) -> None:
        """Read the hyperparameters of a given ``ckpt_path`` (``weights_only``); a bad file is named in the error."""
        try:
            super()._parse_ckpt_path()
        except Exception as error:  # unpickling refusals, truncated zip archives, unreadable files
            subcommand = self.config.get("subcommand")
            path = self.config[subcommand].get("ckpt_path") if subcommand else None
            raise ValueError(
                f"cannot use checkpoint {path}: it is truncated or corrupt, or holds objects other than tensors and "
                f"plain values (refused: loading it could run code). Details: {type(error).__name__}: {error}"
            ) from error

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        callbacks = list(callbacks)
        configured = list(config.get("callbacks") or []) + callbacks
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks.append(StageProgressBar())
        if isinstance(self.datamodule, UnlearningDataModule) and not any(
            isinstance(c, SplitMetricsCallback) for c in configured
        ):
            callbacks.append(ForgettingMetrics())
        if not any(isinstance(c, UnlearningCost) for c in configured):
            callbacks.append(UnlearningCost(reference_time_s=_reference_time(configured)))
        if config.get("enable_checkpointing", True) is not False and not any(
            isinstance(c, ModelCheckpoint) for c in configured
        ):
            callbacks.append(ModelCheckpoint(save_last=True))
        if not any(isinstance(c, UnlearningReport) for c in configured):
            # the end-of-fit table and classifier.pt: the same callback a plain Trainer user adds
            callbacks.append(UnlearningReport())
        return super()._instantiate_trainer(config, callbacks)


def _reference_time(callbacks: list[Any]) -> float | None:
    """The recorded time of a configured RetrainComparison's oracle, if one was recorded."""
    for callback in callbacks:
        if isinstance(callback, RetrainComparison):
            try:
                return read_reference_time(callback.reference_ckpt)
            except (FileNotFoundError, ValueError):
                return None
    return None


def main(args: Any = None, run: bool = True) -> UnlearnCLI:
    """Entry point of ``lightning-unlearn`` and ``python -m lightning_unlearn``.

    Args:
        args: Arguments (list of strings or dict); ``None`` reads ``sys.argv``.
        run: Run the subcommand (``True``) or only instantiate the classes.

    Returns:
        The CLI object (``cli.trainer``, ``cli.model``, ``cli.datamodule``).
    """
    if args is None:
        args = sys.argv[1:]
    if isinstance(args, list | tuple):
        args = resolve_config_args([str(a) for a in args])
    return UnlearnCLI(args=args, run=run)


def run() -> None:
    """Console entry point ``lightning-unlearn``: runs :func:`main` and exits 0 on success (an error exits non-zero).

    ``lightning-unlearn configs ...`` lists, prints and copies the shipped configs instead.
    """
    if sys.argv[1:2] == ["configs"]:
        sys.exit(configs_command(sys.argv[2:]))
    main()


if __name__ == "__main__":
    run()
