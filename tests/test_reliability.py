"""Reliability matrix for every method: determinism, resume after a crash (mid-stage too), original file untouched.

Each method runs through the real CLI from one of its shipped configs, made tiny by ``tiny_config`` (tiny
classifier loaded from an ``original.pt`` file, two training batches per epoch). Per method:

- two uninterrupted runs with the same seed give bitwise-identical classifiers and identical logged metrics;
- a run killed in the middle of an epoch (for multi-stage methods in the middle of the plan, so mid-stage), then
  resumed from its ``last.ckpt``, ends with the same classifier as the uninterrupted run (float tolerance);
  a single-epoch run killed before its first checkpoint simply starts again from the original;
- the original classifier file is byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from test_cli import tiny_config
from trainers import SimulatedCrash

from lightning_unlearn.main import main
from lightning_unlearn.models import export_classifier, load_classifier
from lightning_unlearn.presets import CONFIG_ROOT

#: One shipped config per method class (the embedded-data configs where there is one).
MATRIX: dict[str, str] = {
    "Finetune": "mnist5k/random_10pct/finetune.yaml",
    "GradientAscent": "mnist5k/class_removal/neggrad_plus.yaml",
    "RandomLabel": "mnist5k/class_removal/random_label.yaml",
    "SCRUB": "mnist5k/class_removal/scrub.yaml",
    "SalUn": "mnist5k/class_removal/salun.yaml",
    "L1Sparse": "mnist5k/class_removal/l1_sparse.yaml",
    "BoundaryShrink": "mnist5k/class_removal/boundary_shrink.yaml",
    "BoundaryExpanding": "mnist5k/class_removal/boundary_expanding.yaml",
    "SSD": "mnist5k/class_removal/ssd.yaml",
    "LFSSD": "mnist5k/class_removal/lfssd.yaml",
    "JiT": "mnist5k/class_removal/jit.yaml",
    "LAF": "mnist5k/class_removal/laf_r.yaml",
    "L2UL": "mnist5k/k16/l2ul.yaml",
    "Poison": "mnist5k/random_10pct/poison.yaml",
    "PoisonFull": "mnist5k/random_10pct/poison_full.yaml",
    "Hybrid": "mnist5k/random_10pct/hybrid.yaml",
    "Pruning": "mnist5k/random_10pct/pruning.yaml",
    "PruningLast": "mnist5k/random_10pct/pruning_last.yaml",
    "PruningComplex": "mnist5k/random_10pct/pruning_complex.yaml",
    "ActivationReset": "mnist5k/random_10pct/activation_reset.yaml",
    "BadTeaching": "mnist5k/class_removal/bad_teaching.yaml",
    "UNSIR": "mnist5k/class_removal/unsir.yaml",
    "Classifier": "pretrain/digits8x8.yaml",
    "RetrainOracle": "retrain/mnist5k_class0.yaml",
}


_STAGE_EPOCHS = ("overfit_epochs", "retain_epochs", "forget_epochs")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepare(name: str, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny config of ``name`` with its classifier read from an ``original.pt`` file, and that file."""
    config = tiny_config(CONFIG_ROOT / MATRIX[name], tmp_path)
    cfg = yaml.safe_load(config.read_text())
    model_args = cfg["model"]["init_args"]["model"]["init_args"]
    torch.manual_seed(123)
    original = export_classifier(load_classifier(**model_args), tmp_path / "original.pt")
    model_args["ckpt_path"] = str(original)
    trainer = cfg["trainer"]
    trainer["callbacks"] = [
        {"class_path": "lightning_unlearn.callbacks.ForgettingMetrics", "init_args": {"log_initial": False}},
        {
            "class_path": "lightning_unlearn.callbacks.MembershipInference",
            "init_args": {"attacks": ["svc_confidence"], "log_initial": False},
        },
    ]
    shrunk = {k: min(int(v), 2) for k, v in cfg["model"]["init_args"].items() if k in _STAGE_EPOCHS}
    if shrunk:  # multi-stage plans: two epochs per stage at most, and the trainer's epochs to match
        cfg["model"]["init_args"].update(shrunk)
        config.write_text(yaml.safe_dump(cfg))
        stages = main(["--config", str(config)], run=False).model.active_stages()
        trainer["max_epochs"] = sum(stage.epochs for stage in stages)
    trainer["logger"] = False
    trainer["enable_progress_bar"] = False
    trainer["limit_val_batches"] = 1  # one small batch per split: cheap, yet logged metrics to compare
    trainer["check_val_every_n_epoch"] = 1
    cfg["data"]["init_args"]["eval_batch_size"] = 32
    config.write_text(yaml.safe_dump(cfg))
    return config, Path(original)


def _fit(config: Path, root: Path, *extra: str):
    return main(["fit", "--config", str(config), f"--trainer.default_root_dir={root}", *extra])


def _crash_args(epoch: int, batch: int) -> list[str]:
    return [
        "--trainer.callbacks+=trainers.CrashAt",
        f"--trainer.callbacks.epoch={epoch}",
        f"--trainer.callbacks.batch={batch}",
    ]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _metrics(cli) -> dict[str, float]:
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(("acc/", "mia/"))}


#: One method per training regime runs in the fast suite; the others are marked ``slow``.
FAST = ("RandomLabel", "SCRUB", "SSD")


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else (pytest.mark.slow,)) for n in MATRIX])
def test_deterministic_and_resumable(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_UNLEARN_CACHE", str(tmp_path / "cache"))
    config, original = _prepare(name, tmp_path)
    digest = _sha256(original)

    first = _fit(config, tmp_path / "a")
    second = _fit(config, tmp_path / "b")
    a, b = _state(tmp_path / "a" / "classifier.pt"), _state(tmp_path / "b" / "classifier.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed and config must give the same classifier"
    assert _metrics(first) and _metrics(first) == _metrics(second)
    assert any(not torch.equal(a[k], v) for k, v in _state(original).items()), "the method changed nothing"

    epochs = int(first.trainer.max_epochs)
    if first.trainer.current_epoch < epochs:  # a method that stops itself (L2UL): its plan is one epoch here
        epochs = int(first.trainer.current_epoch) + 1
    crash_epoch = epochs // 2  # mid-plan: mid-stage for multi-stage methods; 0 for one-epoch methods
    with pytest.raises(SimulatedCrash):
        batch = 1 if first.trainer.num_training_batches > 1 else 0  # mid-epoch when the epoch has two batches
        _fit(config, tmp_path / "c", *_crash_args(crash_epoch, batch))
    assert not (tmp_path / "c" / "classifier.pt").exists()
    last = tmp_path / "c" / "checkpoints" / "last.ckpt"
    if crash_epoch > 0 and first.trainer.checkpoint_callback is not None:
        assert last.exists()
        resumed = _fit(config, tmp_path / "c", f"--ckpt_path={last}")
        assert resumed.trainer.current_epoch == first.trainer.current_epoch
    else:  # killed before the first checkpoint: start again from the untouched original
        assert not last.exists()
        _fit(config, tmp_path / "c")
    c = _state(tmp_path / "c" / "classifier.pt")
    for key, value in a.items():
        assert torch.allclose(value.float(), c[key].float(), atol=1e-6, rtol=1e-5), key
    assert _sha256(original) == digest
