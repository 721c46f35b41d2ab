"""The fixed random-label table shared by the random-label methods (RandomLabel, SalUn, the Precision poisons).

A random-label method draws one integer per forget sample, once, from the method's seeded generator, and keeps
the table as a buffer (identical on every rank, fixed across epochs, restored on resume). The table holds either
offsets added to the true label (``(y + offset) % num_classes``: with ``exclude_true`` always a wrong label) or,
read directly, labels uniform over all classes. :func:`draw_wrong_labels` is the per-batch variant L2UL uses: a
wrong label drawn directly, without a table.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["draw_label_offsets", "draw_wrong_labels"]


def draw_label_offsets(size: int, num_classes: int, generator: torch.Generator, *, exclude_true: bool = True) -> Tensor:
    """Per-sample draws of a fixed random-label table, one ``torch.randint`` from ``generator``.

    With ``exclude_true`` the draws are uniform over ``1 .. num_classes - 1``: as offsets, ``(y + offset) %
    num_classes`` is a wrong label, always. Otherwise they are uniform over ``0 .. num_classes - 1``: as offsets
    the true label is kept with p = 1/C; read directly they are labels uniform over all classes.

    Args:
        size: Number of forget samples.
        num_classes: Number of classes ``C``.
        generator: The method's seeded generator (advanced by the draw).
        exclude_true: Draw offsets in ``[1, C)`` instead of ``[0, C)``.

    Returns:
        A LongTensor of ``size`` draws (on the CPU).
    """
    return torch.randint(1 if exclude_true else 0, num_classes, (size,), generator=generator)


def draw_wrong_labels(y: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """One wrong label per element of ``y``, uniform over the other classes, drawn directly (no table).

    Draws ``t`` uniform over ``0 .. num_classes - 2`` and skips the true label (``t + (t >= y)``). The labels follow
    the same distribution as ``(y + offset) % num_classes`` with :func:`draw_label_offsets`, but not the same values.

    Args:
        y: True labels (any device).
        num_classes: Number of classes ``C`` (>= 2).
        generator: A seeded CPU generator (advanced by the draw).

    Returns:
        A LongTensor of labels on ``y``'s device.
    """
    t = torch.randint(0, num_classes - 1, y.shape, generator=generator)
    return (t + (t >= y.cpu()).long()).to(y.device)
