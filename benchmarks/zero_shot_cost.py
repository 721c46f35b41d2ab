"""Wall time of SSD, LFSSD and JiT against the retrain oracle on the embedded 5k MNIST digits (forget digit 0).

Run from the repository root::

    python benchmarks/zero_shot_cost.py

Each method runs through the command line with its shipped config and reports ``cost/unlearn_time_s`` (the
unlearning work only); the retrain oracle's time is the wall time of its ``fit`` (8 epochs from scratch on the
retain set, validation off). Prints forget / remaining-class test accuracy and the time ratio to retraining.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from lightning_unlearn.main import main

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run(config: str, *extra: str) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    cli = main(["fit", "--config", config, *QUIET, *extra])
    wall = time.perf_counter() - start
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    return wall, metrics


def main_benchmark() -> None:
    console = Console()
    retrain_wall, retrain = run("retrain/mnist5k_class0", "--trainer.limit_val_batches", "0")
    table = Table(title="Zero-shot and one-pass unlearning vs retraining (mnist5k, forget digit 0)")
    for column in ("method", "acc/forget %", "acc/test_retain %", "time s", "time / retrain"):
        table.add_column(column, justify="right" if column != "method" else "left")
    table.add_row("retrain oracle", "-", "-", f"{retrain_wall:.1f}", "1.000")
    for name in ("ssd", "lfssd", "jit"):
        _, metrics = run(f"mnist5k/class_removal/{name}")
        seconds = metrics["cost/unlearn_time_s"]
        table.add_row(
            name.upper(),
            f"{100 * metrics['acc/forget']:.1f}",
            f"{100 * metrics['acc/test_retain']:.1f}",
            f"{seconds:.1f}",
            f"{seconds / retrain_wall:.3f}",
        )
    console.print(table)


if __name__ == "__main__":
    main_benchmark()
