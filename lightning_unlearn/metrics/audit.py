"""Privacy audits across many models: per-example ε̂ statistics of two published protocols.

Both audits compare, for every forget example, the distribution of a score over ``M`` retrained models (trained from
scratch without the forget set) with its distribution over ``M`` unlearned models, and turn the best distinguishing
rule's error rates into a differential-privacy style ε̂. Lower ε̂ means the unlearned models look more like the
retrained ones. Everything here is plain NumPy in float64; torch tensors are accepted and copied to the CPU.

- "Forget with Precision" (M. Krähenmann et al., ETH Zürich, 2023; :func:`per_example_epsilon`,
  :func:`summarize_epsilon`): hinge scores (:func:`hinge_scores`), a per-example Gaussian likelihood-ratio test,
  every distinct pooled score as a threshold, δ = 0.05 by default (δ = 0, the default of the authors' estimator,
  is accepted too). ε̂ is ``+inf`` under perfect separation and ``nan`` when no threshold survives; the largest
  finite value is :func:`epsilon_ceiling`.
- The NeurIPS-2023 machine unlearning challenge (E. Triantafillou et al., "Are we making progress in unlearning?
  Findings from the first NeurIPS unlearning competition", 2024; :func:`challenge_epsilon`,
  :func:`forget_quality`, :func:`challenge_score`): logit-scaled confidences (:func:`logit_confidence`),
  single-threshold and interval decision rules on fixed grids, δ = 1e-5, ε̂ clipped to ``[0, 50]``.

Array conventions: per-model scores are ``[M, S]`` (models × forget examples); logits are ``[M, S, C]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lightning_unlearn.validation import check_fraction, is_integer

__all__ = [
    "CHALLENGE_DELTA",
    "CHALLENGE_EPSILON_CAP",
    "FWP_DELTA",
    "EpsilonSummary",
    "challenge_epsilon",
    "challenge_score",
    "epsilon_ceiling",
    "forget_quality",
    "hinge_scores",
    "logit_confidence",
    "per_example_epsilon",
    "summarize_epsilon",
]

#: Default δ of the "Forget with Precision" audit.
FWP_DELTA = 0.05
#: δ of the NeurIPS-2023 challenge metric.
CHALLENGE_DELTA = 1e-5
#: Largest ε̂ the challenge metric reports; perfect separation and peaky distributions map here.
CHALLENGE_EPSILON_CAP = 50.0

#: Floor on the fitted standard deviations of the "Forget with Precision" audit (library decision).
_SIGMA_FLOOR = 1e-12
#: Added to both rates inside the logarithms of the "Forget with Precision" audit.
_RATE_EPS = 1e-8
#: Added to both probabilities inside the logarithms of the logit-scaled confidence of the challenge.
_CONF_EPS = 1e-45
#: Threshold grid density of the challenge (thresholds per unit of score).
_THRESHOLDS_PER_UNIT = 100
#: Margin of the interval-rule grids of the challenge.
_BUFFER = 2.0
#: Number of left thresholds per right threshold in the challenge: ``ceil(2 * buffer * 100)``.
_NUM_LEFT = 400
#: Range ratio below which the challenge declares a distribution peaky and returns the cap.
_PEAKY_RATIO = 0.01
#: Soft limit on the elements of the per-chunk work arrays of :func:`challenge_epsilon`.
_CHUNK_ELEMENTS = 4_000_000


# ---------------------------------------------------------------------------------------------------------------
# Scores from logits
# ---------------------------------------------------------------------------------------------------------------


def hinge_scores(logits: npt.ArrayLike, labels: npt.ArrayLike) -> np.ndarray:
    """Hinge score ``z_y - max_{c != y} z_c`` of every model on every example ("Forget with Precision").

    Args:
        logits: Logits of shape ``[M, S, C]`` (any leading dimensions before ``[S, C]`` work), ``C >= 2``.
            NumPy arrays or torch tensors.
        labels: Integer labels of shape ``[S]`` in ``[0, C)``.

    Returns:
        Float64 hinge scores of shape ``[M, S]`` (the leading dimensions of ``logits``).

    Raises:
        ValueError: If the shapes do not match, ``C < 2``, a label is out of range, or a logit is not finite.
    """
    z, y = _logits_and_labels(logits, labels)
    true = np.take_along_axis(z, np.broadcast_to(y[:, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
    others = np.where(_one_hot(y, z.shape), -np.inf, z).max(axis=-1)
    return true - others


def logit_confidence(logits: npt.ArrayLike, labels: npt.ArrayLike) -> np.ndarray:
    """Logit-scaled confidence ``ln(p_y + 1e-45) - ln(sum_{c != y} p_c + 1e-45)`` of the challenge.

    The logits are promoted to float64 and the largest logit is subtracted before the softmax, as in the official
    ``compute_logit_scaled_confidence`` (which takes the softmax in float64 after exponentiating in the input dtype).

    Args:
        logits: Logits of shape ``[M, S, C]`` (any leading dimensions before ``[S, C]`` work), ``C >= 2``.
            NumPy arrays or torch tensors.
        labels: Integer labels of shape ``[S]`` in ``[0, C)``.

    Returns:
        Float64 confidences of shape ``[M, S]`` (the leading dimensions of ``logits``).

    Raises:
        ValueError: If the shapes do not match, ``C < 2``, a label is out of range, or a logit is not finite.
    """
    z, y = _logits_and_labels(logits, labels)
    z = z - z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    mask = _one_hot(y, z.shape)
    p_true = np.where(mask, probs, 0.0).sum(axis=-1)
    p_wrong = np.where(mask, 0.0, probs).sum(axis=-1)
    return np.log(p_true + _CONF_EPS) - np.log(p_wrong + _CONF_EPS)


# ---------------------------------------------------------------------------------------------------------------
# "Forget with Precision"
# ---------------------------------------------------------------------------------------------------------------


def per_example_epsilon(retrained: npt.ArrayLike, unlearned: npt.ArrayLike, delta: float = FWP_DELTA) -> np.ndarray:
    """Per-example ε̂ of "Forget with Precision" from hinge scores of retrained and unlearned models.

    For every example ``s``: fit ``N(mu_R, sigma_R)`` to the ``M`` retrained scores and ``N(mu_U, sigma_U)`` to the
    ``M`` unlearned ones (mean and population standard deviation, sigma floored at ``1e-12``); score all ``2M``
    values by the log density ratio ``L(h) = ln N(h; mu_U, sigma_U) - ln N(h; mu_R, sigma_R)``; call the retrained
    group positive if its median ``e^L`` is strictly greater than the unlearned group's (else the unlearned group);
    and sweep every distinct pooled score ``t`` as a threshold (positive iff ``L >= t``). Then:

    - some ``t`` with ``FPR = FNR = 0`` gives ``+inf``;
    - thresholds where exactly one of ``FPR``, ``FNR`` is 0 are dropped;
    - the others give ``max(ln(1 - delta - FPR + 1e-8) - ln(FNR + 1e-8), ln(1 - delta - FNR + 1e-8) -
      ln(FPR + 1e-8))``, a logarithm of a negative number being ignored;
    - ε̂ is the maximum over the surviving thresholds, ``nan`` if none survives. It is not clipped at 0.

    With ``delta = 0`` the values are exactly those of the authors' estimator at its default δ.

    Direction: lower = the unlearned models are harder to tell apart from the retrained ones (more forgotten).

    Args:
        retrained: Scores (hinge values, :func:`hinge_scores`) of shape ``[M, S]`` of the ``M`` retrained models.
        unlearned: Scores of shape ``[M, S]`` of the ``M`` unlearned models.
        delta: The δ of the (ε, δ) bound, in ``[0, 1)`` (0.05 in the paper's tables, 0 the default of the
            authors' estimator).

    Returns:
        Float64 ε̂ of shape ``[S]``; ``+inf`` (perfectly separable), ``nan`` (undefined) or finite, possibly
        slightly negative. The largest finite value is ``epsilon_ceiling(M, delta)``.

    Raises:
        ValueError: If the arrays are not 2-D of the same shape, ``M < 2``, a score is not finite, or ``delta`` is
            outside ``[0, 1)``.
    """
    r, u = _score_pair(retrained, unlearned)
    _check_delta(delta)
    m = r.shape[0]

    mu_r, mu_u = r.mean(axis=0), u.mean(axis=0)
    sd_r = np.maximum(r.std(axis=0), _SIGMA_FLOOR)
    sd_u = np.maximum(u.std(axis=0), _SIGMA_FLOOR)
    log_sd_ratio = np.log(sd_r) - np.log(sd_u)

    def log_ratio(h: np.ndarray) -> np.ndarray:
        return log_sd_ratio + 0.5 * ((h - mu_r) / sd_r) ** 2 - 0.5 * ((h - mu_u) / sd_u) ** 2

    l_r, l_u = log_ratio(r), log_ratio(u)
    retrained_positive = _log_median(l_r) > _log_median(l_u)  # [S]

    scores = np.concatenate([l_r, l_u], axis=0)  # [2M, S]
    is_pos = np.concatenate(
        [np.broadcast_to(retrained_positive, r.shape), np.broadcast_to(~retrained_positive, u.shape)], axis=0
    )
    order = np.argsort(-scores, axis=0, kind="stable")  # descending scores
    sorted_scores = np.take_along_axis(scores, order, axis=0)
    tp = np.cumsum(np.take_along_axis(is_pos, order, axis=0), axis=0)  # predicted positive among the first i+1
    fp = np.arange(1, 2 * m + 1)[:, None] - tp
    # Row i is the threshold t = sorted_scores[i] only at the last member of a group of tied scores.
    distinct = np.ones_like(sorted_scores, dtype=bool)
    distinct[:-1] = sorted_scores[:-1] != sorted_scores[1:]

    fpr = fp / m
    fnr = (m - tp) / m
    perfect = distinct & (fp == 0) & (tp == m)
    one_zero = (fp == 0) ^ (tp == m)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps_1 = np.log(1 - delta - fpr + _RATE_EPS) - np.log(fnr + _RATE_EPS)
        eps_2 = np.log(1 - delta - fnr + _RATE_EPS) - np.log(fpr + _RATE_EPS)
    eps_t = np.fmax(eps_1, eps_2)  # nan only where both logarithms were undefined
    usable = distinct & ~one_zero & ~np.isnan(eps_t)

    eps = np.where(usable, eps_t, -np.inf).max(axis=0)
    eps = np.where(usable.any(axis=0), eps, np.nan)
    return np.where(perfect.any(axis=0), np.inf, eps)


def epsilon_ceiling(m: int, delta: float = FWP_DELTA) -> float:
    """Largest finite ε̂ of :func:`per_example_epsilon` with ``m`` models per group: ``ln(m (1 - delta) - 1)``.

    It is reached when one model of each group is misclassified (``FPR = FNR = 1/m``). Examples: 4.3175 for
    ``m = 80``, 3.6109 for ``m = 40``, 3.3810 for ``m = 32`` (δ = 0.05).

    Args:
        m: Number of models per group.
        delta: The δ of the audit, in ``[0, 1)``.

    Returns:
        The ceiling.

    Raises:
        ValueError: If ``delta`` is outside ``[0, 1)`` or ``m (1 - delta) <= 1``.
    """
    _check_delta(delta)
    arg = m * (1 - delta) - 1
    if not is_integer(m, numpy=True) or arg <= 0:
        raise ValueError(f"m must be an integer with m * (1 - delta) > 1, got m={m!r}, delta={delta}")
    return math.log(arg)


@dataclass(frozen=True)
class EpsilonSummary:
    """Aggregate of per-example ε̂ values of :func:`per_example_epsilon` (``audit/eps_*``).

    Attributes:
        median: Median over examples ignoring ``nan``, ``+inf`` included (``audit/eps_median``); ``nan`` if every
            example is undefined. Lower = more forgotten.
        inf_frac: Share of all examples with ε̂ = ``+inf`` (``audit/eps_inf_frac``).
        undefined_frac: Share of all examples with ε̂ = ``nan`` (``audit/eps_undefined_frac``).
        ceiling: Largest finite ε̂, ``ln(m (1 - delta) - 1)`` (``audit/eps_ceiling``).
        m: Number of models per group.
    """

    median: float
    inf_frac: float
    undefined_frac: float
    ceiling: float
    m: int

    def as_dict(self, prefix: str = "audit/") -> dict[str, float]:
        """The logged values keyed by metric name.

        Args:
            prefix: Prepended to every key.

        Returns:
            ``{prefix + "eps_median": ..., "eps_inf_frac", "eps_undefined_frac", "eps_ceiling"}``.
        """
        return {
            f"{prefix}eps_median": self.median,
            f"{prefix}eps_inf_frac": self.inf_frac,
            f"{prefix}eps_undefined_frac": self.undefined_frac,
            f"{prefix}eps_ceiling": self.ceiling,
        }


def summarize_epsilon(eps: npt.ArrayLike, m: int, delta: float = FWP_DELTA) -> EpsilonSummary:
    """Aggregate per-example ε̂ of :func:`per_example_epsilon` into the logged statistics.

    Direction: a lower median (and a lower ``+inf`` share) = more forgotten.

    Args:
        eps: Per-example ε̂ of shape ``[S]`` from :func:`per_example_epsilon` (``nan`` and ``+inf`` allowed).
        m: Number of models per group the values were computed with.
        delta: The δ they were computed with, in ``[0, 1)`` (sets the ceiling ``ln(m (1 - delta) - 1)``).

    Returns:
        The :class:`EpsilonSummary`.

    Raises:
        ValueError: If ``eps`` is not a non-empty 1-D array, contains ``-inf``, ``delta`` is outside ``[0, 1)``
            or ``m (1 - delta) <= 1``.
    """
    e = _as_float64(eps)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"eps must be a non-empty 1-D array, got shape {e.shape}")
    if np.any(e == -np.inf):
        raise ValueError("eps must not contain -inf")
    ceiling = epsilon_ceiling(m, delta)
    undefined = np.isnan(e)
    defined = e[~undefined]
    median = float(np.median(defined)) if defined.size else math.nan
    return EpsilonSummary(
        median=median,
        inf_frac=float(np.mean(e == np.inf)),
        undefined_frac=float(np.mean(undefined)),
        ceiling=ceiling,
        m=int(m),
    )


# ---------------------------------------------------------------------------------------------------------------
# NeurIPS-2023 challenge
# ---------------------------------------------------------------------------------------------------------------


def challenge_epsilon(retrained: npt.ArrayLike, unlearned: npt.ArrayLike, delta: float = CHALLENGE_DELTA) -> np.ndarray:
    """Per-example ε̂ of the NeurIPS-2023 unlearning challenge, clipped to ``[0, 50]``.

    For every example: the retrained group is positive if its median score is strictly greater than the unlearned
    group's (else the unlearned group). If the smaller of the two score ranges is below 1 % of the larger one the
    example gets 50 (both ranges 0: 0 for equal constants, else 50; library decision, the official code fails).
    Otherwise two rule families are evaluated:

    1. single threshold: ``t`` on ``linspace(lo, hi, ceil((hi - lo) * 100))`` over the pooled scores, positive iff
       ``score >= t``;
    2. interval: the group with the smaller range (the second one on equal ranges) is made positive, ``w`` its
       range; right thresholds ``t_r`` on ``linspace(min + w - 2, max + 2, ceil((max + 2 - (min + w - 2)) * 100))``
       of that group, for each ``t_r`` 400 left thresholds on ``linspace(t_r - w - 2, t_r - w + 2, 400)``;
       positive iff ``t_l <= score <= t_r``.

    Each rule with ``FPR = FNR = 0`` gives ``inf``; rules with exactly one of them 0 are dropped; the others give
    ``max(ln(1 - delta - FPR) - ln FNR, ln(1 - delta - FNR) - ln FPR)`` (undefined parts ignored, a rule with
    both undefined dropped) clipped below at 0. ε̂ is the maximum over kept rules, clipped to ``[0, 50]``.

    The rates are obtained by counting on sorted scores instead of the official element-wise comparison; each grid
    is reproduced value for value with ``numpy.linspace`` arithmetic (the official single-threshold grid uses
    ``torch.linspace``, which may differ in the last bit), and the rates are float64 (the official ones are
    float32).

    Args:
        retrained: Logit-scaled confidences (:func:`logit_confidence`) of shape ``[N, S]`` of ``N`` retrained models.
        unlearned: Confidences of shape ``[N, S]`` of ``N`` unlearned models.
        delta: The δ of the (ε, δ) bound, in ``[0, 1)``.

    Returns:
        Float64 ε̂ of shape ``[S]`` in ``[0, 50]``.

    Raises:
        ValueError: If the arrays are not 2-D of the same shape, ``N < 2``, a score is not finite, or ``delta`` is
            outside ``[0, 1)``.
        RuntimeError: If no rule survives for some example (the official code asserts at least one survives).
    """
    r, u = _score_pair(retrained, unlearned)
    _check_delta(delta)
    n, s = r.shape

    retrained_positive = np.median(r, axis=0) > np.median(u, axis=0)
    pos = np.where(retrained_positive, r, u).T  # [S, N]
    neg = np.where(retrained_positive, u, r).T
    pos_range = pos.max(axis=1) - pos.min(axis=1)
    neg_range = neg.max(axis=1) - neg.min(axis=1)
    largest = np.maximum(pos_range, neg_range)
    smallest = np.minimum(pos_range, neg_range)

    eps = np.full(s, CHALLENGE_EPSILON_CAP)
    constant = largest == 0
    eps[constant & (pos[:, 0] == neg[:, 0])] = 0.0
    peaky = ~constant & (smallest / np.where(constant, 1.0, largest) < _PEAKY_RATIO)

    todo = np.flatnonzero(~constant & ~peaky)
    table = _challenge_epsilon_table(n, delta)
    per_example = _THRESHOLDS_PER_UNIT * 4 * (2 * n + 1) + table.size
    chunk = max(1, _CHUNK_ELEMENTS // per_example)
    for start in range(0, todo.size, chunk):
        idx = todo[start : start + chunk]
        best = _challenge_best_rule(pos[idx], neg[idx], pos_range[idx], neg_range[idx], table)
        if np.any(best == -np.inf):
            bad = idx[best == -np.inf].tolist()
            raise RuntimeError(f"challenge_epsilon: every decision rule was dropped for example(s) {bad}")
        eps[idx] = best
    return np.clip(eps, 0.0, CHALLENGE_EPSILON_CAP)


def forget_quality(eps: npt.ArrayLike, n: int) -> float:
    """Forget quality ``F`` of the challenge: mean bucket points of the per-example ε̂.

    With ``eps_max = ceil(ln(n - 1))`` (7 for ``n = 512``), bucket ``k`` is ``[0.5 k, 0.5 k + 0.5)`` for
    ``k = 0, 1, ...`` while ``0.5 k + 0.5 <= eps_max``; an example in bucket ``k`` earns ``2^-k`` points and one
    with ε̂ beyond the last bucket earns 0.

    Args:
        eps: Per-example ε̂ of shape ``[S]`` from :func:`challenge_epsilon`.
        n: Number of models per group.

    Returns:
        ``F`` in ``[0, 1]``.

    Raises:
        ValueError: If ``eps`` is not a non-empty 1-D array without ``nan`` or ``n < 2``.
    """
    e = _as_float64(eps)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"eps must be a non-empty 1-D array, got shape {e.shape}")
    if np.any(np.isnan(e)):
        raise ValueError("eps must not contain nan")
    if not is_integer(n, numpy=True) or n < 2:
        raise ValueError(f"n (models per group) must be an integer >= 2, got {n!r}")
    eps_max = math.ceil(math.log(n - 1))
    points = np.zeros_like(e)
    assigned = np.zeros(e.shape, dtype=bool)
    bucket_start, bucket_points = 0.0, 1.0
    while bucket_start + 0.5 <= eps_max:
        in_bucket = ~assigned & (e < bucket_start + 0.5)
        points[in_bucket] = bucket_points
        assigned |= in_bucket
        bucket_start += 0.5
        bucket_points /= 2
    return float(points.mean())


def challenge_score(
    forget_quality: float,
    retain_acc_unlearned: npt.ArrayLike,
    retain_acc_retrained: npt.ArrayLike,
    test_acc_unlearned: npt.ArrayLike,
    test_acc_retrained: npt.ArrayLike,
) -> float:
    """Challenge score ``F * (RA_U / RA_R) * (TA_U / TA_R)`` (``audit/challenge_score``).

    Each accuracy may be a scalar or the per-model accuracies, which are averaged. Higher is better; a perfect
    method scores about 1.

    Args:
        forget_quality: ``F`` from :func:`forget_quality`.
        retain_acc_unlearned: Retain accuracy of the unlearned models.
        retain_acc_retrained: Retain accuracy of the retrained models (must be positive).
        test_acc_unlearned: Test accuracy of the unlearned models.
        test_acc_retrained: Test accuracy of the retrained models (must be positive).

    Returns:
        The score.

    Raises:
        ValueError: If a value is empty or not finite, or a retrained accuracy is not positive.
    """
    f = float(forget_quality)
    if not math.isfinite(f):
        raise ValueError(f"forget_quality must be finite, got {f}")
    ra_u = _mean_accuracy(retain_acc_unlearned, "retain_acc_unlearned")
    ra_r = _mean_accuracy(retain_acc_retrained, "retain_acc_retrained")
    ta_u = _mean_accuracy(test_acc_unlearned, "test_acc_unlearned")
    ta_r = _mean_accuracy(test_acc_retrained, "test_acc_retrained")
    if ra_r <= 0 or ta_r <= 0:
        raise ValueError(f"retrained accuracies must be positive, got retain={ra_r}, test={ta_r}")
    return f * (ra_u / ra_r) * (ta_u / ta_r)


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def _as_array(x: Any) -> np.ndarray:
    """NumPy view of an array-like or a (possibly CUDA, possibly low-precision) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()
        x = x.numpy()
    return np.asarray(x)


def _as_float64(x: Any) -> np.ndarray:
    return _as_array(x).astype(np.float64, copy=False)


def _check_delta(delta: float) -> None:
    """Accept ``delta`` in ``[0, 1)`` (0 included: the default of the "Forget with Precision" estimator)."""
    check_fraction("delta", delta, include_low=True, include_high=False, numpy=True)


def _score_pair(retrained: Any, unlearned: Any) -> tuple[np.ndarray, np.ndarray]:
    r, u = _as_float64(retrained), _as_float64(unlearned)
    for name, a in (("retrained", r), ("unlearned", u)):
        if a.ndim != 2:
            raise ValueError(f"{name} scores must have shape [models, examples], got shape {a.shape}")
    if r.shape != u.shape:
        raise ValueError(f"retrained and unlearned scores must have the same shape, got {r.shape} and {u.shape}")
    if r.shape[0] < 2:
        raise ValueError(f"at least 2 models per group are needed, got {r.shape[0]}")
    if r.shape[1] < 1:
        raise ValueError("at least one example is needed, got 0")
    for name, a in (("retrained", r), ("unlearned", u)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} scores must be finite (found nan or inf)")
    return r, u


def _logits_and_labels(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = _as_float64(logits)
    y = _as_array(labels)
    if z.ndim < 2:
        raise ValueError(f"logits must have shape [models, examples, classes], got shape {z.shape}")
    if z.shape[-1] < 2:
        raise ValueError(f"logits need at least 2 classes, got {z.shape[-1]}")
    if y.ndim != 1 or y.shape[0] != z.shape[-2]:
        raise ValueError(f"labels must have shape [{z.shape[-2]}] to match logits {z.shape}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise ValueError(f"labels must lie in [0, {z.shape[-1]}), got range [{y.min()}, {y.max()}]")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite (found nan or inf)")
    return z, y.astype(np.int64)


def _one_hot(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean ``[..., S, C]`` mask of the label entries, broadcast to ``shape``."""
    return np.broadcast_to(labels[:, None] == np.arange(shape[-1]), shape)


def _mean_accuracy(x: Any, name: str) -> float:
    a = _as_float64(x)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite scalar or non-empty array of accuracies")
    return float(a.mean())


def _log_median(log_values: np.ndarray) -> np.ndarray:
    """``ln`` of the median of ``exp(log_values)`` along axis 0; even counts average the two middle values."""
    m = log_values.shape[0]
    ordered = np.sort(log_values, axis=0)
    if m % 2:
        return ordered[m // 2]
    return np.logaddexp(ordered[m // 2 - 1], ordered[m // 2]) - math.log(2.0)


def _grid_value(start: np.ndarray, stop: np.ndarray, num: Any, j: np.ndarray, step: Any = None) -> np.ndarray:
    """Element ``j`` of ``numpy.linspace(start, stop, num)``, computed with the same float operations."""
    if step is None:
        step = (stop - start) / np.maximum(num - 1, 1)
    return np.where((j == num - 1) & (num > 1), stop, j * step + start)


def _count_grid_le(start: np.ndarray, stop: np.ndarray, num: Any, v: np.ndarray) -> np.ndarray:
    """Number of elements of ``linspace(start, stop, num)`` that are ``<= v`` (all arguments broadcast).

    An arithmetic estimate of the index is corrected against the exact grid values, so the count equals the
    element-wise comparison with the materialised grid (the grid is non-decreasing).
    """
    step = (stop - start) / np.maximum(num - 1, 1)
    safe_step = np.where(step > 0, step, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        estimate = np.floor((v - start) / safe_step) + 1
    count = np.clip(estimate, 0, num).astype(np.int64)
    while True:
        down = (count > 0) & (_grid_value(start, stop, num, np.maximum(count - 1, 0), step) > v)
        up = (count < num) & (_grid_value(start, stop, num, np.minimum(count, num - 1), step) <= v)
        if not (down.any() or up.any()):
            return count
        count = count - down + up


def _gap_hits(counts: np.ndarray, num: Any) -> np.ndarray:
    """Which gaps between sorted scores hold at least one grid value.

    ``counts[..., k]`` is the number of grid values ``<= v_k`` for sorted scores ``v_0 <= ... <= v_{K-1}``. Gap
    ``g`` is ``(v_{g-1}, v_g]`` (``v_{-1} = -inf``, ``v_K = +inf``): a threshold ``t`` in it has exactly ``g``
    scores ``< t``. Returns a boolean ``[..., K + 1]``.
    """
    lead = counts.shape[:-1] + (1,)
    ext = np.concatenate(
        [np.zeros(lead, dtype=np.int64), counts, np.broadcast_to(np.asarray(num, dtype=np.int64), lead)], axis=-1
    )
    return np.diff(ext, axis=-1) > 0


def _challenge_epsilon_table(n: int, delta: float) -> np.ndarray:
    """ε of a rule by its counts ``(FP, FN)`` out of ``n``, flattened as ``FP * (n + 1) + FN``.

    ``inf`` for perfect separation, ``-inf`` marks a dropped rule, otherwise the clipped-at-0 value.
    """
    rates = np.arange(n + 1) / n
    fpr, fnr = rates[:, None], rates[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        eps_1 = np.log(1 - delta - fpr) - np.log(fnr)
        eps_2 = np.log(1 - delta - fnr) - np.log(fpr)
    eps = np.maximum(np.fmax(eps_1, eps_2), 0.0)  # nan (both parts undefined) stays nan
    dropped = ((fpr == 0) ^ (fnr == 0)) | np.isnan(eps)
    table = np.where(dropped, -np.inf, eps)
    table[0, 0] = np.inf
    return table.reshape(-1)


def _mark_rules(achieved: np.ndarray, hits: np.ndarray, fp: np.ndarray, fn: np.ndarray, n: int) -> None:
    """Set ``achieved[c, FP * (n + 1) + FN]`` for every hit rule of every example ``c`` of the chunk."""
    rows = np.arange(achieved.shape[0]).reshape((-1,) + (1,) * (hits.ndim - 1))
    flat = rows * achieved.shape[1] + fp * (n + 1) + fn
    achieved.reshape(-1)[flat[hits]] = True


def _challenge_best_rule(
    pos: np.ndarray, neg: np.ndarray, pos_range: np.ndarray, neg_range: np.ndarray, table: np.ndarray
) -> np.ndarray:
    """Maximum rule ε over both rule families for a chunk of examples (``-inf`` if every rule is dropped).

    Every threshold lying in the same gap between consecutive sorted pooled scores gives the same counts, so each
    family is reduced to the gaps its grid hits; the counts then index the precomputed ``table``.
    """
    c, n = pos.shape
    pooled = np.concatenate([pos, neg], axis=1)  # [c, 2n]
    order = np.argsort(pooled, axis=1, kind="stable")
    v = np.take_along_axis(pooled, order, axis=1)  # ascending
    zero = np.zeros((c, 1), dtype=np.int64)
    p_less = np.concatenate([zero, np.cumsum(order < n, axis=1)], axis=1)  # positives among the g smallest
    q_less = np.arange(2 * n + 1) - p_less
    achieved = np.zeros((c, (n + 1) ** 2), dtype=bool)

    # Family 1: positive iff score >= t; t in gap g predicts the n - p_less[g] positives above it.
    lo, hi = v[:, :1], v[:, -1:]
    num_single = np.ceil((hi - lo) * _THRESHOLDS_PER_UNIT).astype(np.int64)
    hits = _gap_hits(_count_grid_le(lo, hi, num_single, v), num_single)
    _mark_rules(achieved, hits, n - q_less, p_less, n)

    # Family 2: the group with the smaller range (the second one on ties) is positive, t_l <= score <= t_r.
    swap = pos_range >= neg_range
    ipos = np.where(swap[:, None], neg, pos)
    ineg = np.where(swap[:, None], pos, neg)
    width = np.where(swap, neg_range, pos_range)[:, None]
    ip_less = np.where(swap[:, None], q_less, p_less)
    in_less = np.arange(2 * n + 1) - ip_less
    r_min = ipos.min(axis=1, keepdims=True) + width - _BUFFER
    r_max = ipos.max(axis=1, keepdims=True) + _BUFFER
    num_right = np.ceil((r_max - r_min) * _THRESHOLDS_PER_UNIT).astype(np.int64)
    j = np.minimum(np.arange(int(num_right.max())), num_right - 1)  # shorter grids repeat their last value
    t_r = _grid_value(r_min, r_max, num_right, j)  # [c, R]
    a_pos = (ipos[:, None, :] <= t_r[:, :, None]).sum(axis=2)  # [c, R]: positives <= t_r
    a_neg = (ineg[:, None, :] <= t_r[:, :, None]).sum(axis=2)
    left_start = ((t_r - width) - _BUFFER)[:, :, None]
    left_stop = ((t_r - width) + _BUFFER)[:, :, None]
    hits = _gap_hits(_count_grid_le(left_start, left_stop, _NUM_LEFT, v[:, None, :]), _NUM_LEFT)  # [c, R, 2n+1]
    # #{t_l <= x <= t_r} = #{x <= t_r} - #{x < t_l}, or 0 when t_l > t_r.
    tp = np.maximum(a_pos[:, :, None] - ip_less[:, None, :], 0)
    fp = np.maximum(a_neg[:, :, None] - in_less[:, None, :], 0)
    _mark_rules(achieved, hits, fp, n - tp, n)

    return np.where(achieved, table[None, :], -np.inf).max(axis=1)
