"""Forgetting metrics and membership-inference attacks as distributed-correct torchmetrics metrics."""

from lightning_unlearn.metrics.accuracy import SplitAccuracy
from lightning_unlearn.metrics.attacks import ForgetVsTestMIA, LossLRCVMIA, SVCConfidenceMIA
from lightning_unlearn.metrics.audit import (
    EpsilonSummary,
    challenge_epsilon,
    challenge_score,
    epsilon_ceiling,
    forget_quality,
    hinge_scores,
    logit_confidence,
    per_example_epsilon,
    summarize_epsilon,
)
from lightning_unlearn.metrics.distances import OutputDistance
from lightning_unlearn.metrics.functional import entropy, per_sample_loss, softmax64, true_class_confidence
from lightning_unlearn.metrics.laf_attack import SortedSoftmaxGBM, SortedSoftmaxGBMBalanced, SortedSoftmaxGBMTrain
from lightning_unlearn.metrics.membership import (
    ATTACKS,
    AttackData,
    EntropyMIA,
    MembershipAttack,
    SplitArrays,
    available_attacks,
    build_attack,
    register_attack,
)

__all__ = [
    "ATTACKS",
    "AttackData",
    "EntropyMIA",
    "EpsilonSummary",
    "ForgetVsTestMIA",
    "LossLRCVMIA",
    "MembershipAttack",
    "OutputDistance",
    "SplitAccuracy",
    "SVCConfidenceMIA",
    "SortedSoftmaxGBM",
    "SortedSoftmaxGBMBalanced",
    "SortedSoftmaxGBMTrain",
    "SplitArrays",
    "available_attacks",
    "build_attack",
    "challenge_epsilon",
    "challenge_score",
    "entropy",
    "epsilon_ceiling",
    "forget_quality",
    "hinge_scores",
    "logit_confidence",
    "per_example_epsilon",
    "per_sample_loss",
    "register_attack",
    "softmax64",
    "summarize_epsilon",
    "true_class_confidence",
]
