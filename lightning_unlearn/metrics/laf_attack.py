"""LAF's membership-inference attack: gradient boosting on sorted softmax vectors.

Registered attacks (select by name in :class:`~lightning_unlearn.callbacks.MembershipInference`):

* ``"sorted_softmax_gbm"`` -> ``mia/sorted_softmax_gbm_acc``: the LAF protocol's plain accuracy.
* ``"sorted_softmax_gbm_balanced"`` -> ``mia/sorted_softmax_gbm_balanced_acc``: the same attacker scored on a
  balanced evaluation set (a correction: the authors' evaluation set is member-heavy when D_f is large).
* ``"sorted_softmax_gbm_train"`` -> ``mia/sorted_softmax_gbm_train_acc``: the attacker's training accuracy
  (diagnostic).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Literal

import numpy as np
from torch import Tensor

from lightning_unlearn.metrics.functional import softmax64
from lightning_unlearn.metrics.membership import AttackData, MembershipAttack, register_attack

__all__ = [
    "SortedSoftmaxGBM",
    "SortedSoftmaxGBMBalanced",
    "SortedSoftmaxGBMTrain",
    "gbm_attacker",
    "sorted_softmax_gbm_sets",
]

log = logging.getLogger(__name__)

Backend = Literal["auto", "xgboost", "sklearn"]
_BACKENDS: tuple[str, ...] = ("auto", "xgboost", "sklearn")
#: Rows of LAF's attack training sets: 157 batches of 32 (``> 5000`` rows).
LAF_ATTACK_ROWS = 5024
LAF_BATCH = 32


def _xgboost_available() -> bool:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return False
    return True


def gbm_attacker(seed: int = 0, backend: Backend = "auto") -> tuple[Any, str]:
    """LAF's attacker: ``XGBClassifier(n_estimators=100, binary:logistic, gbtree)`` or its scikit-learn stand-in.

    Args:
        seed: ``random_state`` of the model.
        backend: ``"xgboost"``, ``"sklearn"`` (``HistGradientBoostingClassifier(max_iter=100, learning_rate=0.3,
            max_depth=6, max_leaf_nodes=None, min_samples_leaf=1, l2_regularization=1.0, early_stopping=False)``,
            approximately XGBoost's defaults) or ``"auto"`` (XGBoost when installed).

    Returns:
        ``(estimator, backend name)``.

    Raises:
        ValueError: On an unknown backend, or ``"xgboost"`` when it is not installed.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    use_xgb = backend == "xgboost" or (backend == "auto" and _xgboost_available())
    if use_xgb:
        if not _xgboost_available():
            raise ValueError("backend='xgboost' needs the xgboost package; use backend='sklearn' or 'auto'")
        from xgboost import XGBClassifier

        return XGBClassifier(
            n_estimators=100, objective="binary:logistic", booster="gbtree", random_state=seed
        ), "xgboost"
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.3,
        max_depth=6,
        max_leaf_nodes=None,
        min_samples_leaf=1,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )
    return model, "sklearn"


def sorted_softmax_gbm_sets(
    forget: np.ndarray,
    retain: np.ndarray,
    test: np.ndarray,
    seed: int = 0,
    rows: int = LAF_ATTACK_ROWS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The LAF protocol's attack training and evaluation sets from canonical (index-ordered) feature arrays.

    * Training members (1): a seeded random subset of ``retain`` of ``min(|forget|, rows, |retain|)`` rows
      (``numpy.random.default_rng(seed)``, rows kept in index order).
    * Training non-members (0): the first ``rows`` test rows; when the test split has no more than ``rows``
      rows (small datasets), its first half instead (library fallback so that evaluation non-members exist).
    * Evaluation: all of ``forget`` (1), then the following test rows, at most ``32 * ceil(|forget| / 32)``
      (0).

    Returns:
        ``(x_train, y_train, x_eval, y_eval)`` (members first in each).
    """
    n_members = min(len(forget), rows, len(retain))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(retain), size=n_members, replace=False))
    cut = rows if len(test) > rows else len(test) // 2
    n_eval = LAF_BATCH * math.ceil(len(forget) / LAF_BATCH)
    eval_nonmembers = test[cut : cut + n_eval]
    x_train = np.concatenate([retain[chosen], test[:cut]])
    y_train = np.concatenate([np.ones(n_members, dtype=np.int64), np.zeros(cut, dtype=np.int64)])
    x_eval = np.concatenate([forget, eval_nonmembers])
    y_eval = np.concatenate([np.ones(len(forget), dtype=np.int64), np.zeros(len(eval_nonmembers), dtype=np.int64)])
    return x_train, y_train, x_eval, y_eval


def balanced_subset(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of a balanced subset of binary labels ``y``: a seeded subsample of the larger side."""
    ones, zeros = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n = min(len(ones), len(zeros))
    rng = np.random.default_rng([seed, 1])
    if len(ones) > n:
        ones = rng.choice(ones, size=n, replace=False)
    if len(zeros) > n:
        zeros = rng.choice(zeros, size=n, replace=False)
    return np.sort(np.concatenate([ones, zeros]))


@register_attack("sorted_softmax_gbm")
class SortedSoftmaxGBM(MembershipAttack):
    """LAF's attack: gradient boosting on the ascending-sorted softmax, logged as ``mia/sorted_softmax_gbm_acc``.

    As in ShaofeiShen768/LAF (``Train.train_attack_model``, ``Train.attack``). The evaluated
    model is its own shadow model. Feature: ``softmax(logits)`` sorted ascending per row (C numbers, float64).
    Sets: :func:`sorted_softmax_gbm_sets` (members: a seeded subset of D_r of ``min(|D_f|, 5024)``; non-members:
    the first 5024 test samples; evaluation: all of D_f vs the following ``<= 32 ceil(|D_f|/32)`` test samples).
    Fit: ``train_test_split(test_size=0.01, shuffle=True, random_state=seed)``, fitted on the 99 % part, attacker
    from :func:`gbm_attacker` (XGBoost when installed, else scikit-learn; the backend that ran is in
    :attr:`backend_used` and logged at INFO level). Reported: plain accuracy on the evaluation set (``nan`` when
    D_f is empty); :attr:`last_train_accuracy` keeps the training accuracy.

    Direction: **closer to the retrained model is better** (``higher_is_better=None``); 0.5 is only a rough guide.
    With more than 4,976 forget samples and a 10,000-image test set the evaluation set is member-heavy: compare
    methods on ``sorted_softmax_gbm_balanced`` then.

    Args:
        seed: Seed of the member subset, the split and the attacker.
        retain_subsample: Optional seeded subset of D_r before the protocol's own draw (see the base class).
        backend: ``"auto"``, ``"xgboost"`` or ``"sklearn"``.
        **kwargs: Passed to :class:`~torchmetrics.Metric`.
    """

    name: ClassVar[str] = "sorted_softmax_gbm_acc"
    splits: ClassVar[tuple[str, ...]] = ("forget", "retain", "test")
    higher_is_better = None
    #: What :meth:`attack` returns: ``"eval"``, ``"balanced"`` or ``"train"`` accuracy.
    report: ClassVar[str] = "eval"

    def __init__(
        self, seed: int = 0, retain_subsample: int | None = None, backend: Backend = "auto", **kwargs: Any
    ) -> None:
        super().__init__(seed=seed, retain_subsample=retain_subsample, **kwargs)
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        self.backend = backend
        self.backend_used: str | None = None
        self.last_train_accuracy: float = float("nan")

    def features(self, logits: Tensor, target: Tensor) -> Tensor:
        """Softmax probabilities sorted ascending per row, float64 ``[n, C]``."""
        return softmax64(logits).sort(dim=1).values

    def attack(self, data: AttackData) -> float:
        """Fit the attacker on the protocol's training set; return the accuracy named by :attr:`report`."""
        from sklearn.model_selection import train_test_split

        data.require("retain", "test")
        forget, retain, test = data["forget"], data["retain"], data["test"]
        if len(forget) == 0:
            return float("nan")
        x_train, y_train, x_eval, y_eval = sorted_softmax_gbm_sets(
            forget.feature, retain.feature, test.feature, seed=self.seed
        )
        x_fit, _, y_fit, _ = train_test_split(x_train, y_train, test_size=0.01, shuffle=True, random_state=self.seed)
        model, self.backend_used = gbm_attacker(self.seed, self.backend)
        model.fit(x_fit, y_fit)
        log.info("sorted_softmax_gbm attack fitted with the %s backend", self.backend_used)
        self.last_train_accuracy = float(np.mean(model.predict(x_fit) == y_fit))
        if self.report == "train":
            return self.last_train_accuracy
        if self.report == "balanced":
            keep = balanced_subset(y_eval, self.seed)
            x_eval, y_eval = x_eval[keep], y_eval[keep]
        return float(np.mean(np.asarray(model.predict(x_eval)) == y_eval))


@register_attack("sorted_softmax_gbm_balanced")
class SortedSoftmaxGBMBalanced(SortedSoftmaxGBM):
    """:class:`SortedSoftmaxGBM` scored on a balanced evaluation set: ``mia/sorted_softmax_gbm_balanced_acc``.

    The larger side of the evaluation set (usually D_f) is subsampled without replacement (seeded) to the size of
    the smaller (a correction of the authors' member-heavy set). Direction: closer to the retrained model is
    better; ≈ 0.5 when D_f looks like unseen data.
    """

    name: ClassVar[str] = "sorted_softmax_gbm_balanced_acc"
    report: ClassVar[str] = "balanced"


@register_attack("sorted_softmax_gbm_train")
class SortedSoftmaxGBMTrain(SortedSoftmaxGBM):
    """Training accuracy of the :class:`SortedSoftmaxGBM` attacker (diagnostic): ``mia/sorted_softmax_gbm_train_acc``.

    Direction: none (``higher_is_better=None``); high values mean the model separates its training data from test
    data.
    """

    name: ClassVar[str] = "sorted_softmax_gbm_train_acc"
    report: ClassVar[str] = "train"
