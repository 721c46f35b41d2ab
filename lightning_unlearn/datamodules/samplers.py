"""Samplers of the datamodules' loaders: epoch-seeded shuffles, distributed shards, global-batch shares.

:func:`training_sampler` and :func:`evaluation_sampler` choose the sampler of a training or evaluation loader from
the world size and the phase's switches; :func:`loader_seed` gives each training loader its own shuffle seed.
The distributed samplers also serve the JiT/SSD statistics passes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DistributedSampler, Sampler

from lightning_unlearn.seeding import seeded_generator

__all__ = [
    "EpochRandomSampler",
    "ReplicatedDistributedSampler",
    "UnrepeatedDistributedSampler",
    "epoch_permutation",
    "global_batch_share",
    "evaluation_sampler",
    "global_batch_shards",
    "loader_seed",
    "training_sampler",
]


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of epoch ``epoch``: a permutation seeded by ``(seed, epoch)`` only."""
    generator = seeded_generator((int(seed) + 1_000_003 * int(epoch)) % (2**63 - 1))
    return torch.randperm(num_samples, generator=generator).tolist()


class _OneProcessOrderSampler(DistributedSampler):
    """A ``DistributedSampler`` of which each rank takes :meth:`positions` of the one-process order, unpadded.

    The one-process order is the :func:`epoch_permutation` of ``(seed, epoch)`` when shuffled, else ``0 .. n-1``.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)  # type: ignore[arg-type]
        self.total_size = len(dataset)
        self.num_samples = len(self.positions(self.total_size))

    def positions(self, num_samples: int) -> range:
        """The positions of the one-process order that this rank iterates."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        order = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else range(n)
        return iter([order[p] for p in self.positions(n)])

    def __len__(self) -> int:
        return self.num_samples


class UnrepeatedDistributedSampler(_OneProcessOrderSampler):
    """A ``DistributedSampler`` that gives each index to exactly one rank, without padding.

    Rank ``r`` of ``W`` receives positions ``r, r + W, r + 2W, ...`` (after an optional seeded shuffle, the same on
    every rank), so the shards are disjoint, cover the dataset exactly once and differ in length by at most one. Use
    it for evaluation passes whose per-sample results are gathered across ranks: nothing is counted twice.
    Lightning does not re-wrap a loader whose sampler is already a ``DistributedSampler``.

    Args:
        dataset: The dataset to shard (only its length is used).
        num_replicas: World size ``W``; ``None`` reads it from the default process group.
        rank: This process's rank; ``None`` reads it from the default process group.
        shuffle: Shuffle (identically on every rank, seeded by ``seed`` and the epoch) before sharding.
        seed: Shuffle seed.
    """

    def positions(self, num_samples: int) -> range:
        """Every ``W``-th position, starting at this rank's."""
        return range(self.rank, num_samples, self.num_replicas)


class ReplicatedDistributedSampler(_OneProcessOrderSampler):
    """A ``DistributedSampler`` that gives *every* rank the whole one-process order, for global-batch training.

    Every rank iterates the same sequence a single process would (the :class:`EpochRandomSampler` permutation of
    ``(seed, epoch)`` when shuffled, else ``0 .. n-1``), so each rank loads the same global batches and the training
    step keeps only its share of each (:func:`global_batch_share`). Together with a loss weighted by the share's
    size, the gradient DDP averages is the one-process gradient of the global batch, whatever the number of
    processes. Lightning does not re-wrap a loader whose sampler is a ``DistributedSampler``.

    Args:
        dataset: The dataset (only its length is used).
        num_replicas: World size; ``None`` reads it from the default process group.
        rank: This process's rank; ``None`` reads it from the default process group.
        shuffle: Shuffle with the one-process permutation of ``(seed, epoch)``.
        seed: Shuffle seed (as :class:`EpochRandomSampler`'s).
    """

    def positions(self, num_samples: int) -> range:
        """Every position."""
        return range(num_samples)


def global_batch_share(batch_size: int, rank: int, world_size: int) -> tuple[slice, float]:
    """This rank's share of one global batch, and the loss weight that makes DDP's average the global gradient.

    Rank ``r`` of ``W`` keeps the positions ``r, r + W, ...`` of the batch (as :func:`global_batch_shards`). A loss
    that *sums* the per-sample losses of the share and multiplies the sum by the weight ``W / batch_size`` gives,
    once DDP has averaged the ranks' gradients, exactly the gradient of the mean loss over the global batch: the
    one-process gradient. A share may be empty (a last batch smaller than ``W``); the rank must still take part in
    the backward pass.

    Args:
        batch_size: Size of the global batch (>= 1).
        rank: This rank in ``[0, world_size)``.
        world_size: Number of ranks (>= 1).

    Returns:
        ``(positions, weight)``: a slice to index the batch's tensors with, and ``W / batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, world={world_size}")
    return slice(rank, None, world_size), world_size / batch_size


def global_batch_shards(num_samples: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Positions of each global batch that fall to ``rank`` (JiT/SSD statistics passes).

    Global batch ``k`` covers positions ``[kB, min((k+1)B, n))``; rank ``r`` takes the positions ``p`` with
    ``(p - kB) mod W == r``. No padding, no duplicates; a shard may be empty (the rank must still join the
    collective for that batch). Every rank gets the same number of batches, ``ceil(n / B)``.

    Args:
        num_samples: Length ``n`` of the sequence.
        batch_size: Global batch size ``B`` (>= 1).
        rank: This rank ``r`` in ``[0, W)``.
        world_size: Number of ranks ``W`` (>= 1).

    Returns:
        One list of positions per global batch.
    """
    share, _ = global_batch_share(batch_size, rank, world_size)  # validates the arguments
    batches = math.ceil(num_samples / batch_size)
    return [list(range(k * batch_size, min((k + 1) * batch_size, num_samples))[share]) for k in range(batches)]


class EpochRandomSampler(Sampler[int]):
    """A random permutation per epoch, seeded by ``(seed, epoch)`` only.

    Lightning calls :meth:`set_epoch` at the start of every training epoch, so the order of epoch ``e`` is the
    same whether the run started at epoch 0 or resumed from a checkpoint at epoch ``e`` — the property that makes
    a resumed run match an uninterrupted one.

    Args:
        data_source: The dataset (only its length is used).
        seed: Base seed of the permutations.
        epoch: Initial epoch.
    """

    def __init__(self, data_source: Sized, seed: int, epoch: int = 0) -> None:
        self.data_source = data_source
        self.seed = int(seed)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        yield from epoch_permutation(len(self.data_source), self.seed, self.epoch)

    def __len__(self) -> int:
        return len(self.data_source)


def loader_seed(seed: int, name: str) -> int:
    """Shuffle seed of the training loader of split (or mode) ``name``: ``seed * 1_000_003 + crc32(name)``.

    Shuffled orders depend only on (seed, loader name, epoch), so a resumed run sees the same batches.
    """
    return seed * 1_000_003 + zlib.crc32(name.encode())


def training_sampler(
    dataset: Sized,
    *,
    seed: int,
    epoch: int,
    shuffle: bool,
    world_size: int = 1,
    rank: int = 0,
    unrepeated: bool = False,
    global_batches: bool = False,
) -> Sampler[int] | None:
    """The sampler of a training loader (``None``: the loader's sequential order).

    One process: an :class:`EpochRandomSampler` when shuffled. Several: our own ``DistributedSampler`` (Lightning
    does not re-wrap it), which honours ``shuffle`` (Lightning's injected one always shuffles) and gives every rank
    the same number of batches: :class:`UnrepeatedDistributedSampler` with ``unrepeated``,
    :class:`ReplicatedDistributedSampler` with ``global_batches`` (every rank walks the one-process order and the
    method takes its share), else torch's ``DistributedSampler``.

    Args:
        dataset: The dataset (only its length is used).
        seed: Shuffle seed (:func:`loader_seed`).
        epoch: Current epoch.
        shuffle: Shuffle the order.
        world_size: Number of processes.
        rank: This process's global rank.
        unrepeated: Each sample to exactly one rank, unpadded.
        global_batches: Every rank iterates the one-process order.
    """
    if world_size > 1:
        sampler_type: type[DistributedSampler[int]] = DistributedSampler
        if unrepeated:
            sampler_type = UnrepeatedDistributedSampler
        elif global_batches:
            sampler_type = ReplicatedDistributedSampler
        distributed: DistributedSampler[int] = sampler_type(
            dataset,  # type: ignore[arg-type]
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
        )
        distributed.set_epoch(epoch)
        return distributed
    if shuffle:
        return EpochRandomSampler(dataset, seed, epoch)
    return None


def evaluation_sampler(dataset: Sized, *, world_size: int = 1, rank: int = 0) -> Sampler[int] | None:
    """The sampler of an evaluation loader: unshuffled shards that count every sample once under DDP."""
    if world_size > 1:
        return UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    return None
