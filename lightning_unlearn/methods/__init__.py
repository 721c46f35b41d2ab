"""Unlearning methods: one LightningModule per method, on a base class per training regime."""

from lightning_unlearn.methods.activation_reset import ActivationReset
from lightning_unlearn.methods.bad_teaching import BadTeaching
from lightning_unlearn.methods.base import (
    GradientUnlearningMethod,
    LRSchedulerCallable,
    MultiStageUnlearningMethod,
    OnePassUnlearningMethod,
    OptimizerCallable,
    Stage,
    UnlearningMethod,
)
from lightning_unlearn.methods.baselines import Finetune, GradientAscent, RandomLabel
from lightning_unlearn.methods.boundary import BoundaryExpanding, BoundaryShrink
from lightning_unlearn.methods.classifier import Classifier, RetrainOracle
from lightning_unlearn.methods.jit import JiT
from lightning_unlearn.methods.l1_sparse import L1Sparse
from lightning_unlearn.methods.l2ul import L2UL, run_continual
from lightning_unlearn.methods.laf import LAF
from lightning_unlearn.methods.poison import Hybrid, Poison, PoisonFull
from lightning_unlearn.methods.pruning import Pruning, PruningComplex, PruningLast
from lightning_unlearn.methods.saliency import SaliencyMask
from lightning_unlearn.methods.salun import SalUn
from lightning_unlearn.methods.scrub import SCRUB
from lightning_unlearn.methods.ssd import LFSSD, SSD
from lightning_unlearn.methods.unsir import UNSIR

__all__ = [
    "ActivationReset",
    "BadTeaching",
    "BoundaryExpanding",
    "BoundaryShrink",
    "Hybrid",
    "JiT",
    "L1Sparse",
    "L2UL",
    "LAF",
    "LFSSD",
    "Poison",
    "PoisonFull",
    "Pruning",
    "PruningComplex",
    "PruningLast",
    "Classifier",
    "Finetune",
    "GradientAscent",
    "GradientUnlearningMethod",
    "LRSchedulerCallable",
    "MultiStageUnlearningMethod",
    "OnePassUnlearningMethod",
    "OptimizerCallable",
    "RandomLabel",
    "RetrainOracle",
    "SCRUB",
    "SalUn",
    "SaliencyMask",
    "SSD",
    "Stage",
    "UNSIR",
    "UnlearningMethod",
    "run_continual",
]
