"""Finetuning throughput of the library against a plain PyTorch loop, and the per-epoch cost of the metric callbacks.

Run from the repository root::

    python benchmarks/throughput.py [--epochs 3] [--repeats 3] [--batch-size 128] [--threads N] [--json out.json]
        [--check] [--clock wall|cpu] [--limit-batches N] [--init pretrained|random]

What is compared (issue #9). Every run starts from the same original classifier (``pretrained_classifier("mnist5k")``,
``laf_cnn``; ``--init random`` uses a seeded fresh one instead) and finetunes it on the retain set of the embedded 5k
MNIST digits (``RandomRemoval(0.1)``, seed 0: 3,600 images) with ``Finetune``'s optimiser (SGD lr 1e-3, momentum 0.9,
Nesterov, weight decay 5e-4; config ``mnist5k/random_10pct/finetune``), for the same number of epochs and the
same batch size:

- **plain**: a hand-written PyTorch loop (``model.train()``, forward, cross-entropy, backward, step) over a
  ``DataLoader(TensorDataset(x, y))``. ``x`` and ``y`` are the retain split pre-materialised as tensors *from the
  datamodule's own retain dataset* (the same float32 pixels the library sees), and the loader uses the datamodule's
  retain sampler (same seed, ``set_epoch`` per epoch), so both runs see exactly the same batches in the same order.
  This is the idiomatic fast plain loop, so the ratio charges the library for everything it adds on top of it: its
  data pipeline (``SplitDataset`` + ``CombinedLoader`` dict batches) as well as Lightning's per-step machinery. The
  final weights of both runs are compared (``max_param_diff``) to show they did the same finetuning.
- **library**: ``Finetune`` with the ``MNIST5kDataModule`` under ``lightning.Trainer(accelerator="cpu", devices=1,
  logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
  limit_val_batches=0)``: the library as a user runs it.
- **library + validation**: the same with Lightning's validation loop over the evaluation splits every epoch
  (``limit_val_batches=1.0``, ``check_val_every_n_epoch=1``, no sanity check), the ``Trainer``'s default for a
  datamodule that has ``val_dataloader``: the forward passes over all 5,000 evaluation images (forget, retain,
  test) that every evaluation, with or without callbacks, costs.
- **library + callbacks**: that, plus ``ForgettingMetrics``, ``MembershipInference`` (default attack) and
  ``UnlearningCost``.

What the callbacks add per epoch is ``(library + callbacks) - (library + validation)``: their metric updates,
gathering, attack fitting and logging. The two ran back to back in each repeat, so the median of the per-repeat
differences is taken (steadier than a difference of medians). It is reported as a fraction of the
*training-only* library epoch (the stricter denominator) and checked against the target. As a cross-check the
time spent inside the callbacks' own hooks is clocked directly (all hooks but the one-off evaluation before
unlearning). The evaluation forward passes are reported beside it, as a
fraction of the same epoch, with the smallest ``N`` for which evaluating every ``N`` epochs
(``trainer.check_val_every_n_epoch`` and the callbacks' ``every_n_epochs``) keeps evaluation *and* callbacks
together within the target. The passes are compute: on this network a forward pass over 5,000 images costs about
70 % of a training epoch over 3,600, whatever the library does.

Timing. Only training epochs are timed; setup (data loading, ``Trainer`` construction, optimiser set-up, the
callbacks' one-off evaluation before unlearning, reported separately as ``initial_eval_s``) is not. A library epoch
spans from one ``on_train_epoch_start`` to the next (the last one ends at ``on_train_end``), so it includes
the loader set-up, every batch, the in-epoch validation and the epoch-end logging; a plain epoch spans the loader
set-up and every batch. An untimed warm-up (``--warmup-epochs``) of each variant runs first; then the variants run
interleaved (plain, library, library + validation, library + callbacks, then the same order rotated by one, ...)
``--repeats`` times to spread the drift of a shared machine evenly, and the median over repeats is reported.
``torch.set_num_threads`` is the same for all (``--threads``, default: PyTorch's current setting; it also caps the
BLAS / OpenMP pools of NumPy, SciPy and scikit-learn through ``threadpoolctl``) and is checked inside the Lightning
runs. On a busy shared machine wall times swing by 2x or more between repeats;
``--threads 1 --clock cpu`` (process CPU time, which ignores time spent descheduled) gives steadier ratios.

Throughput is training images per second over the timed epochs; the library / plain ratio is the median of the
per-repeat ratios. Targets: library >= 0.9x plain; the callbacks
add <= 10 % per epoch. The exit code is 0 (it is a measurement) unless ``--check`` is given, in which case it is 1
when a target is missed. The package is imported from this checkout, not from an installed copy. ``--limit-batches N``
makes a quick smoke run: N training batches per epoch, and every evaluation split (also the callbacks' pass before
unlearning) cut to its first N x batch-size images.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.utilities import CombinedLoader
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

# Measure this checkout's code, also when a (possibly stale) non-editable install is on the path.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightning_unlearn.callbacks import ForgettingMetrics, MembershipInference, UnlearningCost  # noqa: E402
from lightning_unlearn.datamodules import MNIST5kDataModule, RandomRemoval, SplitDataset  # noqa: E402
from lightning_unlearn.methods import Finetune  # noqa: E402
from lightning_unlearn.models import load_classifier  # noqa: E402

#: Finetune's defaults (and the shipped mnist5k/random_10pct/finetune config).
LR, MOMENTUM, WEIGHT_DECAY, NESTEROV = 1e-3, 0.9, 5e-4, True
THROUGHPUT_TARGET = 0.9
CALLBACK_TARGET = 0.10
#: Repeats of one variant differing by more than this factor get a warning under the table.
NOISY_SPREAD = 1.25
#: ``--clock``: wall time, or this process's CPU time (all threads).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
VARIANTS = ("plain", "library", "library_val", "library_callbacks")
LABELS = {
    "plain": "plain PyTorch loop",
    "library": "library (Finetune + Trainer)",
    "library_val": "library + validation loop every epoch",
    "library_callbacks": "library + metric callbacks",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed training epochs per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is reported")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: current)")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="untimed warm-up epochs of each variant (0: none)")
    parser.add_argument(
        "--limit-batches", type=int, default=None, help="smoke run: N training batches, N x batch-size eval images"
    )
    parser.add_argument("--init", choices=("pretrained", "random"), default="pretrained", help="starting classifier")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: time.perf_counter; cpu: process CPU time (steadier on a busy machine, best with --threads 1)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    args = parser.parse_args(argv)
    for name in ("epochs", "repeats", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.limit_batches is not None and args.limit_batches < 1:
        parser.error("--limit-batches must be >= 1")
    if args.warmup_epochs < 0:
        parser.error("--warmup-epochs must be >= 0")
    return args


# ---------------------------------------------------------------------------------------------------------- set-up
def original_classifier(init: str, seed: int) -> nn.Module:
    if init == "pretrained":
        from lightning_unlearn.pretrained import pretrained_classifier

        return pretrained_classifier("mnist5k", progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load_classifier("laf_cnn", 10, in_channels=1, input_size=(28, 28))


class _CutEvalMNIST5k(MNIST5kDataModule):
    """``--limit-batches`` only: evaluation loaders over the first ``eval_size`` images of each split."""

    def __init__(self, eval_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eval_size = eval_size

    def val_dataloader(self) -> dict[str, DataLoader]:
        return {
            name: DataLoader(Subset(dataset, range(min(len(dataset), self.eval_size))), loader.batch_size)
            for name, loader in super().val_dataloader().items()
            for dataset in [cast(SplitDataset, loader.dataset)]
        }


def make_datamodule(args: argparse.Namespace) -> MNIST5kDataModule:
    options: dict[str, Any] = dict(scenario=RandomRemoval(0.1), seed=args.seed, batch_size=args.batch_size)
    if args.limit_batches is None:
        datamodule = MNIST5kDataModule(**options)
    else:
        datamodule = _CutEvalMNIST5k(args.limit_batches * args.batch_size, **options)
    datamodule.setup("fit")
    return datamodule


def retain_tensors(datamodule: MNIST5kDataModule, original: nn.Module, epochs: int) -> tuple[Any, Any, Any]:
    """The retain split as float32 tensors plus the datamodule's own retain sampler (as ``Finetune`` installs it)."""
    datamodule.set_train_plan(Finetune(copy.deepcopy(original)).train_plan(epochs))
    combined = datamodule.train_dataloader()
    if not isinstance(combined, CombinedLoader):
        raise RuntimeError(f"expected a CombinedLoader for unlearning, got {type(combined).__name__}")
    loader = combined.iterables["retain"]
    dataset = loader.dataset
    items = dataset.__getitems__(list(range(len(dataset))))
    if len(items[0]) != 2:
        raise RuntimeError(f"expected (x, y) retain elements, got {len(items[0])} fields")
    x = torch.stack([item[0] for item in items])
    y = torch.stack([item[1] for item in items])
    return x, y, loader.sampler


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV and MOMENTUM > 0
    )


# ---------------------------------------------------------------------------------------------------------- plain
def run_plain(
    original: nn.Module, x: torch.Tensor, y: torch.Tensor, sampler: Any, epochs: int, args: argparse.Namespace
) -> dict[str, Any]:
    now = CLOCKS[args.clock]
    model = copy.deepcopy(original)
    model.train()
    optimizer = sgd(model)
    dataset = TensorDataset(x, y)
    sampler = copy.copy(sampler)
    epoch_s: list[float] = []
    images = 0
    for epoch in range(epochs):
        start = now()
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)
        for batch_idx, (xb, yb) in enumerate(loader):
            if args.limit_batches is not None and batch_idx >= args.limit_batches:
                break
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            images += len(xb)
        epoch_s.append(now() - start)
    return {"epoch_s": epoch_s, "images": images, "model": model, "initial_eval_s": 0.0, "hook_s": 0.0}


# ---------------------------------------------------------------------------------------------------------- library
class _Stamps:
    """Shared time stamps of one fit, written by the first and the last callback of the trainer."""

    def __init__(self, now: Any) -> None:
        self.now = now
        self.train_start = 0.0
        self.epoch_starts: list[float] = []
        self.train_end = 0.0
        self.images = 0
        self.threads: list[int] = []


class _FirstStamp(Callback):
    """First callback: marks ``on_train_start`` (before the metric callbacks' initial evaluation) and epoch starts."""

    def __init__(self, stamps: _Stamps) -> None:
        self.stamps = stamps

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        self.stamps.train_start = self.stamps.now()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        self.stamps.epoch_starts.append(self.stamps.now())
        self.stamps.threads.append(torch.get_num_threads())

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.stamps.images += len(batch["retain"][0])


class _LastStamp(Callback):
    """Last callback: marks the end of the fit's training (after every other ``on_train_end``)."""

    def __init__(self, stamps: _Stamps) -> None:
        self.stamps = stamps

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        self.stamps.train_end = self.stamps.now()


class _HookClock:
    """Time spent inside the metric callbacks' own hooks (not the validation forward passes they consume)."""

    def __init__(self, now: Any) -> None:
        self.now = now
        self.seconds = 0.0

    def instrument(self, callback: Callback) -> Callback:
        """Wrap every hook ``callback`` overrides, except the one-off evaluation before unlearning."""
        for name in dir(Callback):
            if not name.startswith("on_") or name == "on_train_start":
                continue
            if getattr(type(callback), name) is getattr(Callback, name):
                continue
            setattr(callback, name, self._timed(getattr(callback, name)))
        return callback

    def _timed(self, hook: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = self.now()
            try:
                return hook(*args, **kwargs)
            finally:
                self.seconds += self.now() - start

        return timed


def run_library(
    original: nn.Module,
    datamodule: MNIST5kDataModule,
    epochs: int,
    args: argparse.Namespace,
    *,
    validate: bool,
    callbacks: bool,
    root: str,
) -> dict[str, Any]:
    model = copy.deepcopy(original)
    method = Finetune(model, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=NESTEROV)
    stamps = _Stamps(CLOCKS[args.clock])
    hooks = _HookClock(stamps.now)
    metric_callbacks: list[Callback] = (
        [hooks.instrument(cb) for cb in (ForgettingMetrics(), MembershipInference(), UnlearningCost())]
        if callbacks
        else []
    )
    limit = args.limit_batches
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=limit if limit is not None else 1.0,
        limit_val_batches=1.0 if validate else 0,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,
        default_root_dir=root,  # UnlearningCost writes cost.json to the log dir
        callbacks=[_FirstStamp(stamps), *metric_callbacks, _LastStamp(stamps)],
    )
    trainer.fit(method, datamodule=datamodule)
    bounds = [*stamps.epoch_starts, stamps.train_end]
    epoch_s = [end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    threads = set(stamps.threads)
    if threads != {torch.get_num_threads()}:
        raise RuntimeError(f"Lightning changed the thread count: {threads} != {torch.get_num_threads()}")
    initial_eval_s = stamps.epoch_starts[0] - stamps.train_start if stamps.epoch_starts else 0.0
    return {
        "epoch_s": epoch_s,
        "images": stamps.images,
        "model": method.model,
        "initial_eval_s": initial_eval_s,
        "hook_s": hooks.seconds / max(1, len(epoch_s)),
    }


# ---------------------------------------------------------------------------------------------------------- driver
def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*The number of training batches .* is smaller than the logging.*")


@torch.no_grad()
def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def measure(args: argparse.Namespace) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Warm up, then run every variant ``args.repeats`` times, interleaved; returns the runs and the retain size."""
    original = original_classifier(args.init, args.seed)
    datamodule = make_datamodule(args)
    x, y, sampler = retain_tensors(datamodule, original, args.epochs)
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="throughput_") as root:

        def run(variant: str, epochs: int) -> dict[str, Any]:
            if variant == "plain":
                return run_plain(original, x, y, sampler, epochs, args)
            validate = variant in ("library_val", "library_callbacks")
            callbacks = variant == "library_callbacks"
            return run_library(original, datamodule, epochs, args, validate=validate, callbacks=callbacks, root=root)

        if args.warmup_epochs:
            for variant in VARIANTS:
                run(variant, args.warmup_epochs)
        for repeat in range(args.repeats):
            # rotate the order too, so that no variant always runs right after the same other one
            shift = repeat % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                runs[variant].append(run(variant, args.epochs))
    return runs, int(x.shape[0])


def summarise(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, retain_size: int) -> dict[str, Any]:
    for variant in VARIANTS:
        for r in runs[variant]:
            r["train_s"] = sum(r["epoch_s"])
            r["mean_epoch_s"] = r["train_s"] / len(r["epoch_s"])
            r["images_per_s"] = r["images"] / r["train_s"]
    images = {variant: runs[variant][0]["images"] for variant in VARIANTS}
    if len(set(images.values())) != 1:
        raise RuntimeError(f"the variants trained on different numbers of images: {images}")

    def median_of(variant: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[variant]))

    plain_ips = median_of("plain", "images_per_s")
    library_ips = median_of("library", "images_per_s")
    epoch = {variant: median_of(variant, "mean_epoch_s") for variant in VARIANTS}
    # the median of per-repeat ratios: the variants of one repeat ran within seconds of each other
    ratio = float(
        statistics.median(
            lib["images_per_s"] / plain["images_per_s"]
            for lib, plain in zip(runs["library"], runs["plain"], strict=True)
        )
    )

    def paired(variant: str, baseline: str) -> float:
        """Median over repeats of the difference of mean epoch times within one repeat (they ran back to back)."""
        return float(
            statistics.median(
                a["mean_epoch_s"] - b["mean_epoch_s"] for a, b in zip(runs[variant], runs[baseline], strict=True)
            )
        )

    overhead_s = paired("library_callbacks", "library_val")
    overhead = overhead_s / epoch["library"]
    evaluation_s = paired("library_val", "library")
    # evaluating every N epochs spreads one evaluation (and the callbacks' work) over N training epochs
    whole_s = max(0.0, evaluation_s) + max(0.0, overhead_s)
    every_n = max(1, math.ceil(whole_s / (CALLBACK_TARGET * epoch["library"])))
    results: dict[str, Any] = {
        "config": {
            "epochs": args.epochs,
            "repeats": args.repeats,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "clock": args.clock,
            "warmup_epochs": args.warmup_epochs,
            "limit_batches": args.limit_batches,
            "init": args.init,
            "seed": args.seed,
            "retain_size": retain_size,
            "images_per_epoch": images["plain"] // args.epochs,
            "torch": torch.__version__,
        },
        "plain_images_per_s": plain_ips,
        "library_images_per_s": library_ips,
        "throughput_ratio": ratio,
        "throughput_target": THROUGHPUT_TARGET,
        "throughput_pass": ratio >= THROUGHPUT_TARGET,
        "epoch_s": epoch,
        "callback_overhead_s": overhead_s,
        "callback_overhead_ratio": overhead,
        "callback_target": CALLBACK_TARGET,
        "callback_pass": overhead <= CALLBACK_TARGET,
        "callback_hook_s": median_of("library_callbacks", "hook_s"),
        "evaluation_s": evaluation_s,
        "evaluation_ratio": evaluation_s / epoch["library"],
        "evaluation_every_n_for_target": every_n,
        "initial_eval_s": median_of("library_callbacks", "initial_eval_s"),
        "max_param_diff": max_param_diff(runs["plain"][-1]["model"], runs["library"][-1]["model"]),
        "per_repeat": {
            variant: [
                {"epoch_s": r["epoch_s"], "images_per_s": r["images_per_s"], "initial_eval_s": r["initial_eval_s"]}
                for r in runs[variant]
            ]
            for variant in VARIANTS
        },
    }
    # max / min of the repeats' mean epoch time per variant: near 1 on a quiet machine
    results["spread"] = {
        variant: max(r["mean_epoch_s"] for r in runs[variant]) / min(r["mean_epoch_s"] for r in runs[variant])
        for variant in VARIANTS
    }
    results["passed"] = results["throughput_pass"] and results["callback_pass"]
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table (unless ``--quiet``), write ``--json``; return the numbers."""
    args = parse_args(argv)
    threads_before = torch.get_num_threads()
    levels = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "lightning.fabric")}
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            _quiet_lightning()
            if args.threads is not None:
                torch.set_num_threads(args.threads)
                # the same budget for the BLAS / OpenMP pools of NumPy, SciPy and scikit-learn (the attack's fit):
                # their idle threads otherwise spin on the cores the training uses
                stack.enter_context(threadpool_limits(limits=args.threads))
            runs, retain_size = measure(args)
            results = summarise(runs, args, retain_size)
    finally:
        torch.set_num_threads(threads_before)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    if not args.quiet:
        print_table(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return results


def print_table(results: dict[str, Any]) -> None:
    config = results["config"]
    verdict = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]"}
    title = (
        f"Finetune throughput, mnist5k retain set ({config['images_per_epoch']} img/epoch, "
        f"batch {config['batch_size']}, {config['epochs']} epochs x {config['repeats']} repeats, "
        f"{config['threads']} threads, {config['clock']} clock, median)"
    )
    table = Table(title=title)
    for column in ("measure", "value", "target", "result"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    epoch = results["epoch_s"]
    table.add_row("plain PyTorch loop, img/s", f"{results['plain_images_per_s']:.0f}", "", "")
    table.add_row("library (Finetune + Trainer), img/s", f"{results['library_images_per_s']:.0f}", "", "")
    table.add_row(
        "library / plain throughput",
        f"{results['throughput_ratio']:.3f}",
        f">= {results['throughput_target']:.2f}",
        verdict[results["throughput_pass"]],
    )
    for variant in VARIANTS:
        table.add_row(f"epoch s: {LABELS[variant]}", f"{epoch[variant]:.3f}", "", "")
    table.add_row("metric callbacks: extra s per epoch", f"{results['callback_overhead_s']:.3f}", "", "")
    table.add_row(
        "metric callbacks: extra per epoch %",
        f"{100 * results['callback_overhead_ratio']:.1f}",
        f"<= {100 * results['callback_target']:.0f}",
        verdict[results["callback_pass"]],
    )
    table.add_row("  time inside the callbacks' hooks, s per epoch", f"{results['callback_hook_s']:.3f}", "", "")
    table.add_row("evaluation forward passes: s per evaluation", f"{results['evaluation_s']:.3f}", "", "")
    table.add_row(
        "evaluation forward passes: % of an epoch, every epoch", f"{100 * results['evaluation_ratio']:.1f}", "", ""
    )
    table.add_row(
        f"evaluate every N epochs for <= {100 * results['callback_target']:.0f} % in all",
        f"N = {results['evaluation_every_n_for_target']}",
        "",
        "",
    )
    table.add_row("one-off evaluation before unlearning, s", f"{results['initial_eval_s']:.3f}", "", "")
    table.add_row("max |w_plain - w_library| after finetuning", f"{results['max_param_diff']:.2e}", "", "")
    console = Console()
    console.print(table)
    spread = max(results["spread"].values())
    if spread > NOISY_SPREAD:
        console.print(
            f"[yellow]Noisy: repeats of one variant differ by up to {spread:.1f}x; the machine is busy. "
            "Try --threads 1 --clock cpu, or more --repeats.[/yellow]"
        )


def cli(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = main(argv)
    return 1 if args.check and not results["passed"] else 0


if __name__ == "__main__":
    sys.exit(cli())
