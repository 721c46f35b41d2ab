"""Argument checks shared by every layer of the package (datamodules, models, methods, metrics, callbacks, tools).

Each check raises ``ValueError`` (or ``TypeError`` for a value that is not a number at all) with a message that
names the argument and the values it accepts, so a wrong YAML setting is reported in the user's terms. The module
imports neither Lightning nor torch, so the lowest layers can use it.

``bool`` is a subclass of ``int`` in Python; the integer checks refuse it (``True`` is never a meaningful count or
seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeGuard

__all__ = [
    "check_choice",
    "check_fraction",
    "check_integer",
    "check_integers",
    "check_positive",
    "check_sgd",
    "is_integer",
    "is_number",
]


def _numpy_types(kind: str) -> tuple[type, ...]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch
        return ()
    return (np.integer,) if kind == "integer" else (np.integer, np.floating)


def is_integer(value: Any, *, numpy: bool = False) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` (numpy integers too with ``numpy``), never a ``bool``.

    For type checkers a ``True`` result narrows ``value`` to ``int`` (numpy integers behave as one).
    """
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (numpy and isinstance(value, _numpy_types("integer")))


def is_number(value: Any, *, numpy: bool = False) -> TypeGuard[float]:
    """Whether ``value`` is an ``int`` or ``float`` (numpy scalars too with ``numpy``), never a ``bool``.

    For type checkers a ``True`` result narrows ``value`` to ``float``.
    """
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or (numpy and isinstance(value, _numpy_types("number")))


def check_integer(name: str, value: Any, minimum: int = 0, *, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool) ``>= minimum``, or ``None`` if ``optional``.

    Args:
        name: Argument name used in the message.
        value: The value to check.
        minimum: Smallest accepted value.
        optional: Also accept ``None``.

    Raises:
        ValueError: ``"<name> must be an integer >= <minimum>[ or None], got <value>"``.
    """
    if optional and value is None:
        return
    if not is_integer(value) or value < minimum:
        suffix = " or None" if optional else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{suffix}, got {value!r}")


def check_integers(name: str, values: Any, minimum: int = 0) -> tuple[int, ...]:
    """Check that ``values`` is a sequence of integers (not bools) ``>= minimum``; return it as a tuple.

    Args:
        name: Argument name used in the message.
        values: The sequence to check (a string is refused).
        minimum: Smallest accepted element.

    Raises:
        ValueError: ``"<name> must hold integers >= <minimum>, got <values>"``.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must hold integers >= {minimum}, got {values!r}")
    if not all(is_integer(v) and v >= minimum for v in values):
        raise ValueError(f"{name} must hold integers >= {minimum}, got {values!r}")
    return tuple(values)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite number > 0 (or >= 0 with ``allow_zero``).

    Args:
        name: Argument name used in the message.
        value: The value to check.
        allow_zero: Also accept 0.

    Raises:
        ValueError: ``"<name> must be a finite number > 0, got <value>"`` (``>= 0`` with ``allow_zero``).
        TypeError: ``value`` is not a real number.
    """
    bound = ">= 0" if allow_zero else "> 0"
    try:
        finite = math.isfinite(value)
    except TypeError:
        raise TypeError(f"{name} must be a finite number {bound}, got {value!r}") from None
    if not (finite and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_sgd(momentum: float, weight_decay: float, **lrs: float) -> None:
    """Check SGD settings: every learning rate (given by name) > 0, momentum in [0, 1), weight decay >= 0.

    Raises:
        ValueError: Naming the first setting out of range.
    """
    for name, lr in lrs.items():
        check_positive(name, lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming the allowed values unless ``value`` is one of them.

    Raises:
        ValueError: ``"<name> must be one of (<allowed>), got <value>"``.
    """
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def check_fraction(
    name: str,
    value: Any,
    *,
    include_low: bool = False,
    include_high: bool = True,
    what: str | None = "a number",
    numpy: bool = False,
) -> float:
    """Check that ``value`` is a number (not a bool) in the unit interval; return it as a float.

    The default interval is ``(0, 1]`` (a fraction of a set); ``include_low=True`` gives ``[0, 1]`` (a
    probability or an accuracy), ``include_high=False`` an interval open at 1.

    Args:
        name: Argument name used in the message.
        value: The value to check.
        include_low: Accept 0.
        include_high: Accept 1.
        what: How the message describes the value (``"<name> must be <what> in (0, 1]"``); ``None`` drops it.
        numpy: Also accept numpy scalars.

    Raises:
        ValueError: ``"<name> must be <what> in <interval>, got <value>"``.
    """
    interval = ("[" if include_low else "(") + "0, 1" + ("]" if include_high else ")")
    ok = is_number(value, numpy=numpy)
    if ok:
        x = float(value)
        ok = (0 <= x if include_low else 0 < x) and (x <= 1 if include_high else x < 1)
    if not ok:
        described = f"{what} in" if what else "in"
        raise ValueError(f"{name} must be {described} {interval}, got {value!r}")
    return float(value)
