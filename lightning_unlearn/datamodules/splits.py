"""Split resolution: from a split name (``forget``, ``retain``, ``test_forget``, ``a+b``, ...) to positions and labels.

A name resolves to a :class:`ResolvedSplit`: whether its positions index the training or the test set, the
positions in split order, and their labels (noisy labels on the forget set under ``NoisyLabels``, except for
``forget_clean``). Each fixed name has one small resolver in a dispatch table; ``forget_req{s}`` (a continual
request) is matched by pattern; ``a+b`` concatenates the parts (elements of ``b`` follow those of ``a``). The seeded
subsets ``retain_labelled`` and ``retain_sample`` are drawn here from offsets of the split seed, never from the
global RNG; the datamodule caches them and records them in ``splits.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_unlearn.datamodules.scenarios import SplitResult, floor_fraction, take

#: Training splits every scenario has (evaluation splits depend on the scenario: :func:`eval_split_names`).
TRAIN_SPLITS: tuple[str, ...] = ("forget", "retain", "full", "retain_labelled", "retain_sample")
#: Seed offsets of the seeded subsets of the retain set (added to the split seed).
LABELLED_SEED_OFFSET = 10_001
RETAIN_SAMPLE_SEED_OFFSET = 10_002
_REQUEST_PREFIX = "forget_req"

__all__ = [
    "LABELLED_SEED_OFFSET",
    "RETAIN_SAMPLE_SEED_OFFSET",
    "TRAIN_SPLITS",
    "ResolvedSplit",
    "SplitSources",
    "check_sample_size",
    "draw_labelled_subset",
    "draw_retain_sample",
    "eval_split_names",
    "resolve_split",
    "split_names",
]


class ResolvedSplit(NamedTuple):
    """A resolved split name.

    Attributes:
        from_train: The positions index the training set (else the test set).
        positions: Indices into that set, in split order.
        targets: Label of each position.
    """

    from_train: bool
    positions: Tensor
    targets: Tensor


@dataclass(frozen=True)
class SplitSources:
    """What resolving a split name reads.

    Attributes:
        split: The split (active request applied).
        train_targets: Effective training labels (noisy labels applied).
        test_targets: Test labels.
        labelled_subset: Returns the (cached) ``retain_labelled`` indices.
        retain_sample: Returns the (cached) ``retain_sample`` indices of a given size.
        sample_size: Size of ``retain_sample`` requested by the caller.
    """

    split: SplitResult
    train_targets: Tensor
    test_targets: Tensor
    labelled_subset: Callable[[], Tensor]
    retain_sample: Callable[[int | None], Tensor]
    sample_size: int | None = None


def eval_split_names(split: SplitResult) -> list[str]:
    """Evaluation split names of ``split``, in the order of the evaluation loaders."""
    names = ["forget", "retain", "test"]
    if split.test_forget_indices is not None:
        names += ["test_forget", "test_retain"]
    if split.is_noisy:
        names.append("forget_clean")
    if split.continual and split.request > 0:
        names.append("forget_previous")
        names += [f"{_REQUEST_PREFIX}{s}" for s in range(split.request)]
    return names


def split_names(split: SplitResult) -> list[str]:
    """Every split name :func:`resolve_split` accepts for ``split`` (besides unions ``a+b``)."""
    return list(dict.fromkeys([*TRAIN_SPLITS, *eval_split_names(split)]))


# ---------------------------------------------------------------------------------------------------------- resolvers
def _train(positions: Tensor | None, src: SplitSources) -> ResolvedSplit | None:
    return None if positions is None else ResolvedSplit(True, positions, src.train_targets[positions])


def _test(positions: Tensor | None, src: SplitSources) -> ResolvedSplit | None:
    return None if positions is None else ResolvedSplit(False, positions, src.test_targets[positions])


def _forget(src: SplitSources) -> ResolvedSplit | None:
    return _train(src.split.forget_indices, src)


def _retain(src: SplitSources) -> ResolvedSplit | None:
    return _train(src.split.retain_indices, src)


def _full(src: SplitSources) -> ResolvedSplit | None:
    return _train(torch.cat([src.split.forget_indices, src.split.retain_indices]).sort().values, src)


def _retain_labelled(src: SplitSources) -> ResolvedSplit | None:
    return _train(src.labelled_subset(), src)


def _retain_sample(src: SplitSources) -> ResolvedSplit | None:
    return _train(src.retain_sample(src.sample_size), src)


def _forget_clean(src: SplitSources) -> ResolvedSplit | None:
    clean = src.split.clean_labels
    return None if clean is None else ResolvedSplit(True, src.split.forget_indices, clean)


def _forget_previous(src: SplitSources) -> ResolvedSplit | None:
    return _train(src.split.previous_indices, src)


def _test_all(src: SplitSources) -> ResolvedSplit | None:
    return _test(torch.arange(src.test_targets.numel()), src)


def _test_forget(src: SplitSources) -> ResolvedSplit | None:
    return _test(src.split.test_forget_indices, src)


def _test_retain(src: SplitSources) -> ResolvedSplit | None:
    return _test(src.split.test_retain_indices, src)


#: Resolver of each fixed split name; ``None`` from a resolver: the split does not exist for this scenario.
_RESOLVERS: dict[str, Callable[[SplitSources], ResolvedSplit | None]] = {
    "forget": _forget,
    "retain": _retain,
    "full": _full,
    "retain_labelled": _retain_labelled,
    "retain_sample": _retain_sample,
    "forget_clean": _forget_clean,
    "forget_previous": _forget_previous,
    "test": _test_all,
    "test_forget": _test_forget,
    "test_retain": _test_retain,
}


def _forget_request(name: str, src: SplitSources) -> ResolvedSplit | None:
    """``forget_req{s}``: the forget set of continual request ``s`` (up to the active one)."""
    split = src.split
    suffix = name[len(_REQUEST_PREFIX) :]
    if not (name.startswith(_REQUEST_PREFIX) and split.continual and suffix.isdigit()):
        return None
    s = int(suffix)
    if s > split.request:
        raise ValueError(f"Split {name!r}: request {s} is after the active request {split.request}")
    return _train(split.requests[s].forget_indices, src)


def resolve_split(name: str, src: SplitSources) -> ResolvedSplit:
    """Resolve split ``name`` (a fixed name, ``forget_req{s}`` or a union ``a+b``).

    Raises:
        ValueError: Unknown name for this scenario (the message lists the known ones), a union mixing training
            and test splits, or a request after the active one.
    """
    if "+" in name:
        parts = [resolve_split(part, src) for part in name.split("+")]
        if len({p.from_train for p in parts}) != 1:
            raise ValueError(f"Split union {name!r} mixes training and test splits")
        return ResolvedSplit(
            parts[0].from_train, torch.cat([p.positions for p in parts]), torch.cat([p.targets for p in parts])
        )
    resolver = _RESOLVERS.get(name)
    resolved = resolver(src) if resolver is not None else _forget_request(name, src)
    if resolved is None:
        known = split_names(src.split)
        raise ValueError(f"Unknown split {name!r} for this scenario; known splits: {known} and unions a+b")
    return resolved


# ---------------------------------------------------------------------------------------------------- seeded subsets
def draw_labelled_subset(retain: Tensor, restored: Tensor | None, fraction: float, seed: int) -> Tensor:
    """The sorted ``retain_labelled`` indices: ``restored`` when it lies in ``retain``, else a seeded draw.

    The draw takes ``max(1, floor(fraction * |R|))`` retain indices with seed ``seed + LABELLED_SEED_OFFSET``.
    """
    if restored is not None and bool(torch.isin(restored, retain).all()):
        return restored.sort().values
    n = max(1, floor_fraction(fraction, retain.numel()))
    return take(n, retain, seed + LABELLED_SEED_OFFSET).sort().values


def check_sample_size(sample_size: int | None, retain_size: int) -> int:
    """Return ``sample_size`` if it is a valid ``retain_sample`` size (in ``[1, retain_size]``), else raise."""
    if sample_size is None:
        raise ValueError("Split 'retain_sample' needs a sample size (Phase.sample_size)")
    if not 1 <= sample_size <= retain_size:
        raise ValueError(f"retain_sample size must be in [1, {retain_size}] (the retain size), got {sample_size}")
    return sample_size


def draw_retain_sample(retain: Tensor, restored: Tensor | None, sample_size: int, seed: int) -> Tensor:
    """The sorted ``retain_sample`` indices: ``restored`` when it fits, else a seeded draw.

    ``restored`` is used when it has ``sample_size`` elements, all in ``retain``; the draw takes ``sample_size``
    retain indices with seed ``seed + RETAIN_SAMPLE_SEED_OFFSET``.
    """
    if restored is not None and restored.numel() == sample_size and bool(torch.isin(restored, retain).all()):
        return restored.sort().values
    return take(sample_size, retain, seed + RETAIN_SAMPLE_SEED_OFFSET).sort().values
