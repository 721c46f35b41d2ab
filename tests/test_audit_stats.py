"""Multi-model audit statistics: "Forget with Precision" per-example epsilon and the NeurIPS-2023 challenge score."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import det_curve

from lightning_unlearn.metrics import (
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
from lightning_unlearn.metrics.audit import _count_grid_le, _grid_value

# ---------------------------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------------------------


def _reference_fwp(retrained: np.ndarray, unlearned: np.ndarray, delta: float = 0.05) -> np.ndarray:
    """Per-example loop after the authors' scripts/attack.py: scikit-learn det_curve on the log density ratio."""
    out = []
    for s in range(retrained.shape[1]):
        r, u = retrained[:, s], unlearned[:, s]
        mu_r, sd_r = r.mean(), max(r.std(), 1e-12)
        mu_u, sd_u = u.mean(), max(u.std(), 1e-12)

        def log_ratio(h, mu_r=mu_r, sd_r=sd_r, mu_u=mu_u, sd_u=sd_u):
            return (np.log(sd_r) - np.log(sd_u)) + 0.5 * ((h - mu_r) / sd_r) ** 2 - 0.5 * ((h - mu_u) / sd_u) ** 2

        l_r, l_u = log_ratio(r), log_ratio(u)
        # Median of the ratio itself (fine for moderate log ratios).
        if np.median(np.exp(l_r)) > np.median(np.exp(l_u)):
            scores, y_true = np.concatenate([l_u, l_r]), np.r_[np.zeros(len(u)), np.ones(len(r))]
        else:
            scores, y_true = np.concatenate([l_r, l_u]), np.r_[np.zeros(len(r)), np.ones(len(u))]
        fpr, fnr, _ = det_curve(y_true, scores)
        if ((fpr == 0) & (fnr == 0)).any():
            out.append(np.inf)
            continue
        keep = ~((fpr == 0) ^ (fnr == 0))
        fpr, fnr = fpr[keep], fnr[keep]
        with np.errstate(divide="ignore", invalid="ignore"):
            eps = np.concatenate(
                [
                    np.log(1 - delta - fpr + 1e-8) - np.log(fnr + 1e-8),
                    np.log(1 - delta - fnr + 1e-8) - np.log(fpr + 1e-8),
                ]
            )
        out.append(np.nan if eps.size == 0 or np.isnan(eps).all() else np.nanmax(eps))
    return np.array(out)


def _reference_challenge(retrained: np.ndarray, unlearned: np.ndarray, delta: float = 1e-5) -> np.ndarray:
    """Element-wise re-implementation of the official metric.py logic in float64 (every rule materialised)."""
    out = []
    for s in range(retrained.shape[1]):
        r, u = retrained[:, s], unlearned[:, s]
        pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
        pos_diff, neg_diff = np.ptp(pos), np.ptp(neg)
        largest, smallest = max(pos_diff, neg_diff), min(pos_diff, neg_diff)
        if largest == 0:
            out.append(0.0 if pos[0] == neg[0] else 50.0)
            continue
        if smallest / largest < 0.01:
            out.append(50.0)
            continue
        # Single threshold.
        pooled = np.concatenate([pos, neg])
        lo, hi = pooled.min(), pooled.max()
        thr = np.linspace(lo, hi, int(np.ceil((hi - lo) * 100)))
        fpr_s = (neg[:, None] >= thr).mean(0)
        fnr_s = (pos[:, None] < thr).mean(0)
        # Interval.
        p2, n2 = (neg, pos) if pos_diff >= neg_diff else (pos, neg)
        width = smallest
        mn, mx = p2.min() + width - 2.0, p2.max() + 2.0
        right = np.linspace(mn, mx, int(np.ceil((mx - mn) * 100)))
        left = np.concatenate([np.linspace(t - width - 2.0, t - width + 2.0, 400) for t in right])
        right = np.repeat(right, 400)

        def inside(c, left=left, right=right):
            return (left <= c[:, None]) & (c[:, None] <= right)

        fpr_d = inside(n2).mean(0)
        fnr_d = (~inside(p2)).mean(0)
        fpr, fnr = np.concatenate([fpr_d, fpr_s]), np.concatenate([fnr_d, fnr_s])
        with np.errstate(divide="ignore", invalid="ignore"):
            eps = np.clip(
                np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)), 0, None
            )
        eps = np.where((fpr == 0) & (fnr == 0), np.inf, np.where((fpr * fnr == 0), np.nan, eps))
        assert not np.isnan(eps).all()
        out.append(float(np.nanmax(eps)))
    return np.clip(out, 0, 50)


# ---------------------------------------------------------------------------------------------------------------
# Scores from logits
# ---------------------------------------------------------------------------------------------------------------


def test_hinge_and_logit_confidence_hand_computed():
    logits = np.array([[[2.0, 1.0, 0.0], [0.5, 3.0, -1.0]], [[0.0, 0.0, 4.0], [1.0, 1.0, 1.0]]])  # [M=2, S=2, C=3]
    labels = np.array([0, 2])
    np.testing.assert_allclose(hinge_scores(logits, labels), [[1.0, -4.0], [-4.0, 0.0]])
    expected = [
        [2 - math.log(math.e + 1), -1 - math.log(math.exp(0.5) + math.exp(3.0))],
        [-math.log(math.exp(4.0) + 1), 1 - math.log(2 * math.e)],
    ]
    np.testing.assert_allclose(logit_confidence(logits, labels), expected, rtol=0, atol=1e-12)
    # [S, C] without a model axis, torch tensors, and a shift-invariant huge offset.
    np.testing.assert_allclose(
        logit_confidence(torch.tensor(logits[0] + 1000.0, dtype=torch.float32), torch.tensor(labels)),
        expected[0],
        atol=1e-4,
    )
    np.testing.assert_allclose(hinge_scores(torch.tensor(logits), torch.tensor(labels)), [[1.0, -4.0], [-4.0, 0.0]])
    # A very confident correct prediction saturates at ln(1) - ln(1e-45) instead of overflowing.
    assert logit_confidence(np.array([[[0.0, -500.0]]]), np.array([0]))[0, 0] == pytest.approx(-math.log(1e-45))


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (np.zeros((2, 3, 4)), np.array([0, 1]), "labels must have shape"),
        (np.zeros((2, 3, 4)), np.array([0, 1, 4]), "labels must lie"),
        (np.zeros((2, 3, 4)), np.array([0.0, 1.0, 2.0]), "integers"),
        (np.zeros((2, 3, 1)), np.array([0, 0, 0]), "at least 2 classes"),
        (np.full((2, 1, 2), np.nan), np.array([0]), "finite"),
    ],
)
def test_logit_scores_validation(logits, labels, match):
    for fn in (hinge_scores, logit_confidence):
        with pytest.raises(ValueError, match=match):
            fn(logits, labels)


# ---------------------------------------------------------------------------------------------------------------
# Forget with Precision
# ---------------------------------------------------------------------------------------------------------------


def test_fwp_worked_examples():
    retrained = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 2, 3]], dtype=float).T
    unlearned = np.array([[10, 11, 12, 13], [0.1, 1.1, 2.1, 3.1], [2.5, 3.5, 4.5, 6.5], [0, 1, 2, 3]], dtype=float).T
    eps = per_example_epsilon(retrained, unlearned)
    assert eps.shape == (4,)
    assert eps[0] == np.inf
    assert eps[1] == pytest.approx(0.587787, abs=1e-6)
    assert eps[1] == pytest.approx(math.log(1.8), abs=1e-6)
    assert eps[2] == pytest.approx(1.029619, abs=1e-6)
    assert eps[2] == pytest.approx(epsilon_ceiling(4), abs=1e-6)
    assert math.isnan(eps[3])

    summary = summarize_epsilon(eps, m=4)
    assert isinstance(summary, EpsilonSummary)
    assert summary.median == pytest.approx(1.029619, abs=1e-6)  # median of [0.5878, 1.0296, inf]
    assert summary.inf_frac == 0.25
    assert summary.undefined_frac == 0.25
    assert summary.ceiling == pytest.approx(math.log(2.8))
    assert summary.as_dict()["audit/eps_median"] == summary.median
    assert set(summary.as_dict()) == {
        "audit/eps_median",
        "audit/eps_inf_frac",
        "audit/eps_undefined_frac",
        "audit/eps_ceiling",
    }


def test_fwp_ceilings():
    assert epsilon_ceiling(80) == pytest.approx(4.3175, abs=1e-4)
    assert epsilon_ceiling(40) == pytest.approx(3.6109, abs=1e-4)
    assert epsilon_ceiling(32) == pytest.approx(3.3810, abs=1e-4)
    assert epsilon_ceiling(4, delta=0.05) == pytest.approx(math.log(2.8))


def test_fwp_median_handles_inf_and_all_nan():
    assert summarize_epsilon(np.array([1.0, np.inf, np.inf]), m=8).median == np.inf
    assert summarize_epsilon(np.array([1.0, 2.0, np.inf, np.nan]), m=8).median == 2.0
    all_nan = summarize_epsilon(np.array([np.nan, np.nan]), m=8)
    assert math.isnan(all_nan.median) and all_nan.undefined_frac == 1.0


def test_fwp_matches_det_curve_reference():
    rng = np.random.default_rng(0)
    m, s = 10, 60
    shift = rng.uniform(0, 3, size=s)
    scale = rng.uniform(0.5, 2, size=s)
    retrained = rng.normal(size=(m, s))
    unlearned = rng.normal(size=(m, s)) * scale + shift
    unlearned[:, :5] = np.round(unlearned[:, :5])  # ties within a group
    retrained[:, :5] = np.round(retrained[:, :5])
    ours = per_example_epsilon(retrained, unlearned)
    ref = _reference_fwp(retrained, unlearned)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert np.isfinite(ours).sum() > 30


def test_fwp_orientation_with_odd_count_and_negative_values():
    # Odd M: median is the middle value. Identical-but-shuffled groups may give slightly negative values.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(14, 200))
    eps = per_example_epsilon(x[:7], x[7:])
    ref = _reference_fwp(x[:7], x[7:])
    np.testing.assert_allclose(eps, ref, rtol=0, atol=1e-12)
    assert np.all(eps[np.isfinite(eps)] <= epsilon_ceiling(7) + 1e-9)


def test_fwp_synthetic_gaussians():
    rng = np.random.default_rng(2)
    m, s = 64, 300
    ceiling = epsilon_ceiling(m)
    # Same distribution: one pool of N(0, 1) draws shuffled between the two groups, and two independent draws.
    pool = rng.normal(size=(2 * m, s))
    shuffled = rng.permuted(pool, axis=0)
    for retrained, unlearned in ((shuffled[:m], shuffled[m:]), (rng.normal(size=(m, s)), rng.normal(size=(m, s)))):
        summary = summarize_epsilon(per_example_epsilon(retrained, unlearned), m)
        assert summary.inf_frac == 0.0 and summary.undefined_frac == 0.0
        assert 0.3 < summary.median < 1.0 < ceiling - 3  # small, near the finite-sample floor, far below 4.09
    # Means 10 sigma apart: perfectly separable for every example.
    far = per_example_epsilon(rng.normal(size=(m, s)), rng.normal(size=(m, s)) + 10.0)
    assert np.all(far == np.inf)
    # Monotone in the separation.
    medians = []
    for sep in (0.0, 0.5, 1.0, 2.0, 4.0):
        eps = per_example_epsilon(rng.normal(size=(m, s)), rng.normal(size=(m, s)) + sep)
        medians.append(summarize_epsilon(eps, m).median)
    assert np.all(np.diff(medians) > 0)
    assert medians[-1] >= ceiling - 1e-6  # at the ceiling or +inf


def test_fwp_accepts_tensors():
    r = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    assert np.array_equal(per_example_epsilon(r, r + 100), [np.inf, np.inf])


@pytest.mark.parametrize(
    ("retrained", "unlearned", "delta", "match"),
    [
        (np.zeros((4, 3)), np.zeros((4, 2)), 0.05, "same shape"),
        (np.zeros((1, 3)), np.zeros((1, 3)), 0.05, "at least 2 models"),
        (np.zeros(4), np.zeros(4), 0.05, r"shape \[models, examples\]"),
        (np.full((4, 3), np.nan), np.zeros((4, 3)), 0.05, "finite"),
        (np.zeros((4, 3)), np.zeros((4, 3)), -0.01, r"delta must be a number in \[0, 1\)"),
        (np.zeros((4, 3)), np.zeros((4, 3)), 1.0, r"delta must be a number in \[0, 1\)"),
        (np.zeros((4, 3)), np.zeros((4, 3)), float("nan"), "delta"),
    ],
)
def test_epsilon_validation(retrained, unlearned, delta, match):
    with pytest.raises(ValueError, match=match):
        per_example_epsilon(retrained, unlearned, delta=delta)
    with pytest.raises(ValueError, match=match):
        challenge_epsilon(retrained, unlearned, delta=delta)


def test_fwp_delta_zero_hand_computed():
    """δ = 0, the default of the authors' estimator: the worked examples by hand, with the +1e-8 in every log."""
    retrained = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 2, 3]], dtype=float).T
    unlearned = np.array([[10, 11, 12, 13], [0.1, 1.1, 2.1, 3.1], [2.5, 3.5, 4.5, 6.5], [0, 1, 2, 3]], dtype=float).T
    eps = per_example_epsilon(retrained, unlearned, delta=0.0)
    assert eps[0] == np.inf
    # Example 2: the unlearned group is positive; the best thresholds are L(2.1) (FPR 1/4, FNR 1/2; second term)
    # and L(1.1) (FPR 1/2, FNR 1/4; first term): ln(1 - 0 - 1/2 + 1e-8) - ln(1/4 + 1e-8) = ln 2 - 4e-8 (2e-8 + 2e-8).
    assert eps[1] == math.log(0.5 + 1e-8) - math.log(0.25 + 1e-8)
    assert eps[1] == pytest.approx(math.log(2.0), abs=1e-7) and eps[1] < math.log(2.0)
    # Example 3: FPR = FNR = 1/4 at L(3.5): ln(3/4 + 1e-8) - ln(1/4 + 1e-8), just below the δ = 0 ceiling ln 3.
    assert eps[2] == math.log(0.75 + 1e-8) - math.log(0.25 + 1e-8)
    assert epsilon_ceiling(4, delta=0.0) == math.log(3.0)
    assert math.isnan(eps[3])
    # δ only shifts 1 - δ: the same examples at δ = 0.05 give the published ln 1.8 and ln 2.8.
    assert per_example_epsilon(retrained, unlearned, delta=0.05)[1:3] == pytest.approx(
        [math.log(1.8), math.log(2.8)], abs=1e-6
    )

    summary = summarize_epsilon(eps, m=4, delta=0)
    assert summary.median == eps[2]  # median of [ln 2, ln 3, inf], nan excluded
    assert summary.inf_frac == 0.25 and summary.undefined_frac == 0.25
    assert summary.ceiling == math.log(3.0)
    assert epsilon_ceiling(80, delta=0.0) == pytest.approx(math.log(79.0))


def test_fwp_delta_zero_matches_det_curve_reference():
    rng = np.random.default_rng(3)
    m, s = 10, 60
    retrained = rng.normal(size=(m, s))
    unlearned = rng.normal(size=(m, s)) * rng.uniform(0.5, 2, size=s) + rng.uniform(0, 3, size=s)
    ours = per_example_epsilon(retrained, unlearned, delta=0.0)
    np.testing.assert_allclose(ours, _reference_fwp(retrained, unlearned, delta=0.0), rtol=0, atol=1e-12)
    assert np.isfinite(ours).sum() > 30
    # A larger δ can only lower every finite value.
    at_005 = per_example_epsilon(retrained, unlearned, delta=0.05)
    finite = np.isfinite(ours) & np.isfinite(at_005)
    assert np.all(at_005[finite] < ours[finite])


def test_audit_command_accepts_delta_zero(tmp_path):
    from lightning_unlearn.privacy_audit import build_parser, summarise

    ns = build_parser().parse_args(["--delta", "0", "--challenge-delta", "0"])
    assert ns.delta == 0.0 and ns.challenge_delta == 0.0
    rng = np.random.default_rng(4)
    m, s, c = 4, 6, 3
    labels = torch.arange(s) % c

    def evaluation(shift: float) -> dict:
        logits = torch.from_numpy(rng.normal(size=(s, c)))
        logits[torch.arange(s), labels] += shift
        return {"forget_logits": logits, "retain_acc": 0.9, "test_acc": 0.8}

    retrained = [evaluation(0.0) for _ in range(m)]
    subjects = [evaluation(1.0) for _ in range(m)]
    data = {"forget_y": labels, "forget_index": torch.arange(s)}
    result = summarise(retrained, subjects, data, ns.delta, ns.challenge_delta, tmp_path)
    assert result.summary["delta"] == 0.0
    assert result.summary["audit/eps_ceiling"] == math.log(m - 1)
    hinge_r = hinge_scores(np.stack([r["forget_logits"].numpy() for r in retrained]), labels.numpy())
    hinge_u = hinge_scores(np.stack([u["forget_logits"].numpy() for u in subjects]), labels.numpy())
    np.testing.assert_array_equal(result.epsilon, per_example_epsilon(hinge_r, hinge_u, delta=0.0))
    assert (tmp_path / "per_example.csv").exists()


def test_summary_and_ceiling_validation():
    with pytest.raises(ValueError, match="m must be"):
        epsilon_ceiling(1)
    with pytest.raises(ValueError, match="delta"):
        epsilon_ceiling(10, delta=1.5)
    with pytest.raises(ValueError, match="1-D"):
        summarize_epsilon(np.zeros((2, 2)), m=4)
    with pytest.raises(ValueError, match="-inf"):
        summarize_epsilon(np.array([-np.inf]), m=4)


# ---------------------------------------------------------------------------------------------------------------
# NeurIPS-2023 challenge
# ---------------------------------------------------------------------------------------------------------------


def test_challenge_worked_example_n8():
    retrained = np.tile(np.arange(8.0)[:, None], (1, 3))
    unlearned = np.stack([np.arange(8.0), np.arange(8.0) + 100, np.full(8, 5.0)], axis=1)
    eps = challenge_epsilon(retrained, unlearned)
    np.testing.assert_array_equal(eps, [0.0, 50.0, 50.0])
    f = forget_quality(eps, n=8)
    assert f == pytest.approx(1 / 3)
    assert challenge_score(f, 0.9, 1.0, 0.8, 1.0) == pytest.approx(0.24)
    # Per-model accuracies are averaged.
    assert challenge_score(f, [0.8, 1.0], [1.0, 1.0], [0.8], [0.9, 1.1]) == pytest.approx(0.24)


def test_challenge_worked_example_n4():
    retrained = np.arange(4.0)[:, None]
    eps = challenge_epsilon(retrained, retrained + 0.5)
    assert eps[0] == pytest.approx(0.693127, abs=1e-6)
    assert eps[0] == pytest.approx(math.log((0.5 - 1e-5) / 0.25), abs=1e-12)
    assert forget_quality(eps, n=4) == 0.5  # bucket [0.5, 1)


def test_challenge_constant_groups():
    const = np.full((6, 1), 3.0)
    assert challenge_epsilon(const, const)[0] == 0.0
    assert challenge_epsilon(const, const + 1)[0] == 50.0
    # One constant group against a spread one: peaky.
    assert challenge_epsilon(np.arange(6.0)[:, None], const)[0] == 50.0


def test_challenge_matches_elementwise_reference():
    rng = np.random.default_rng(3)
    n, s = 8, 12
    retrained = rng.normal(size=(n, s)) * rng.uniform(0.3, 3, size=s)
    unlearned = rng.normal(size=(n, s)) * rng.uniform(0.3, 3, size=s) + rng.uniform(-1, 3, size=s)
    # Values on a coarse lattice so scores coincide with each other and with grid points.
    retrained[:, :4] = np.round(retrained[:, :4] * 4) / 4
    unlearned[:, :4] = np.round(unlearned[:, :4] * 4) / 4
    unlearned[:, 4] = retrained[:, 4]  # identical groups: equal ranges, swapped roles
    ours = challenge_epsilon(retrained, unlearned)
    ref = _reference_challenge(retrained, unlearned)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert len(set(np.round(ours, 6))) > 4  # not a degenerate comparison


def test_grid_counts_match_linspace():
    rng = np.random.default_rng(4)
    for _ in range(20):
        start = rng.normal() * 10
        stop = start + rng.uniform(0.001, 7)
        num = int(rng.integers(1, 500))
        grid = np.linspace(start, stop, num)
        np.testing.assert_array_equal(_grid_value(np.float64(start), np.float64(stop), num, np.arange(num)), grid)
        # Query the grid points themselves, their neighbours and random points.
        queries = np.concatenate([grid, np.nextafter(grid, -np.inf), rng.uniform(start - 1, stop + 1, 50)])
        expected = (grid[None, :] <= queries[:, None]).sum(axis=1)
        np.testing.assert_array_equal(_count_grid_le(np.float64(start), np.float64(stop), num, queries), expected)


def test_challenge_synthetic_gaussians_and_speed():
    rng = np.random.default_rng(5)
    n, s = 32, 500
    same = challenge_epsilon(rng.normal(size=(n, s)), rng.normal(size=(n, s)))
    shifted = challenge_epsilon(rng.normal(size=(n, s)), rng.normal(size=(n, s)) + 1.0)
    start = time.perf_counter()
    far = challenge_epsilon(rng.normal(size=(n, s)), rng.normal(size=(n, s)) + 10.0)
    elapsed = time.perf_counter() - start
    assert np.all((same >= 0) & (same <= 50)) and np.all(far == 50.0)
    assert np.median(same) < np.median(shifted) < math.ceil(math.log(n - 1))
    assert forget_quality(same, n) > forget_quality(shifted, n) > forget_quality(far, n) == 0.0
    assert elapsed < 10.0  # about 0.5 s on one CPU core


def test_forget_quality_buckets():
    # N = 512: eps_max = 7, buckets [0, 0.5), [0.5, 1), ..., [6.5, 7).
    eps = np.array([0.0, 0.49, 0.5, 1.0, 6.9, 7.0, 50.0])
    expected = [1, 1, 0.5, 0.25, 2.0**-13, 0, 0]
    assert forget_quality(eps, n=512) == pytest.approx(np.mean(expected))
    assert forget_quality(np.zeros(3), n=2) == 0.0  # eps_max = ceil(ln 1) = 0: no bucket
    with pytest.raises(ValueError, match="nan"):
        forget_quality(np.array([np.nan]), n=8)
    with pytest.raises(ValueError, match="n"):
        forget_quality(np.zeros(2), n=1)
    with pytest.raises(ValueError, match="positive"):
        challenge_score(0.5, 0.9, 0.0, 0.8, 1.0)
    with pytest.raises(ValueError, match="finite"):
        challenge_score(0.5, [np.nan], 1.0, 0.8, 1.0)
