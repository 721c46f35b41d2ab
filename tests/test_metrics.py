"""Metrics against independent NumPy / scikit-learn computations, and under 2-process gloo."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from lightning_unlearn.metrics import (
    ATTACKS,
    AttackData,
    EntropyMIA,
    MembershipAttack,
    SplitAccuracy,
    available_attacks,
    build_attack,
    entropy,
    per_sample_loss,
    register_attack,
    softmax64,
    true_class_confidence,
)

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent


def _np_entropy(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


def _sklearn_member_rate(forget: np.ndarray, retain: np.ndarray, test: np.ndarray) -> float:
    """Independent entropy MIA: entropies of retain (1) vs test (0), LR(C=2, balanced, lbfgs), share of forget = 1."""
    x = np.concatenate([_np_entropy(retain), _np_entropy(test)])[:, None]
    y = np.r_[np.ones(len(retain)), np.zeros(len(test))]
    model = LogisticRegression(C=2.0, class_weight="balanced", solver="lbfgs").fit(x, y)
    return float(np.mean(model.predict(_np_entropy(forget)[:, None]) == 1))


def _random_splits(seed: int, sizes=(31, 57, 43), classes: int = 5) -> dict[str, tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, size, scale in zip(("forget", "retain", "test"), sizes, (2.5, 3.0, 1.5), strict=True):
        logits = torch.randn(size, classes, generator=generator) * scale
        out[name] = (logits, torch.randint(0, classes, (size,), generator=generator))
    return out


def _feed(metric: MembershipAttack, splits: dict[str, tuple[Tensor, Tensor]], batch: int = 7, seed: int = 0) -> None:
    """Feed every split in shuffled batches (order must not matter)."""
    generator = torch.Generator().manual_seed(seed)
    for name in ("test", "forget", "retain"):
        logits, target = splits[name]
        perm = torch.randperm(len(target), generator=generator)
        for start in range(0, len(perm), batch):
            rows = perm[start : start + batch]
            metric.update(name, logits[rows], target[rows], rows)


# ---------------------------------------------------------------------------- accuracy
def test_split_accuracy_matches_numpy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(53, 4, generator=generator)
    target = torch.randint(0, 4, (53,), generator=generator)
    metric = SplitAccuracy()
    for start in range(0, 53, 10):  # last batch partial
        metric.update(logits[start : start + 10], target[start : start + 10])
    expected = np.mean(np.argmax(logits.numpy(), axis=1) == target.numpy())
    value = metric.compute()
    assert value.dtype == torch.float64
    assert float(value) == expected
    assert metric.correct.dtype == torch.int64 and int(metric.total) == 53


def test_split_accuracy_empty_and_bad_shapes():
    metric = SplitAccuracy()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(metric.compute())
    with pytest.raises(ValueError, match="logits"):
        metric.update(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


# ---------------------------------------------------------------------------- features
def test_feature_functions_match_numpy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [-float("inf"), 0.0, -float("inf")]])
    target = torch.tensor([0, 2, 1])
    probs = softmax64(logits)
    assert probs.dtype == torch.float64
    np.testing.assert_allclose(entropy(probs).numpy(), _np_entropy(logits.numpy()), rtol=0, atol=1e-15)
    assert float(entropy(probs)[2]) == 0.0  # 0 ln 0 = 0
    assert float(entropy(probs)[1]) == pytest.approx(np.log(3), abs=1e-15)
    np.testing.assert_allclose(true_class_confidence(probs, target).numpy(), probs.numpy()[[0, 1, 2], [0, 2, 1]])
    loss = per_sample_loss(logits[:2], target[:2])
    np.testing.assert_allclose(loss.numpy(), -np.log(probs.numpy()[[0, 1], [0, 2]]), rtol=1e-14)


# ---------------------------------------------------------------------------- entropy attack
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_mia_equals_sklearn(seed):
    splits = _random_splits(seed)
    metric = EntropyMIA()
    _feed(metric, splits, seed=seed)
    expected = _sklearn_member_rate(*(splits[name][0].numpy() for name in ("forget", "retain", "test")))
    value = metric.compute()
    assert value.dtype == torch.float64
    assert float(value) == expected


def test_entropy_mia_separable_case():
    confident = torch.tensor([[30.0, 0.0, 0.0]]).repeat(20, 1)  # entropy ~ 0: the member value
    uniform = torch.zeros(15, 3)  # entropy ln 3: the non-member value
    labels = torch.zeros(20, dtype=torch.long)
    for forget_logits, expected in ((confident[:9], 1.0), (uniform[:9], 0.0)):
        metric = EntropyMIA()
        metric.update("retain", confident, labels, torch.arange(20))
        metric.update("test", uniform, labels[:15], torch.arange(15))
        metric.update("forget", forget_logits, labels[:9], torch.arange(9))
        assert float(metric.compute()) == expected


def test_entropy_mia_duplicates_and_codes():
    splits = _random_splits(4)
    once, twice = EntropyMIA(), EntropyMIA()
    _feed(once, splits)
    _feed(twice, splits)
    _feed(twice, splits, batch=5, seed=9)  # every (split, index) pair twice
    assert float(once.compute()) == float(twice.compute())
    data = twice.canonical_data()
    assert [len(data[name]) for name in ("forget", "retain", "test")] == [31, 57, 43]
    assert np.array_equal(data["retain"].index, np.arange(57))
    assert data["retain"].feature.shape == (57, 1) and data.feature_dim == 1
    by_code = EntropyMIA()
    for code, name in enumerate(EntropyMIA.splits):
        logits, target = splits[name]
        by_code.update(code, logits, target, torch.arange(len(target)))
    assert float(by_code.compute()) == float(once.compute())


def test_entropy_mia_retain_subsample_is_seeded():
    splits = _random_splits(5, sizes=(20, 80, 30))
    metric = EntropyMIA(seed=7, retain_subsample=25)
    _feed(metric, splits)
    chosen = np.sort(np.random.default_rng(7).choice(80, size=25, replace=False))
    retain = splits["retain"][0].numpy()[chosen]
    expected = _sklearn_member_rate(splits["forget"][0].numpy(), retain, splits["test"][0].numpy())
    assert float(metric.compute()) == expected
    assert np.array_equal(metric.canonical_data()["retain"].index, chosen)


def test_entropy_mia_errors_and_edge_cases():
    metric = EntropyMIA()
    with pytest.raises(ValueError, match="consumes the splits"):
        metric.update("test_forget", torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.arange(2))
    with pytest.raises(ValueError, match="split codes"):
        metric.update(3, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.arange(2))
    with pytest.raises(ValueError, match="expects logits"):
        metric.update("test", torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), torch.arange(2))
    with pytest.raises(ValueError, match="retain_subsample"):
        EntropyMIA(retain_subsample=0)
    splits = _random_splits(6)
    no_test = EntropyMIA()
    for name in ("forget", "retain"):
        no_test.update(name, splits[name][0], splits[name][1], torch.arange(len(splits[name][1])))
    with pytest.raises(ValueError, match=r"received none"):
        no_test.compute()
    no_forget = EntropyMIA()
    for name in ("test", "retain"):
        no_forget.update(name, splits[name][0], splits[name][1], torch.arange(len(splits[name][1])))
    assert torch.isnan(no_forget.compute())
    assert EntropyMIA.higher_is_better is False and EntropyMIA.full_state_update is False


def test_forward_only_accumulates():
    metric = EntropyMIA()
    assert metric("test", torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.arange(2)) is None
    assert metric.update_count == 1 and len(metric.feature) == 1


# ---------------------------------------------------------------------------- registry / extension
def test_registry_and_custom_attack():
    assert "entropy" in available_attacks()
    assert isinstance(build_attack("entropy", seed=3), EntropyMIA)
    with pytest.raises(ValueError, match=r"allowed: \['entropy'"):
        build_attack("nope")

    class ThresholdMIA(MembershipAttack):
        """Test attack: share of forget samples whose confidence exceeds the retain median."""

        name: ClassVar[str] = "test_confidence_rate"
        splits: ClassVar[tuple[str, ...]] = ("forget", "retain", "test_retain")
        optional_splits: ClassVar[tuple[str, ...]] = ("test_retain",)

        def features(self, logits: Tensor, target: Tensor) -> Tensor:
            probs = softmax64(logits)
            return torch.stack([true_class_confidence(probs, target), probs.max(dim=1).values], dim=1)

        def attack(self, data: AttackData) -> float:
            threshold = np.median(data["retain"].feature[:, 0])
            return float(np.mean(data["forget"].feature[:, 0] > threshold))

    class Unnamed(ThresholdMIA):
        name: ClassVar[str] = ""

    with pytest.raises(TypeError, match="must set the class attribute `name`"):
        Unnamed()
    assert ThresholdMIA.required_splits() == ("forget", "retain")
    assert EntropyMIA.required_splits() == ("forget", "retain", "test")
    try:
        register_attack("test_threshold")(ThresholdMIA)
        from lightning_unlearn.callbacks import MembershipInference

        callback = MembershipInference(attacks=["test_threshold"])
        callback.configure_splits(["forget", "retain"])  # the optional split may be absent
        assert callback.accepts("test_retain") and not callback.accepts("test")
        with pytest.raises(ValueError, match="already registered"):
            register_attack("entropy")(ThresholdMIA)
        metric = build_attack("test_threshold")
        splits = _random_splits(8)
        for name in ("forget", "retain"):
            metric.update(name, splits[name][0], splits[name][1], torch.arange(len(splits[name][1])))
        data = metric.canonical_data()
        assert data.feature_dim == 2 and data["retain"].feature.shape == (57, 2)
        conf = {
            n: torch.softmax(splits[n][0].double(), 1)[torch.arange(len(splits[n][1])), splits[n][1]].numpy()
            for n in ("forget", "retain")
        }
        assert float(metric.compute()) == float(np.mean(conf["forget"] > np.median(conf["retain"])))
    finally:
        ATTACKS.pop("test_threshold", None)


# ---------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_metrics_two_process_gloo_equal_one_process(tmp_path):
    """Uneven shards, a rank without any sample, duplicates across ranks: same numbers as one process."""
    script = TESTS_DIR / "ddp_raw_metric_script.py"
    port = str(_free_port())
    prefix = str(tmp_path / "values")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), "--rank", str(rank), "--world-size", "2", "--port", port, "--out", prefix],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in (0, 1)
    ]
    sys.path.insert(0, str(TESTS_DIR))
    try:
        from ddp_raw_metric_script import run

        single = run(0, 1)
    finally:
        sys.path.remove(str(TESTS_DIR))
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()
    ranks = [json.loads(Path(f"{prefix}.{rank}").read_text()) for rank in (0, 1)]
    for key in ("lopsided", "shuffled", "accuracy"):
        assert ranks[0][key] == ranks[1][key] == single[key], key
    assert single["missing"] == "ValueError"
    assert ranks[0]["missing"] == "ValueError" and ranks[1]["missing"] == "RuntimeError"


# ---------------------------------------------------------------------------- output distances at tiny probabilities
def _peer_js(p: np.ndarray, q: np.ndarray) -> float:
    """SSD's ``JSDiv``: 1/2 kl_div(log p, m) + 1/2 kl_div(log q, m), "mean" over all entries, in NumPy float64."""
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(0.5 * m * (np.log(m) - np.log(p)) + 0.5 * m * (np.log(m) - np.log(q))))


def _peer_js_torch(p: Tensor, q: Tensor) -> float:
    """The same with the peer code's own operations (``torch.log`` and ``F.kl_div``)."""
    m = (p + q) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # kl_div's notice about its "mean" reduction, used on purpose
        return float(
            0.5 * torch.nn.functional.kl_div(torch.log(p), m) + 0.5 * torch.nn.functional.kl_div(torch.log(q), m)
        )


def _distances(unlearned: Tensor, retrained: Tensor, inputs: str) -> dict[str, float]:
    from lightning_unlearn.metrics.distances import OutputDistance

    metric = OutputDistance(inputs=inputs)
    metric.update(unlearned, retrained)
    return {name: float(value) for name, value in metric.compute().items()}


def test_output_distance_js_equals_peer_formula_below_1e_12():
    """Probabilities far below 1e-12 (no exact zero): dist/js is SSD's JSDiv and 1 - dist/js its ZRF, unclamped."""
    p_u = np.array([[1 - 2e-13, 1e-13, 1e-13], [0.7, 0.3 - 1e-30, 1e-30], [0.5, 0.5 - 1e-200, 1e-200]])
    p_r = np.array([[1e-15, 0.6, 0.4 - 1e-15], [0.2, 0.8 - 1e-20, 1e-20], [1e-300, 0.25, 0.75 - 1e-300]])
    ours = _distances(torch.from_numpy(p_u), torch.from_numpy(p_r), "probs")
    reference = _peer_js(p_u, p_r)
    assert math.isfinite(reference)
    assert ours["js"] == pytest.approx(reference, rel=1e-14)
    assert ours["js"] == pytest.approx(_peer_js_torch(torch.from_numpy(p_u), torch.from_numpy(p_r)), rel=1e-14)
    assert 1 - ours["js"] == pytest.approx(1 - reference, rel=1e-14)  # SSD's UnLearningScore (ZRF)
    # A clamp at 1e-12 would move the value by far more than rounding (the bug this guards against).
    clamped = np.maximum(p_u, 1e-12), np.maximum(p_r, 1e-12)
    m = (p_u + p_r) / 2
    old = float(np.mean(0.5 * m * (np.log(m) - np.log(clamped[0])) + 0.5 * m * (np.log(m) - np.log(clamped[1]))))
    assert abs(old - reference) > 1e-2
    # Textbook JS against SciPy (its distance is the square root of the divergence, natural log by default).
    from scipy.spatial.distance import jensenshannon

    assert ours["js_std"] == pytest.approx(float(np.mean(jensenshannon(p_u, p_r, axis=1) ** 2)), rel=1e-12)


def test_output_distance_exact_zeros_stay_finite():
    """Exact zeros: 0 ln 0 = 0 (the peer code gives nan there) and ln 0 read as ln(2**-1074) (the peer: inf)."""
    p_u = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    p_r = torch.tensor([[0.2, 0.8, 0.0], [0.5, 0.25, 0.25]], dtype=torch.float64)
    ours = _distances(p_u, p_r, "probs")
    assert all(math.isfinite(v) for v in ours.values())
    assert not math.isfinite(_peer_js_torch(p_u, p_r))
    log0 = -1074 * math.log(2.0)

    def ln(x: float) -> float:
        return math.log(x) if x > 0 else log0

    js = 0.0
    for a, b in zip(p_u.flatten().tolist(), p_r.flatten().tolist(), strict=True):
        m = (a + b) / 2
        js += 0.0 if m == 0 else 0.5 * m * (ln(m) - ln(a)) + 0.5 * m * (ln(m) - ln(b))
    assert ours["js"] == pytest.approx(js / 6, rel=1e-14)
    # By hand: each entry adds m (2 ln m - ln a - ln b) / 2, over 6 entries; (0, 2) has m = 0 and (1, 0) a = b.
    hand = (
        0.6 * (2 * math.log(0.6) - math.log(0.2))
        + 0.4 * (2 * math.log(0.4) - log0 - math.log(0.8))
        + 0.375 * (2 * math.log(0.375) - math.log(0.5) - math.log(0.25))
        + 0.125 * (2 * math.log(0.125) - log0 - math.log(0.25))
    ) / 12
    assert ours["js"] == pytest.approx(hand, rel=1e-14)
    from scipy.spatial.distance import jensenshannon

    assert ours["js_std"] == pytest.approx(float(np.mean(jensenshannon(p_u.numpy(), p_r.numpy(), axis=1) ** 2)), 1e-12)


def test_output_distance_from_logits_uses_exact_log_probabilities():
    """Logits whose float64 softmax underflows to 0: finite, from the exact log-softmax; peer-equal where finite."""
    z_u = torch.tensor([[0.0, -1000.0, 5.0], [3.0, -30.0, 0.0]], dtype=torch.float64)
    z_r = torch.tensor([[0.0, 0.0, 0.0], [-40.0, 2.0, 1.0]], dtype=torch.float64)
    ours = _distances(z_u, z_r, "logits")
    assert torch.softmax(z_u, dim=1)[0, 1] == 0  # the peer's log(softmax) is -inf here
    lse = 5.0 + math.log1p(math.exp(-5.0) + math.exp(-1005.0))
    log_u0 = [0.0 - lse, -1000.0 - lse, 5.0 - lse]
    js = 0.0
    for log_a in log_u0:
        a, b = math.exp(log_a), 1 / 3
        m = (a + b) / 2
        js += 0.5 * m * (math.log(m) - log_a) + 0.5 * m * (math.log(m) - math.log(b))
    # Second row: all probabilities positive in float64, so the peer formula applies as is.
    p_u1, p_r1 = torch.softmax(z_u[1], 0).numpy(), torch.softmax(z_r[1], 0).numpy()
    js += 3 * _peer_js(p_u1[None], p_r1[None])
    assert ours["js"] == pytest.approx(js / 6, rel=1e-12)
    # On logits with every float64 probability positive (some below 1e-12), 1 - dist/js is the peer ZRF.
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(50, 10, generator=generator) * 12, torch.randn(50, 10, generator=generator) * 12
    p_a, p_b = torch.softmax(z_a.double(), 1), torch.softmax(z_b.double(), 1)
    assert bool((p_a > 0).all() and (p_b > 0).all()) and float((torch.cat([p_a, p_b]) < 1e-12).double().mean()) > 0.05
    from_logits = _distances(z_a, z_b, "logits")
    assert 1 - from_logits["js"] == pytest.approx(1 - _peer_js_torch(p_a, p_b), rel=1e-13)
