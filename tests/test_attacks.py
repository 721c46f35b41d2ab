"""SVC-efficacy, loss-LR-CV and forget-vs-test attacks against NumPy / scikit-learn references on the same arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score
from sklearn.svm import SVC
from torch import Tensor

from lightning_unlearn.metrics import ATTACKS, MembershipAttack, build_attack
from lightning_unlearn.metrics.attacks import ForgetVsTestMIA, LossLRCVMIA, SVCConfidenceMIA

Splits = dict[str, tuple[Tensor, Tensor]]


# ---------------------------------------------------------------------------- independent references
def _np_softmax(logits: Tensor) -> np.ndarray:
    z = logits.numpy().astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _np_confidence(logits: Tensor, target: Tensor) -> np.ndarray:
    return _np_softmax(logits)[np.arange(len(target)), target.numpy()]


def _np_loss(logits: Tensor, target: Tensor) -> np.ndarray:
    z = logits.numpy().astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    log_norm = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return log_norm - z[np.arange(len(target)), target.numpy()]


def _np_balance(n_nonmembers: int, n_members: int, seed: int) -> np.ndarray:
    """Rows kept from ``[nonmembers, members]``: a seeded draw (default_rng([seed, 1])) from the larger group."""
    zeros, ones = np.arange(n_nonmembers), n_nonmembers + np.arange(n_members)
    n = min(n_nonmembers, n_members)
    rng = np.random.default_rng([seed, 1])
    if len(ones) > n:
        ones = rng.choice(ones, size=n, replace=False)
    if len(zeros) > n:
        zeros = rng.choice(zeros, size=n, replace=False)
    return np.sort(np.concatenate([ones, zeros]))


def _sk_svc_efficacy(splits: Splits, nonmember_split: str) -> float:
    retain = _np_confidence(*splits["retain"])
    test = _np_confidence(*splits[nonmember_split])
    n = min(len(retain), len(test))
    x = np.r_[retain[:n], test][:, None]
    y = np.r_[np.ones(n), np.zeros(len(test))]
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return float(1 - clf.predict(_np_confidence(*splits["forget"])[:, None]).mean())


def _sk_cv(forget: np.ndarray, test: np.ndarray, n_splits: int, cv_seed: int, balance_seed: int) -> float:
    x = np.r_[test, forget][:, None]
    y = np.r_[np.zeros(len(test)), np.ones(len(forget))]
    keep = _np_balance(len(test), len(forget), balance_seed)
    cv = StratifiedShuffleSplit(n_splits=n_splits, random_state=cv_seed)
    return float(np.mean(cross_val_score(LogisticRegression(), x[keep], y[keep], cv=cv, scoring="accuracy")))


def _sk_loss_lr_cv(splits: Splits, seed: int) -> float:
    return _sk_cv(_np_loss(*splits["forget"]), _np_loss(*splits["test"]), 10, cv_seed=0, balance_seed=seed)


def _sk_forget_vs_test(splits: Splits, seed: int) -> float:
    forget_logits, forget_target = splits["forget"]
    test_logits, test_target = splits["test"]
    mask = np.isin(test_target.numpy(), np.unique(forget_target.numpy()))
    forget = np.clip(_np_loss(forget_logits, forget_target), -100, 100)
    test = np.clip(_np_loss(test_logits[mask], test_target[mask]), -100, 100)
    return _sk_cv(forget, test, 5, cv_seed=seed, balance_seed=seed)


# ---------------------------------------------------------------------------- data
def _random_splits(seed: int, sizes: dict[str, int], classes: int = 5) -> Splits:
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for i, (name, size) in enumerate(sizes.items()):
        logits = torch.randn(size, classes, generator=generator) * (1.5 + 0.5 * i)
        out[name] = (logits, torch.randint(0, classes, (size,), generator=generator))
    return out


def _feed(metric: MembershipAttack, splits: Splits, batch: int = 7, seed: int = 0) -> None:
    """Feed every split in shuffled batches (order must not matter)."""
    generator = torch.Generator().manual_seed(seed)
    for name in sorted(splits, reverse=True):
        logits, target = splits[name]
        perm = torch.randperm(len(target), generator=generator)
        for start in range(0, len(perm), batch):
            rows = perm[start : start + batch]
            metric.update(name, logits[rows], target[rows], rows)


def _at(
    confidence_logit: float, n: int, classes: int = 4, seed: int = 0, jitter: float = 0.05
) -> tuple[Tensor, Tensor]:
    """``n`` samples whose true-class logit is ``confidence_logit`` above the others (plus small jitter)."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, (n,), generator=generator)
    logits = torch.randn(n, classes, generator=generator) * jitter
    logits[torch.arange(n), target] += confidence_logit
    return logits.double(), target


# ---------------------------------------------------------------------------- registry
def test_registered_names_and_directions():
    expected = {
        "svc_confidence": (SVCConfidenceMIA, "svc_confidence_efficacy", True),
        "loss_lr_cv": (LossLRCVMIA, "loss_lr_cv_acc", None),
        "forget_vs_test": (ForgetVsTestMIA, "forget_vs_test_cv_acc", None),
    }
    for key, (cls, name, direction) in expected.items():
        assert ATTACKS[key] is cls
        metric = build_attack(key, seed=3)
        assert isinstance(metric, cls)
        assert metric.name == name and metric.higher_is_better is direction and metric.seed == 3
    assert SVCConfidenceMIA.required_splits() == ("forget", "retain", "test")
    assert LossLRCVMIA.required_splits() == ("forget", "test")
    assert ForgetVsTestMIA.required_splits() == ("forget", "test")


# -------------------------------------------------------------------------------- SVC efficacy
@pytest.mark.parametrize(("seed", "sizes"), [(0, (31, 57, 43)), (1, (23, 19, 41))])
def test_svc_efficacy_equals_sklearn(seed, sizes):
    splits = _random_splits(seed, dict(zip(("forget", "retain", "test"), sizes, strict=True)))
    metric = SVCConfidenceMIA()
    _feed(metric, splits)
    value = metric.compute()
    assert value.dtype == torch.float64
    assert value.item() == _sk_svc_efficacy(splits, "test")


def test_svc_efficacy_uses_test_retain_in_class_scenarios():
    splits = _random_splits(2, {"forget": 29, "retain": 61, "test": 47, "test_retain": 37})
    metric = SVCConfidenceMIA()
    _feed(metric, splits)
    assert metric.compute().item() == _sk_svc_efficacy(splits, "test_retain")
    # members are the first n retain samples in index order: later retain rows do not matter
    altered = dict(splits)
    retain_logits, retain_target = splits["retain"]
    retain_logits = retain_logits.clone()
    retain_logits[37:] = 50.0 * torch.randn(24, 5)
    altered["retain"] = (retain_logits, retain_target)
    other = SVCConfidenceMIA()
    _feed(other, altered, seed=5)
    assert other.compute().item() == metric.compute().item()


def test_svc_efficacy_separable_case():
    members, nonmembers = _at(8.0, 40, seed=1), _at(0.0, 40, seed=2)
    for forget, expected in ((_at(8.0, 15, seed=3), 0.0), (_at(0.0, 15, seed=4), 1.0)):
        metric = SVCConfidenceMIA()
        _feed(metric, {"forget": forget, "retain": members, "test": nonmembers})
        assert metric.compute().item() == expected


def test_svc_efficacy_edge_cases():
    splits = _random_splits(0, {"forget": 5, "retain": 9, "test": 7})
    metric = SVCConfidenceMIA()
    _feed(metric, {"retain": splits["retain"], "test": splits["test"]})
    assert math.isnan(metric.compute().item())
    metric = SVCConfidenceMIA()
    _feed(metric, {"forget": splits["forget"], "test": splits["test"]})
    with pytest.raises(ValueError, match="retain"):
        metric.compute()


# -------------------------------------------------------------------------------- loss LR, CV
@pytest.mark.parametrize(("seed", "sizes"), [(0, (31, 57)), (4, (66, 40))])
def test_loss_lr_cv_equals_sklearn(seed, sizes):
    splits = _random_splits(seed, dict(zip(("forget", "test"), sizes, strict=True)))
    metric = LossLRCVMIA(seed=seed)
    _feed(metric, splits)
    assert metric.compute().item() == _sk_loss_lr_cv(splits, seed)


# -------------------------------------------------------------------------------- forget vs test
@pytest.mark.parametrize("seed", [0, 7])
def test_forget_vs_test_equals_sklearn_with_class_restriction_and_clipping(seed):
    generator = torch.Generator().manual_seed(seed)
    forget_logits = torch.randn(30, 6, generator=generator) * 2.0
    forget_target = torch.randint(0, 2, (30,), generator=generator)  # forgotten classes 0 and 1
    test_logits = torch.randn(80, 6, generator=generator) * 3.0
    test_target = torch.randint(0, 6, (80,), generator=generator)
    test_logits[:10] *= 100.0  # some losses far above the clip
    splits = {"forget": (forget_logits, forget_target), "test": (test_logits, test_target)}
    assert _np_loss(test_logits, test_target).max() > 100.0
    metric = ForgetVsTestMIA(seed=seed)
    _feed(metric, splits)
    data = metric.canonical_data()
    assert data["test"].feature.max() <= 100.0
    assert metric.compute().item() == _sk_forget_vs_test(splits, seed)
    # the restriction matters: test samples of other classes are ignored
    kept = np.isin(test_target.numpy(), [0, 1])
    other = ForgetVsTestMIA(seed=seed)
    _feed(other, {"forget": splits["forget"], "test": (test_logits[kept], test_target[kept])})
    assert other.compute().item() == metric.compute().item()


# ------------------------------------------------------------------------- CV attacks: worked checks
@pytest.mark.parametrize("cls", [LossLRCVMIA, ForgetVsTestMIA])
def test_cv_attacks_separable_case(cls):
    forget, test = _at(9.0, 60, seed=1), _at(-6.0, 70, seed=2)  # loss ≈ 0 vs loss ≈ 6
    metric = cls()
    _feed(metric, {"forget": forget, "test": test})
    assert metric.compute().item() == 1.0


@pytest.mark.parametrize("cls", [LossLRCVMIA, ForgetVsTestMIA])
def test_cv_attacks_identical_distributions_near_half(cls):
    logits, target = _at(1.0, 1000, seed=3, jitter=1.5)
    splits = {"forget": (logits[:500], target[:500]), "test": (logits[500:], target[500:])}
    metric = cls()
    _feed(metric, splits, batch=100)
    assert metric.compute().item() == pytest.approx(0.5, abs=0.07)


@pytest.mark.parametrize("cls", [LossLRCVMIA, ForgetVsTestMIA])
def test_cv_attacks_edge_cases(cls):
    splits = _random_splits(0, {"forget": 12, "test": 15})
    metric = cls()
    _feed(metric, {"test": splits["test"]})
    assert math.isnan(metric.compute().item())
    metric = cls()
    _feed(metric, {"forget": splits["forget"]})
    with pytest.raises(ValueError, match="test"):
        metric.compute()
    metric = cls()  # balanced set too small for a 2-class stratified test fold
    _feed(metric, {"forget": (splits["forget"][0][:3], splits["forget"][1][:3]), "test": splits["test"]})
    assert math.isnan(metric.compute().item())


def test_forget_vs_test_no_test_sample_of_forget_classes_is_nan():
    forget = (torch.randn(10, 4), torch.zeros(10, dtype=torch.long))
    test = (torch.randn(10, 4), torch.ones(10, dtype=torch.long))
    metric = ForgetVsTestMIA()
    _feed(metric, {"forget": forget, "test": test})
    assert math.isnan(metric.compute().item())
