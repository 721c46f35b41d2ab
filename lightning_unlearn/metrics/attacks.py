"""SalUn, starting-kit and SCRUB membership-inference attacks.

Registered attacks (select by name in :class:`~lightning_unlearn.callbacks.MembershipInference`):

* ``"svc_confidence"`` -> ``mia/svc_confidence_efficacy``: SalUn's "MIA efficacy" (SVC on the true-class
  confidence; share of D_f called non-member, higher = more forgotten).
* ``"loss_lr_cv"`` -> ``mia/loss_lr_cv_acc``: the NeurIPS-2023 starting kit's ``simple_mia`` (cross-validated
  logistic regression on the loss, D_f vs test; closer to retrained is better).
* ``"forget_vs_test"`` -> ``mia/forget_vs_test_cv_acc``: SCRUB's forget-vs-test attack (clipped loss, D_f vs the
  test samples of D_f's classes; closer to retrained is better).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from torch import Tensor

from lightning_unlearn.metrics.functional import per_sample_loss, softmax64, true_class_confidence
from lightning_unlearn.metrics.laf_attack import balanced_subset
from lightning_unlearn.metrics.membership import AttackData, MembershipAttack, register_attack

__all__ = [
    "ForgetVsTestMIA",
    "LossLRCVMIA",
    "SVCConfidenceMIA",
    "cv_attack_accuracy",
    "svc_confidence_sets",
]

#: SCRUB clips the per-sample loss to this interval before fitting.
SCRUB_LOSS_CLIP = 100.0
#: ``StratifiedShuffleSplit``'s default ``test_size``.
_SSS_TEST_SIZE = 0.1


def svc_confidence_sets(retain: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SalUn's SVC training set: the first ``n = min(|retain|, |nonmembers|)`` retain rows (1), all non-members (0).

    Args:
        retain: Canonical (index-ordered) retain features ``[n_r, k]``.
        nonmembers: Non-member features ``[n_t, k]`` (test, or ``test_retain`` in class-wise scenarios).

    Returns:
        ``(x, y)``: members first, then non-members; ``y`` int64.
    """
    n = min(len(retain), len(nonmembers))
    x = np.concatenate([retain[:n], nonmembers])
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(len(nonmembers), dtype=np.int64)])
    return x, y


def cv_attack_accuracy(
    members: np.ndarray, nonmembers: np.ndarray, n_splits: int, cv_seed: int, balance_seed: int
) -> float:
    """Balanced, cross-validated ``LogisticRegression()`` accuracy of members (1) vs non-members (0).

    The larger group is reduced to the size of the smaller by a seeded draw without replacement
    (:func:`~lightning_unlearn.metrics.laf_attack.balanced_subset` with ``balance_seed``; rows kept in canonical
    order). Rows are stacked non-members first, then members (as in the starting kit and SCRUB), and scored with
    ``cross_val_score(LogisticRegression(), x, y, cv=StratifiedShuffleSplit(n_splits, random_state=cv_seed),
    scoring="accuracy")``.

    Args:
        members: Member features ``[n_1, k]``.
        nonmembers: Non-member features ``[n_0, k]``.
        n_splits: Number of shuffle splits.
        cv_seed: ``random_state`` of the splitter.
        balance_seed: Seed of the balancing draw.

    Returns:
        The mean test-fold accuracy; ``nan`` when the balanced set is too small for the splitter (fewer than 2
        samples per group, or fewer than 2 test or training rows).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    x = np.concatenate([nonmembers, members])
    y = np.concatenate([np.zeros(len(nonmembers), dtype=np.int64), np.ones(len(members), dtype=np.int64)])
    keep = balanced_subset(y, balance_seed)
    x, y = x[keep], y[keep]
    n_total = len(y)
    n_test = math.ceil(_SSS_TEST_SIZE * n_total)
    if n_total // 2 < 2 or n_test < 2 or n_total - n_test < 2:
        return float("nan")
    cv = StratifiedShuffleSplit(n_splits=n_splits, random_state=cv_seed)
    scores = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


@register_attack("svc_confidence")
class SVCConfidenceMIA(MembershipAttack):
    """SalUn's "MIA efficacy": an RBF SVC on the true-class confidence, logged as ``mia/svc_confidence_efficacy``.

    As in OPTML-Group/Unlearn-Saliency (``evaluation/SVC_MIA.py``, ``main_forget.py``).
    Feature: the confidence ``p_y`` of the stored label, ``p = softmax(logits)`` (float64), one number per sample.
    Non-members (label 0): the test split T; in class-wise scenarios, the test split **without the forgotten
    class**, i.e. the ``test_retain`` split whenever it received samples (otherwise ``test``). Members (label 1):
    the **first** ``n = min(|D_r|, |T|)`` retain samples in index order (balanced by construction; see
    :func:`svc_confidence_sets`). Attacker: ``SVC(C=3, kernel="rbf", gamma="auto")`` fitted once on members and
    non-members. Reported: efficacy = 1 − (fraction of D_f predicted member) = the fraction of the forget split
    called **non-member** (``nan`` if D_f is empty).

    Direction: **higher = more forgotten** (``higher_is_better=True``); the ideal is the retrained model's value
    (near 1 for class forgetting).

    Args:
        seed: Seed of the ``retain_subsample`` draw (the SVC fit itself is deterministic).
        retain_subsample: Optional seeded subset of D_r taken before the first-``n`` selection (see the base class).
        **kwargs: Passed to :class:`~torchmetrics.Metric`.
    """

    name: ClassVar[str] = "svc_confidence_efficacy"
    splits: ClassVar[tuple[str, ...]] = ("forget", "retain", "test", "test_retain")
    optional_splits: ClassVar[tuple[str, ...]] = ("test_retain",)
    higher_is_better = True

    def features(self, logits: Tensor, target: Tensor) -> Tensor:
        """Softmax probability of the stored label, float64 ``[n]``."""
        return true_class_confidence(softmax64(logits), target)

    def attack(self, data: AttackData) -> float:
        """Fit the SVC on first-``n`` retain (1) vs test / test_retain (0); share of forget predicted non-member."""
        from sklearn.svm import SVC

        nonmember_split = "test_retain" if len(data["test_retain"]) > 0 else "test"
        data.require("retain", nonmember_split)
        forget = data["forget"]
        if len(forget) == 0:
            return float("nan")
        x, y = svc_confidence_sets(data["retain"].feature, data[nonmember_split].feature)
        model = SVC(C=3, kernel="rbf", gamma="auto").fit(x, y)
        return float(1.0 - np.mean(model.predict(forget.feature) == 1))


@register_attack("loss_lr_cv")
class LossLRCVMIA(MembershipAttack):
    """The NeurIPS-2023 starting kit's ``simple_mia``: cross-validated LR on the loss, ``mia/loss_lr_cv_acc``.

    As in unlearning-challenge/starting-kit (``unlearning-CIFAR10.ipynb``). Feature: the
    per-sample cross-entropy ``ℓ = -ln p_y`` (float64), one number per sample. Members (label 1): the forget split
    D_f. Non-members (label 0): the whole test split. Balancing: the larger group is subsampled without
    replacement to the smaller's size, seeded by ``seed`` (unseeded in the kit). Attacker: ``LogisticRegression()``
    scored by ``cross_val_score(..., cv=StratifiedShuffleSplit(n_splits=10, random_state=0),
    scoring="accuracy")`` (the splitter seed is the kit's fixed 0, not ``seed``). Reported: the mean of the 10
    accuracies (:func:`cv_attack_accuracy`; ``nan`` if D_f is empty or the balanced set is too small to split).

    Direction: **closer to the retrained model is better** (``higher_is_better=None``); ideal ≈ 0.5, values well
    below 0.5 also leak membership.

    Args:
        seed: Seed of the balancing draw.
        retain_subsample: Accepted for a uniform interface; unused (the attack does not consume D_r).
        **kwargs: Passed to :class:`~torchmetrics.Metric`.
    """

    name: ClassVar[str] = "loss_lr_cv_acc"
    splits: ClassVar[tuple[str, ...]] = ("forget", "test")
    higher_is_better = None
    n_splits: ClassVar[int] = 10

    def features(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of the stored label, float64 ``[n]``."""
        return per_sample_loss(logits, target)

    def attack(self, data: AttackData) -> float:
        """Balanced D_f (1) vs test (0) losses; mean 10-fold shuffle-split accuracy of ``LogisticRegression()``."""
        data.require("test")
        forget, test = data["forget"], data["test"]
        if len(forget) == 0:
            return float("nan")
        return cv_attack_accuracy(forget.feature, test.feature, self.n_splits, cv_seed=0, balance_seed=self.seed)


@register_attack("forget_vs_test")
class ForgetVsTestMIA(MembershipAttack):
    """SCRUB's forget-vs-test attack: cross-validated LR on the clipped loss, ``mia/forget_vs_test_cv_acc``.

    As in meghdadk/SCRUB (``MIA_experiments.ipynb``, ``membership_inference_attack``).
    Feature: the per-sample cross-entropy ``ℓ = -ln p_y`` (float64) clipped to ``[-100, 100]``. Members (label 1):
    the forget split D_f. Non-members (label 0): the test samples **whose stored label occurs in D_f** (class
    forgetting: only the forgotten classes; random forgetting: in practice the whole test split). Balancing: the
    larger group is subsampled without replacement to the smaller's size, seeded by ``seed``. Attacker:
    ``LogisticRegression()`` scored by ``cross_val_score(..., cv=StratifiedShuffleSplit(n_splits=5,
    random_state=seed), scoring="accuracy")``. Reported: the mean of the 5 accuracies (:func:`cv_attack_accuracy`;
    ``nan`` if D_f or the restricted test set is empty, or the balanced set is too small to split).

    Direction: **closer to the retrained model is better** (``higher_is_better=None``); ideal ≈ 0.5.

    Args:
        seed: Seed of the balancing draw and ``random_state`` of the splitter.
        retain_subsample: Accepted for a uniform interface; unused (the attack does not consume D_r).
        **kwargs: Passed to :class:`~torchmetrics.Metric`.
    """

    name: ClassVar[str] = "forget_vs_test_cv_acc"
    splits: ClassVar[tuple[str, ...]] = ("forget", "test")
    higher_is_better = None
    n_splits: ClassVar[int] = 5

    def features(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of the stored label clipped to ``[-100, 100]``, float64 ``[n]``."""
        return per_sample_loss(logits, target).clamp(-SCRUB_LOSS_CLIP, SCRUB_LOSS_CLIP)

    def attack(self, data: AttackData) -> float:
        """Balanced D_f (1) vs test-of-D_f's-classes (0) losses; mean 5-fold shuffle-split accuracy."""
        data.require("test")
        forget, test = data["forget"], data["test"]
        if len(forget) == 0:
            return float("nan")
        nonmembers = test.feature[np.isin(test.label, np.unique(forget.label))]
        if len(nonmembers) == 0:
            return float("nan")
        return cv_attack_accuracy(forget.feature, nonmembers, self.n_splits, cv_seed=self.seed, balance_seed=self.seed)
