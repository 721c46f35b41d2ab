"""Comparison with the retrained model: OutputDistance and the RetrainComparison callback.

Also runnable as ``python test_retrain_comparison.py --devices N --ckpt REF --out values.json --logdir DIR`` for the
1-vs-2-process DDP equality check (same pattern as ``ddp_metric_script.py``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from trainers import exit_without_teardown, run_on_1_and_2_processes

from lightning_unlearn.callbacks.retrain_comparison import RetrainComparison
from lightning_unlearn.metrics.distances import OutputDistance
from lightning_unlearn.models import build_classifier, export_classifier

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent


def _load_fakes():
    spec = importlib.util.spec_from_file_location("_metric_fakes", TESTS_DIR / "ddp_metric_script.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fakes = _load_fakes()
NUM_CLASSES = fakes.NUM_CLASSES
GAPS = ["gap/acc_forget", "gap/acc_retain", "gap/acc_test", "gap/mia_svc_confidence_efficacy", "gap/avg"]
DISTS = ["dist/activation_l2", "dist/activation_l1", "dist/js", "dist/js_std", "dist/zrf"]
SVC = "mia/svc_confidence_efficacy"
ZRF_SEED = 7  # not a seed of the compared models
SIZES = {"forget": 13, "retain": 37, "test": 29, "test_forget": 1}
SIZES_TR = {"forget": 13, "retain": 37, "test": 29, "test_retain": 11, "test_forget": 1}


# ---------------------------------------------------------------------------------------------- fakes
def _image_data(seed: int, sizes: dict[str, int]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """1x8x8 images: a class-dependent pattern plus noise (test noisier)."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn(NUM_CLASSES, 1, 8, 8, generator=generator)
    data = {}
    for name, size in sizes.items():
        y = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
        noise = 1.5 if name.startswith("test") else 1.0
        data[name] = (patterns[y] + noise * torch.randn(size, 1, 8, 8, generator=generator), y)
    return data


class ImageDataModule(fakes.FakeDataModule):
    def __init__(self, seed: int = 0, sizes: dict[str, int] | None = None, eval_batch_size: int = 4) -> None:
        super().__init__(seed=seed, eval_batch_size=eval_batch_size, sizes=sizes or SIZES)
        self.data = _image_data(seed, sizes or SIZES)
        self.eval_split_names = list(self.data)


class TinyModule(fakes.FakeModule):
    """A ``tiny_cnn`` trained on a fixed batch (independent of the data shard)."""

    def __init__(self, seed: int = 0, lr: float = 1.0) -> None:
        super().__init__(seed=seed, lr=lr)
        torch.manual_seed(seed)
        self.model = build_classifier("tiny_cnn", NUM_CLASSES, in_channels=1)
        generator = torch.Generator().manual_seed(seed + 1)
        self.fixed_x = torch.randn(16, 1, 8, 8, generator=generator) * 3
        self.fixed_y = torch.randint(0, NUM_CLASSES, (16,), generator=generator)


def _callback(ckpt: Path, **kwargs: Any) -> RetrainComparison:
    kwargs.setdefault("zrf_seed", ZRF_SEED)
    return RetrainComparison(
        arch="tiny_cnn", num_classes=NUM_CLASSES, reference_ckpt=str(ckpt), in_channels=1, **kwargs
    )


def _trainer(tmp_path, callbacks, devices: int = 1, **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        limit_train_batches=1,
        logger=CSVLogger(str(tmp_path), name="", version=""),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------- independent values
def _np_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _np_distances(p_u: np.ndarray, p_r: np.ndarray) -> dict[str, float]:
    m = (p_u + p_r) / 2
    log = lambda a: np.log(np.maximum(a, 1e-12))  # noqa: E731
    return {
        "dist/activation_l2": float(np.mean(np.sqrt(((p_u - p_r) ** 2).sum(axis=1)))),
        "dist/activation_l1": float(np.mean(np.abs(p_u - p_r).sum(axis=1))),
        "dist/js": float(np.mean(0.5 * m * (log(m) - log(p_u)) + 0.5 * m * (log(m) - log(p_r)))),
        "dist/js_std": float(np.mean((0.5 * p_u * (log(p_u) - log(m)) + 0.5 * p_r * (log(p_r) - log(m))).sum(axis=1))),
    }


def _logits(model: torch.nn.Module, data) -> dict[str, np.ndarray]:
    training = model.training
    model.eval()
    with torch.no_grad():
        out = {name: model(x).numpy() for name, (x, _) in data.items()}
    model.train(training)
    return out


def _svc_efficacy(logits: dict[str, np.ndarray], data) -> float:
    """SalUn's MIA efficacy computed directly with scikit-learn (first n retain vs the test split)."""
    from sklearn.svm import SVC

    test = "test_retain" if "test_retain" in data else "test"
    conf = {name: _np_softmax(logits[name])[np.arange(len(y)), y.numpy()][:, None] for name, (_, y) in data.items()}
    n = min(len(conf["retain"]), len(conf[test]))
    x = np.concatenate([conf["retain"][:n], conf[test]])
    labels = np.concatenate([np.ones(n), np.zeros(len(conf[test]))])
    attacker = SVC(C=3, kernel="rbf", gamma="auto").fit(x, labels)
    return float(1 - np.mean(attacker.predict(conf["forget"]) == 1))


def _random_model() -> torch.nn.Module:
    torch.manual_seed(ZRF_SEED)
    return build_classifier("tiny_cnn", NUM_CLASSES, in_channels=1)


def _expected(unlearned: torch.nn.Module, reference: torch.nn.Module, data) -> dict[str, float]:
    lu, lr = _logits(unlearned, data), _logits(reference, data)
    acc_u = {name: float(np.mean(lu[name].argmax(1) == y.numpy())) for name, (_, y) in data.items()}
    acc_r = {name: float(np.mean(lr[name].argmax(1) == y.numpy())) for name, (_, y) in data.items()}
    test = "test_retain" if "test_retain" in data else "test"
    gaps = {
        f"gap/acc_{key}": abs(acc_u[split] - acc_r[split])
        for key, split in (("forget", "forget"), ("retain", "retain"), ("test", test))
    }
    gaps["gap/mia_svc_confidence_efficacy"] = abs(_svc_efficacy(lu, data) - _svc_efficacy(lr, data))
    gaps["gap/avg"] = float(np.mean(list(gaps.values())))
    zrf_split = "test_forget" if "test_forget" in data else "forget"
    random_logits = _logits(_random_model(), data)[zrf_split]
    zrf = 1 - _np_distances(_np_softmax(lu[zrf_split]), _np_softmax(random_logits))["dist/js"]
    return {**gaps, **_np_distances(_np_softmax(lu["forget"]), _np_softmax(lr["forget"])), "dist/zrf": zrf}


def _assert_close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name  # float32 logits, batch-size noise


# ---------------------------------------------------------------------------------------------- OutputDistance
WORKED_U = [[0.9, 0.1], [0.5, 0.5]]
WORKED_R = [[0.1, 0.9], [0.5, 0.5]]
WORKED = {"activation_l2": 0.565685, "activation_l1": 0.8, "js": 0.127706, "js_std": 0.184032}


@pytest.mark.parametrize("split_batches", [False, True])
def test_output_distance_worked_example(split_batches):
    p_u, p_r = torch.tensor(WORKED_U, dtype=torch.float64), torch.tensor(WORKED_R, dtype=torch.float64)
    metric = OutputDistance(inputs="probs")
    if split_batches:
        metric.update(p_u[:1], p_r[:1])
        metric.update(p_u[1:], p_r[1:])
    else:
        metric.update(p_u, p_r)
    values = {name: float(value) for name, value in metric.compute().items()}
    assert values == pytest.approx(WORKED, abs=1e-6)
    direct = _np_distances(np.array(WORKED_U), np.array(WORKED_R))
    assert values == pytest.approx({name.removeprefix("dist/"): value for name, value in direct.items()}, abs=1e-15)
    # logits whose softmax is the same probabilities give the same distances
    from_logits = OutputDistance()
    from_logits.update(p_u.log(), p_r.log())
    assert {k: float(v) for k, v in from_logits.compute().items()} == pytest.approx(values, abs=1e-12)
    assert OutputDistance.higher_is_better is False


def test_output_distance_edge_cases():
    metric = OutputDistance(inputs="probs")
    assert all(np.isnan(float(v)) for v in metric.compute().values())  # nothing seen
    metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))  # exact zeros: clamped, finite
    values = metric.compute()
    assert all(np.isfinite(float(v)) for v in values.values())
    assert float(values["activation_l1"]) == pytest.approx(2.0)
    metric.reset()
    same = torch.randn(5, 4)
    metric = OutputDistance()
    metric.update(same, same)
    assert all(float(v) == pytest.approx(0.0, abs=1e-15) for v in metric.compute().values())
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="inputs"):
        OutputDistance(inputs="log_probs")


# ---------------------------------------------------------------------------------------------- the callback
def test_reference_equal_to_model_then_different(tmp_path):
    """Oracle = the model before unlearning: every value 0 at step 0; after training, independent gaps/distances."""
    model, datamodule = TinyModule(), ImageDataModule()
    ckpt = export_classifier(model.model, tmp_path / "retrained.pt")  # raw state dict
    reference = build_classifier("tiny_cnn", NUM_CLASSES, in_channels=1)
    reference.load_state_dict(torch.load(ckpt, weights_only=True))
    callback = _callback(ckpt)
    trainer = _trainer(tmp_path, [callback])
    trainer.fit(model, datamodule=datamodule)

    assert list(callback.initial_metrics) == GAPS + DISTS
    assert all(
        value == pytest.approx(0.0, abs=1e-12) for name, value in callback.initial_metrics.items() if name != "dist/zrf"
    )
    assert 0 < callback.initial_metrics["dist/zrf"] < 1
    expected = _expected(model.model, reference, datamodule.data)
    assert expected["gap/avg"] > 0 and expected["dist/js"] > 0  # the training step changed the model
    _assert_close(callback.final_metrics, expected)
    for name in GAPS + DISTS:
        assert trainer.callback_metrics[name].item() == pytest.approx(expected[name])

    # logged at step 0 under the same names
    with open(tmp_path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    step0 = {k: float(v) for row in rows if row["step"] == "0" and not row["epoch"] for k, v in row.items() if v}
    assert step0 == {**callback.initial_metrics, "step": 0.0}

    # the oracle stays frozen, in eval mode, outside the module; its accuracies are cached
    oracle = callback._reference
    assert oracle is not None and not oracle.training
    assert not any(p.requires_grad for p in oracle.parameters())
    assert all(not key.startswith("_reference") for key in model.state_dict())
    assert set(callback.reference_metrics) == {"acc/forget", "acc/retain", "acc/test", SVC}
    assert callback.reference_accuracies == {} and callback.reference_svc is None

    trainer.test(model, datamodule=datamodule, verbose=False)
    _assert_close(callback.test_metrics, expected)


def test_reference_differs_and_test_retain(tmp_path):
    """A differently initialised oracle; the test gap uses test_retain when the split exists."""
    datamodule = ImageDataModule(sizes=SIZES_TR)
    other = TinyModule(seed=5)
    ckpt = export_classifier(other.model, tmp_path / "ref" / "retrained.pt")
    model = TinyModule(seed=0)
    before = _expected(model.model, other.model, datamodule.data)
    callback = _callback(ckpt)
    trainer = _trainer(tmp_path, [callback])
    trainer.fit(model, datamodule=datamodule)
    after = _expected(model.model, other.model, datamodule.data)

    assert before["dist/activation_l2"] > 0
    _assert_close(callback.initial_metrics, before)
    _assert_close(callback.final_metrics, after)
    assert set(callback.reference_metrics) == {"acc/forget", "acc/retain", "acc/test", "acc/test_retain", SVC}
    oracle_efficacy = _svc_efficacy(_logits(other.model, datamodule.data), datamodule.data)
    assert callback.reference_metrics[SVC] == pytest.approx(oracle_efficacy)
    acc_r = float(
        np.mean(
            _logits(other.model, datamodule.data)["test_retain"].argmax(1) == datamodule.data["test_retain"][1].numpy()
        )
    )
    assert callback.reference_metrics["acc/test_retain"] == acc_r


def test_svc_gap_and_zrf_can_be_turned_off(tmp_path):
    model, datamodule = TinyModule(), ImageDataModule()
    ckpt = export_classifier(TinyModule(seed=5).model, tmp_path / "r.pt")
    callback = _callback(ckpt, svc_gap=False, zrf_seed=None)
    _trainer(tmp_path, [callback]).fit(model, datamodule=datamodule)
    expected = _expected(model.model, TinyModule(seed=5).model, datamodule.data)
    gaps = [expected[f"gap/acc_{key}"] for key in ("forget", "retain", "test")]
    assert list(callback.final_metrics) == [*GAPS[:3], "gap/avg", *DISTS[:4]]
    assert callback.final_metrics["gap/avg"] == pytest.approx(float(np.mean(gaps)))
    assert SVC not in callback.reference_metrics


def test_missing_forget_split_and_bad_checkpoint(tmp_path):
    ckpt = export_classifier(TinyModule().model, tmp_path / "r.pt")
    datamodule = ImageDataModule(sizes={"retain": 7, "test": 5})
    with pytest.raises(ValueError, match="forget"):
        _trainer(tmp_path, [_callback(ckpt)]).fit(TinyModule(), datamodule=datamodule)
    with pytest.raises(FileNotFoundError):
        _trainer(tmp_path, [_callback(tmp_path / "missing.pt")]).fit(TinyModule(), datamodule=ImageDataModule())
    with pytest.raises(ValueError):  # wrong number of classes for the stored head
        RetrainComparison(
            arch="tiny_cnn", num_classes=NUM_CLASSES + 1, reference_ckpt=str(ckpt), in_channels=1
        )._load_reference()


# ---------------------------------------------------------------------------------------------- DDP
def _fit_and_record(devices: int, ckpt: str, out: str, logdir: str) -> None:
    callback = _callback(Path(ckpt))
    trainer = _trainer(logdir, [callback], devices=devices)
    # batches of one sample: float32 logits do not depend on which samples share a batch (they do at 1e-8)
    model, datamodule = TinyModule(), ImageDataModule(sizes=SIZES_TR, eval_batch_size=1)
    trainer.fit(model, datamodule=datamodule)
    logged = {name: float(value) for name, value in trainer.callback_metrics.items()}
    trainer.test(model, datamodule=datamodule, verbose=False)
    if trainer.is_global_zero:
        values = {
            "world_size": trainer.world_size,
            "initial": callback.initial_metrics,
            "final": callback.final_metrics,
            "test": callback.test_metrics,
            "reference": callback.reference_metrics,
            "logged": logged,
        }
        Path(out).write_text(json.dumps(values, indent=1))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path):
    ckpt = export_classifier(TinyModule(seed=3).model, tmp_path / "retrained.pt")
    one, two = run_on_1_and_2_processes(__file__, tmp_path, "--ckpt", str(ckpt))
    assert (one.pop("world_size"), two.pop("world_size")) == (1, 2)
    assert list(one["initial"]) == GAPS + DISTS
    assert one["reference"] == two["reference"]
    for stage in ("initial", "final", "test", "logged"):
        assert list(one[stage]) == list(two[stage])
        for name, value in one[stage].items():
            if name.startswith("gap/"):  # exact counts
                assert two[stage][name] == value, (stage, name)
            else:  # float64 sums added in another order: equal to the last bits only
                assert two[stage][name] == pytest.approx(value, rel=1e-12, abs=0), (stage, name)
    assert one["initial"] != one["final"]
    assert one["test"] == one["final"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--logdir", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _fit_and_record(args.devices, args.ckpt, args.out, args.logdir)


if __name__ == "__main__":
    main()
    exit_without_teardown()
