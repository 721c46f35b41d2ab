"""The "Forget with Precision" method family: label poisoning, weight-change pruning and activation reset.

The methods live in :mod:`~lightning_unlearn.methods.poison`, :mod:`~lightning_unlearn.methods.pruning` and
:mod:`~lightning_unlearn.methods.activation_reset`, their shared mechanisms in
:mod:`~lightning_unlearn.methods.precision_common`; this module gathers them. ``Finetune`` of the family is
:class:`lightning_unlearn.methods.Finetune`.

Reference: M. Krähenmann, L. Neubecker, V. Strozzi, I. Martinelli, "Forget with Precision: Assessing Machine
Unlearning Approaches", Deep Learning course project, ETH Zürich, 2023.
"""

from lightning_unlearn.methods.activation_reset import ActivationReset
from lightning_unlearn.methods.poison import Hybrid, Poison, PoisonFull
from lightning_unlearn.methods.precision_common import (
    PrecisionStage,
    activation_layers,
    change_mask,
    flag_channels,
    kaiming_draw,
    linear_quantile,
    reinit,
    stage_sgd,
)
from lightning_unlearn.methods.pruning import Pruning, PruningComplex, PruningLast

__all__ = [
    "ActivationReset",
    "Hybrid",
    "Poison",
    "PoisonFull",
    "PrecisionStage",
    "Pruning",
    "PruningComplex",
    "PruningLast",
    "activation_layers",
    "change_mask",
    "flag_channels",
    "kaiming_draw",
    "linear_quantile",
    "reinit",
    "stage_sgd",
]
