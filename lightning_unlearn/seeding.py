"""Seeded random-number generators: the one way the package creates a ``torch.Generator``.

Every random draw that must be reproducible regardless of the global RNG (splits, sampler orders, random-label
tables, perturbations, shadow sets) comes from a private CPU generator built by :func:`seeded_generator`. Its seed
is the base seed plus fixed offsets, so two draws that must not be correlated (e.g. the split and the
labelled subset of one run) use different offsets of the same user seed, and a draw is unchanged by anything else
the run does with randomness.

A few places deliberately seed the *global* RNG instead (``torch.manual_seed``), inside ``torch.random.fork_rng``
so the caller's stream is restored afterwards: (re)initialising a network, whose layers draw their weights from the
global RNG (the retrain oracle's fresh model, the random teacher of Bad Teaching and of the ZRF score, a
classifier trained by the pretrained-weights cache), and a pass through stochastic layers (dropout) that must give
the same result on every rank (the forget-importance estimate, seeded from one draw of the method's generator).
Those operations take no ``generator`` argument, so they are not replaced by this helper.
"""

from __future__ import annotations

import torch

__all__ = ["seeded_generator"]


def seeded_generator(seed: int, *offsets: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed + sum(offsets)``.

    Equal to ``torch.Generator().manual_seed(seed + sum(offsets))``: the draws are bit-identical to those of a
    generator seeded by hand with that value.

    Args:
        seed: Base seed (an integer within ``torch.Generator.manual_seed``'s range once the offsets are added).
        *offsets: Integers added to ``seed``, one per purpose (a named constant per draw) or rank.

    Returns:
        The seeded generator.
    """
    return torch.Generator().manual_seed(int(seed) + sum(int(o) for o in offsets))
