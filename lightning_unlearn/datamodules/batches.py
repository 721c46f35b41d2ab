"""Named elements and batches: what one sample (and, once collated, one batch) of a split carries.

Every dataset of the library yields one of three named tuples, chosen by whether the phase asks for labels
(``labelled``) and for each sample's position in its split (``with_index``):

============================  ===========================  ===================================
labelled                      with_index                   element
============================  ===========================  ===================================
yes                           yes                          :class:`LabelledBatch` ``(input, target, index)``
yes                           no                           :class:`LabelledPair` ``(input, target)``
no                            yes                          :class:`UnlabelledBatch` ``(input, index)``
no                            no                           the input tensor itself
============================  ===========================  ===================================

Evaluation loaders always yield :class:`LabelledBatch`. ``torch.utils.data.default_collate`` keeps the type of a
named tuple, and Lightning moves named tuples between devices as they are, so a collated batch has the same type as
its elements. A named tuple is a tuple: ``x, y, index = batch`` and ``batch[0]`` keep working. (The ``index`` field
hides the method ``tuple.index``, which no batch needs.)

Batches of a user's own datamodule may be plain tuples or lists; :func:`unpack_batch` reads them positionally as
``(x,)``, ``(x, y)`` or ``(x, y, index)``. A label-free batch with indices must be an :class:`UnlabelledBatch`: a
plain pair is always ``(x, y)``, never guessed to be ``(x, index)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import Tensor

__all__ = ["Batch", "LabelledBatch", "LabelledPair", "UnlabelledBatch", "unpack_batch"]


class LabelledBatch(NamedTuple):
    """A labelled element (or batch) with each sample's position in its split.

    Attributes:
        input: Pixels, ``C x H x W`` (``N x C x H x W`` once collated), float32 in ``[0, 1]``.
        target: Class id (int64; ``N`` once collated).
        index: Position of the sample in its split (int64; ``N`` once collated).
    """

    input: Tensor
    target: Tensor
    index: Tensor  # type: ignore[assignment]  # the field shadows tuple.index, on purpose


class LabelledPair(NamedTuple):
    """A labelled element (or batch) without indices.

    Attributes:
        input: Pixels, ``C x H x W`` (``N x C x H x W`` once collated), float32 in ``[0, 1]``.
        target: Class id (int64; ``N`` once collated).
    """

    input: Tensor
    target: Tensor


class UnlabelledBatch(NamedTuple):
    """A label-free element (or batch) with each sample's position in its split.

    Attributes:
        input: Pixels, ``C x H x W`` (``N x C x H x W`` once collated), float32 in ``[0, 1]``.
        index: Position of the sample in its split (int64; ``N`` once collated).
    """

    input: Tensor
    index: Tensor  # type: ignore[assignment]  # the field shadows tuple.index, on purpose


#: Any element or batch a library dataset yields (a bare tensor: label-free, without indices).
Batch = LabelledBatch | LabelledPair | UnlabelledBatch | Tensor


def unpack_batch(batch: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Read one element or batch as ``(x, y, index)``; the parts it does not carry are ``None``.

    The library's named types are read by field name. Other batches (a user's own datamodule) follow the positional
    convention: a tensor is ``x``; a tuple or list is ``(x,)``, ``(x, y)`` or ``(x, y, index)``. A plain pair is
    always ``(x, y)``: label-free batches with indices must be :class:`UnlabelledBatch`.

    Args:
        batch: The element or batch.

    Returns:
        ``(x, y, index)``.

    Raises:
        TypeError: If ``batch`` is none of a tensor, a named batch, or a tuple/list of 1 to 3 items.
    """
    if isinstance(batch, Tensor):
        return batch, None, None
    if isinstance(batch, LabelledBatch):
        return batch.input, batch.target, batch.index
    if isinstance(batch, LabelledPair):
        return batch.input, batch.target, None
    if isinstance(batch, UnlabelledBatch):
        return batch.input, None, batch.index
    if isinstance(batch, Sequence) and not isinstance(batch, str | bytes) and len(batch) in (1, 2, 3):
        x, y, index = (*batch, None, None)[:3]
        return x, y, index
    size = f" of {len(batch)} items" if isinstance(batch, Sequence) and not isinstance(batch, str | bytes) else ""
    raise TypeError(
        "a batch must be a tensor (inputs only), a LabelledBatch, LabelledPair or UnlabelledBatch, or a tuple/list "
        f"(x,), (x, y) or (x, y, index); got {type(batch).__name__}{size}"
    )
