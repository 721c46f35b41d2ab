"""Command line: ``lightning-unlearn fit|validate|test --config ...`` (LightningCLI, subclass mode).

A method is any :class:`~lightning_unlearn.methods.UnlearningMethod` and a datamodule any ``LightningDataModule``;
both are chosen by ``class_path`` or by short class name (``--model SSD --data MNIST5kDataModule``), and
``lightning-unlearn fit --help`` lists them (``--model.help SSD`` prints one method's arguments). Config fragments
(method, data, trainer) compose with repeated ``--config``; a ``--config`` value may name a shipped config
(``quickstart``, ``mnist5k/class_removal/laf``; see :mod:`lightning_unlearn.presets`). TensorBoard is the default
logger and a rich progress bar the default progress bar; ``ForgettingMetrics``, ``UnlearningCost`` (with the time
ratio to a configured ``RetrainComparison``'s oracle when its run time is recorded) and
``ModelCheckpoint(save_last=True)`` are added when not configured. Checkpoints given as ``ckpt_path`` are loaded
with ``weights_only=True``.

At the end of ``fit`` a table summarises the metrics before and after unlearning, the unlearned classifier is
exported as ``<log_dir>/classifier.pt`` (a raw state dict that ``load_classifier`` reads) and the split indices
are in ``<log_dir>/splits.json``. ``validate`` and ``test`` print a table of the metrics by split (percentages).

A mistake in the input (a bad value, an unknown key, a missing or refused file) ends ``lightning-unlearn`` with a
short message and exit status 2; ``--debug`` (or ``LIGHTNING_UNLEARN_DEBUG=1``) shows the full traceback instead.
:func:`main`, for Python callers, raises the exceptions themselves.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse import ActionConfigFile
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from rich.console import Console
from rich.table import Table

import lightning_unlearn.methods  # noqa: F401  (every method is a known subclass: short names and --help)
from lightning_unlearn.callbacks import (
    ForgettingMetrics,
    RetrainComparison,
    StageProgressBar,
    UnlearningCost,
    UnlearningReport,
)
from lightning_unlearn.callbacks.cost import read_reference_time
from lightning_unlearn.callbacks.summary import PERCENT_PREFIXES
from lightning_unlearn.datamodules import UnlearningDataModule
from lightning_unlearn.errors import USER_ERRORS, load_error_reason, user_error_message
from lightning_unlearn.methods.base import UnlearningMethod
from lightning_unlearn.methods.budget import trainer_settings
from lightning_unlearn.presets import configs_command, resolve_config_args

__all__ = ["DEBUG_ENV", "DEFAULT_LOG_DIR", "SUBCOMMAND_DEFAULTS", "UnlearnArgumentParser", "UnlearnCLI", "main", "run"]

DEFAULT_LOG_DIR = "runs"

#: Environment variable that, set to a non-empty value other than ``0``, makes the command line show tracebacks.
DEBUG_ENV = "LIGHTNING_UNLEARN_DEBUG"

#: Defaults of the Trainer methods' own arguments, wherever a subcommand has them: checkpoints are loaded as plain
#: tensors and primitives only (no code runs on load), and Lightning's per-dataloader result tables are replaced by
#: the library's table by split.
SUBCOMMAND_DEFAULTS: dict[str, Any] = {"weights_only": True, "verbose": False}

#: ``ckpt_path`` values that Lightning resolves itself (not files).
_SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")


class UnlearnArgumentParser(LightningArgumentParser):
    """Argument parser of the command line: the Trainer methods' arguments get :data:`SUBCOMMAND_DEFAULTS`."""

    def add_method_arguments(
        self, class_type: type, method_name: str, nested_key: str | None = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        """As jsonargparse's, then set the library's defaults of the arguments that were added."""
        added: list[str] = super().add_method_arguments(class_type, method_name, nested_key, *args, **kwargs)
        prefix = f"{nested_key}." if nested_key else ""
        defaults = {prefix + name: value for name, value in SUBCOMMAND_DEFAULTS.items() if name in added}
        if defaults:
            self.set_defaults(defaults)
        return added


class UnlearnCLI(LightningCLI):
    """LightningCLI with the library's defaults (logger, progress bar, checkpoints, safe loading, the reports).

    Args:
        args: Arguments (list of strings or dict); ``None`` reads ``sys.argv``.
        run: Run the subcommand (``True``) or only instantiate the classes.
        kwargs: Further ``LightningCLI`` arguments (``trainer_defaults`` are merged over the library's).
    """

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        defaults: dict[str, Any] = {
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                # no placeholder hp_metric: the hparams tab shows the method's and the data's settings
                "init_args": {"save_dir": DEFAULT_LOG_DIR, "name": "unlearn", "default_hp_metric": False},
            },
        }
        defaults.update(kwargs.pop("trainer_defaults", {}))
        parser_kwargs = {"prog": "lightning-unlearn", **kwargs.pop("parser_kwargs", {})}
        super().__init__(
            model_class=UnlearningMethod,
            # Any LightningDataModule: the library's are known subclasses (short names work), a user's is accepted.
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            trainer_defaults=defaults,
            save_config_kwargs={"overwrite": True},
            parser_kwargs=parser_kwargs,
            args=args,
            run=run,
            **kwargs,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """The parser of the command line and of each subcommand (:class:`UnlearnArgumentParser`)."""
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={pl.__version__}"])
        parser = UnlearnArgumentParser(**kwargs)
        parser.add_argument(
            "-c", "--config", action=ActionConfigFile, help="Path to a configuration file in json or yaml format."
        )
        return parser

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check a given ``ckpt_path`` before Lightning reads its hyperparameters.

        Raises:
            FileNotFoundError: If ``ckpt_path`` names no file.
            ValueError: If the checkpoint is truncated or corrupt, or holds objects other than tensors and plain
                values (refused: loading it could run code).
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_checkpoint(self.config[subcommand].get("ckpt_path"))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with the library's default callbacks added where the configuration has none of the kind.

        For ``fit``, a method that declares its epoch budget (:meth:`UnlearningMethod.epoch_budget
        <lightning_unlearn.methods.base.UnlearningMethod.epoch_budget>`) gives the Trainer its ``max_epochs`` and,
        when its loaders change between epochs, ``reload_dataloaders_every_n_epochs=1``, unless the configuration
        sets them (a contradicting value is refused with ``ValueError``).
        """
        group = self.config_init.get(str(self.subcommand)) or self.config_init
        settings = {**(group.get("trainer") or {}), **kwargs}
        if self.subcommand in (None, "fit") and isinstance(self.model, UnlearningMethod):
            budget = trainer_settings(self.model, settings)
            kwargs.update(budget)
            settings.update(budget)
        given = settings.get("callbacks") or []
        given = [given] if isinstance(given, Callback) else list(given)
        added = _default_callbacks(settings, given, isinstance(self.datamodule, UnlearningDataModule))
        return super().instantiate_trainer(**{**kwargs, "callbacks": given + added})

    def after_validate(self) -> None:
        """Print the validation metrics by split."""
        self._print_results("Validation")

    def after_test(self) -> None:
        """Print the test metrics by split."""
        self._print_results("Test")

    def _print_results(self, what: str) -> None:
        if not self.trainer.is_global_zero:
            return
        metrics = {name: _as_float(value) for name, value in self.trainer.callback_metrics.items()}
        try:
            names = getattr(self.datamodule, "eval_split_names", None) or []
        except (RuntimeError, ValueError):  # not set up (no evaluation ran)
            names = []
        splits = [str(name) for name in (names() if callable(names) else names)]
        Console().print(*results_tables(metrics, splits, title=f"{what} results"))


def _default_callbacks(settings: Mapping[str, Any], configured: Sequence[Any], named_splits: bool) -> list[Callback]:
    """The callbacks the command line adds: those whose kind ``configured`` lacks, unless turned off.

    ``ForgettingMetrics`` is added only for datamodules with named evaluation splits (``named_splits``).
    """
    added: list[Callback] = []
    if settings.get("enable_progress_bar", True) is not False and not any(
        isinstance(c, ProgressBar) for c in configured
    ):
        added.append(StageProgressBar())
    if named_splits and not any(isinstance(c, ForgettingMetrics) for c in configured):
        added.append(ForgettingMetrics())
    if not any(isinstance(c, UnlearningCost) for c in configured):
        added.append(UnlearningCost(reference_time_s=_reference_time(configured)))
    if settings.get("enable_checkpointing", True) is not False and not any(
        isinstance(c, ModelCheckpoint) for c in configured
    ):
        added.append(ModelCheckpoint(save_last=True))
    if not any(isinstance(c, UnlearningReport) for c in configured):
        # the end-of-fit table and classifier.pt: the same callback a plain Trainer user adds
        added.append(UnlearningReport())
    return added


def _reference_time(callbacks: Sequence[Any]) -> float | None:
    """The recorded time of a configured RetrainComparison's oracle, if one was recorded."""
    for callback in callbacks:
        if isinstance(callback, RetrainComparison):
            try:
                return read_reference_time(callback.reference_ckpt)
            except (FileNotFoundError, ValueError):
                return None
    return None


def check_checkpoint(ckpt_path: str | os.PathLike[str] | None) -> None:
    """Check that a ``ckpt_path`` of ``fit``/``validate``/``test`` is a readable, safe checkpoint.

    ``None`` and the names Lightning resolves itself (``last``, ``best``, ``hpc``, ``registry...``) and remote URLs
    pass unchecked. A file is opened with ``torch.load(weights_only=True)`` (memory-mapped when it can be, so a
    large checkpoint is not read twice).

    Raises:
        FileNotFoundError: If the path names no file.
        ValueError: If the file is a folder, truncated or corrupt, or holds objects other than tensors and plain
            values.
    """
    if ckpt_path is None:
        return
    text = os.fspath(ckpt_path)
    if text.startswith(_SPECIAL_CKPT_PATHS) or "://" in text:
        return
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {text} does not exist (ckpt_path)")
    if path.is_dir():
        raise ValueError(f"cannot use checkpoint {text}: it is a folder, expected a checkpoint file (ckpt_path)")
    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip archive (legacy format) or truncated: read it without mmap
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refusals, truncated zip archives, unreadable files
        raise ValueError(
            f"cannot use checkpoint {text}: it is truncated or corrupt, or holds objects other than tensors and "
            f"plain values (refused: loading it could run code). Details: {type(error).__name__}: "
            f"{load_error_reason(error)}"
        ) from error


def results_tables(metrics: Mapping[str, float], splits: Sequence[str], *, title: str = "Results") -> list[Table]:
    """Tables of evaluation metrics: one row per split for ``<family>/<split>`` names, then every other metric.

    Args:
        metrics: Logged name to value (``trainer.callback_metrics`` as floats); a ``/dataloader_idx_N`` suffix
            is ignored.
        splits: The evaluation split names (``datamodule.eval_split_names``); when empty, the last part of
            ``acc/<split>`` names is taken as the split.
        title: Title of the table by split.

    Returns:
        The table by split (columns: the metric families, e.g. ``acc (%)``) when any metric is per split, and a
        ``metric | value`` table of the others; fractions (``acc/``, ``mia/``, ``gap/``) are shown as percentages.
    """
    clean = {re.sub(r"/dataloader_idx_\d+$", "", name): value for name, value in metrics.items()}
    known = list(splits) or [name.split("/", 1)[1] for name in clean if name.startswith("acc/") and "/" in name]
    by_split: dict[str, dict[str, float]] = {}
    families: list[str] = []
    others: dict[str, float] = {}
    for name, value in clean.items():
        family, _, split = name.rpartition("/")
        if family and split in known:
            by_split.setdefault(split, {})[family] = value
            if family not in families:
                families.append(family)
        else:
            others[name] = value
    tables: list[Table] = []
    if by_split:
        table = Table(title=f"{title} by split")
        table.add_column("split")
        for family in families:
            unit = " (%)" if f"{family}/".startswith(PERCENT_PREFIXES) else ""
            table.add_column(f"{family}{unit}", justify="right")
        for split in [s for s in known if s in by_split]:
            row = by_split[split]
            table.add_row(split, *(_format(row.get(f), f"{f}/") for f in families))
        tables.append(table)
    if others:
        table = Table(title=f"{title}: other metrics" if by_split else title)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in others.items():
            unit = " (%)" if name.startswith(PERCENT_PREFIXES) else ""
            table.add_row(f"{name}{unit}", _format(value, name))
        tables.append(table)
    return tables


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _format(value: float | None, name: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value * 100:.2f}" if name.startswith(PERCENT_PREFIXES) else f"{value:.4g}"


def main(args: Any = None, run: bool = True) -> UnlearnCLI:
    """Entry point of ``lightning-unlearn`` and ``python -m lightning_unlearn`` for Python callers.

    Errors are raised as they are (``ValueError`` for a bad setting, ``SystemExit`` from the argument parser);
    the console script :func:`run` turns them into short messages.

    Args:
        args: Arguments (list of strings or dict); ``None`` reads ``sys.argv``.
        run: Run the subcommand (``True``) or only instantiate the classes.

    Returns:
        The CLI object (``cli.trainer``, ``cli.model``, ``cli.datamodule``).
    """
    return _cli(args, run)


def _cli(args: Any, run: bool = True, **kwargs: Any) -> UnlearnCLI:
    if args is None:
        # Parsed from sys.argv itself (with shipped config names resolved), so that DDP's launcher starts the other
        # ranks with the same command line.
        sys.argv[1:] = resolve_config_args([str(a) for a in sys.argv[1:]])
        return UnlearnCLI(args=None, run=run, **kwargs)
    if isinstance(args, list | tuple):
        args = resolve_config_args([str(a) for a in args])
    return UnlearnCLI(args=args, run=run, **kwargs)


def run() -> None:
    """Console entry point ``lightning-unlearn``: runs :func:`main` and exits 0 on success.

    ``lightning-unlearn configs ...`` lists, prints and copies the shipped configs instead. A user error (see
    :func:`lightning_unlearn.errors.user_error_message`) prints a short message and exits with status 2;
    ``--debug`` anywhere on the command line, or ``LIGHTNING_UNLEARN_DEBUG=1``, shows the full traceback.
    """
    argv = sys.argv[1:]
    if argv[:1] == ["configs"]:
        sys.exit(configs_command(argv[1:]))
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    sys.argv[1:] = [a for a in argv if a != "--debug"]
    if debug:
        _cli(None)
        return
    try:
        _cli(None, parser_kwargs={"exit_on_error": False})
    except Exception as error:
        subcommand = next((a for a in sys.argv[1:] if a in ("fit", "validate", "test", "predict")), None)
        command = "lightning-unlearn" + (f" {subcommand}" if subcommand else "")
        message = user_error_message(error, command) if isinstance(error, USER_ERRORS) else None
        if message is None:
            raise
        sys.stderr.write(message + "\n")
        sys.exit(2)


if __name__ == "__main__":
    run()
