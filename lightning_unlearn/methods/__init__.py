"""Unlearning methods: one LightningModule per method, on a base class per training regime."""

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
from lightning_unlearn.methods.classifier import Classifier, RetrainOracle

__all__ = [
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
    "Stage",
    "UnlearningMethod",
]

