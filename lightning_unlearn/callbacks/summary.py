"""Before/after table of the metric callbacks' values, printed by the CLI at the end of fit."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from lightning.pytorch import Callback
from rich.table import Table

from lightning_unlearn.callbacks.base import SplitMetricsCallback
from lightning_unlearn.callbacks.cost import UnlearningCost

__all__ = ["PERCENT_PREFIXES", "collect_metrics", "metrics_table"]

PERCENT_PREFIXES: tuple[str, ...] = ("acc/", "mia/", "gap/")
"""Metric families that are fractions in [0, 1] and are shown multiplied by 100."""


def collect_metrics(callbacks: Iterable[Callback]) -> tuple[dict[str, float], dict[str, float]]:
    """Merge the initial and final values of every metric callback.

    Args:
        callbacks: E.g. ``trainer.callbacks``; :class:`SplitMetricsCallback` s give both, :class:`UnlearningCost`
            its last ``cost/*`` values (final only); other callbacks are ignored.

    Returns:
        ``(initial, final)`` dicts of logged name to value.
    """
    initial: dict[str, float] = {}
    final: dict[str, float] = {}
    for callback in callbacks:
        if isinstance(callback, SplitMetricsCallback):
            initial.update(callback.initial_metrics)
            final.update(callback.final_metrics)
        elif isinstance(callback, UnlearningCost):
            final.update(callback.last_values)
    return initial, final


def metrics_table(
    initial: Mapping[str, float],
    final: Mapping[str, float],
    *,
    title: str | None = "Forgetting metrics",
    percent: bool = True,
) -> Table:
    """A ``rich`` table of every metric before and after unlearning and the change.

    Args:
        initial: Values before unlearning (e.g. ``ForgettingMetrics.initial_metrics``).
        final: Values after unlearning.
        title: Table title.
        percent: Show fractions (names starting with ``acc/``, ``mia/``, ``gap/``) multiplied by 100; the change is
            then in percentage points.

    Returns:
        A table with columns ``metric``, ``before``, ``after``, ``change``; names in first-seen order; a missing
        value is shown as ``-``.
    """
    table = Table(title=title)
    table.add_column("metric")
    unit = " (%)" if percent else ""
    table.add_column(f"before{unit}", justify="right")
    table.add_column(f"after{unit}", justify="right")
    table.add_column("change", justify="right")
    for name in dict.fromkeys([*initial, *final]):
        scale = 100.0 if percent and name.startswith(PERCENT_PREFIXES) else 1.0
        before = initial.get(name)
        after = final.get(name)
        change = after - before if before is not None and after is not None else None
        table.add_row(
            name,
            _format(before, scale),
            _format(after, scale),
            _format(change, scale, signed=True),
        )
    return table


def _format(value: float | None, scale: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:+.2f}" if signed else f"{value * scale:.2f}"
