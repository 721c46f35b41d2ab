"""lightning-unlearn-audit on the embedded 8x8 digits: outputs, values, parallel workers, resume and errors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_unlearn.jobs import Job, JobError, run_jobs
from lightning_unlearn.metrics.audit import challenge_epsilon, hinge_scores, logit_confidence, per_example_epsilon
from lightning_unlearn.privacy_audit import main, run_audit

MODELS = 3


def _method_config(tmp_path: Path, cache: Path) -> Path:
    config = tmp_path / "random_label.yaml"
    config.write_text(
        f"""
trainer:
  max_epochs: 1
model:
  class_path: lightning_unlearn.methods.RandomLabel
  init_args:
    model:
      class_path: lightning_unlearn.pretrained.pretrained_classifier
      init_args: {{recipe: digits8x8, epochs: 2, cache_dir: {cache}, progress: false}}
    lr: 0.01
data:
  class_path: lightning_unlearn.datamodules.Digits8x8DataModule
  init_args:
    batch_size: 64
    scenario:
      class_path: lightning_unlearn.datamodules.RandomRemoval
      init_args: {{fraction: 0.05}}
"""
    )
    return config


def _model_files(out: Path, group: str) -> list[Path]:
    return sorted((out / "models").glob(f"{group}_*.pt"))


def test_original_audit_outputs_values_and_resume(tmp_path):
    out, cache = tmp_path / "audit", tmp_path / "cache"
    kwargs = dict(subject="original", recipe="digits8x8", forget_fraction=0.05, models=MODELS, workers=1, epochs=2)
    result = run_audit(out=out, cache_dir=str(cache), **kwargs)

    # independent recomputation from the per-model files
    data = torch.load(out / "eval_data.pt", weights_only=True)
    labels = data["forget_y"].numpy()
    logits = {
        group: np.stack([torch.load(p, weights_only=True)["forget_logits"].double().numpy() for p in files])
        for group in ("retrained", "original")
        if (files := _model_files(out, group))
    }
    assert logits["retrained"].shape == (MODELS, len(labels), 10)
    assert not np.allclose(logits["retrained"][0], logits["retrained"][1])  # different training seeds
    assert not np.allclose(logits["original"][0], logits["retrained"][0])
    hinge = {g: hinge_scores(v, labels) for g, v in logits.items()}
    expected = per_example_epsilon(hinge["retrained"], hinge["original"], delta=0.05)
    np.testing.assert_array_equal(result.epsilon, expected)
    confidence = {g: logit_confidence(v, labels) for g, v in logits.items()}
    np.testing.assert_array_equal(result.challenge, challenge_epsilon(confidence["retrained"], confidence["original"]))

    summary = json.loads((out / "summary.json").read_text())
    finite_or_inf = expected[~np.isnan(expected)]
    assert summary["audit/eps_median"] == pytest.approx(float(np.median(finite_or_inf)))
    assert summary["audit/eps_ceiling"] == pytest.approx(np.log(MODELS * 0.95 - 1))
    assert summary["models"] == MODELS and summary["forget_examples"] == len(labels)
    assert 0.5 < summary["audit/retain_acc_retrained"] <= 1 and 0.5 < summary["audit/test_acc_subject"] <= 1
    with open(out / "per_example.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["index"]) for r in rows] == data["forget_index"].tolist()
    assert [float(r["epsilon"]) for r in rows] == pytest.approx(expected.tolist(), nan_ok=True)
    assert (out / "epsilon_hist.png").read_bytes()[:4] == b"\x89PNG"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "tensorboard"))

    # resume: only the missing model is made again, and the audit is unchanged
    files = _model_files(out, "original") + _model_files(out, "retrained")
    stamps = {p: p.stat().st_mtime_ns for p in files}
    files[1].unlink()
    again = run_audit(out=out, cache_dir=str(cache), **kwargs)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in files if p != files[1])
    assert files[1].exists()
    np.testing.assert_array_equal(again.epsilon, result.epsilon)


@pytest.mark.slow
def test_method_audit_in_two_worker_processes(tmp_path):
    cache = tmp_path / "cache"
    config = _method_config(tmp_path, cache)
    out = tmp_path / "method"
    main(
        [
            "--config",
            str(config),
            "--models",
            "2",
            "--workers",
            "2",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
        ]
    )
    method = [torch.load(p, weights_only=True)["forget_logits"] for p in _model_files(out, "method")]
    assert len(method) == 2 and not torch.equal(method[0], method[1])  # the method's seed varies
    for seed in range(2):
        run = out / "runs" / f"method_{seed:03d}"
        assert (run / "classifier.pt").exists() and (run / "checkpoints" / "last.ckpt").exists()
        assert f"seed: {seed}" in (run / "config.yaml").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == 2 and "audit/challenge_score" in summary


def test_audit_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="--config"):
        run_audit(subject="method", out=tmp_path)
    with pytest.raises(ValueError, match="models"):
        run_audit(subject="original", models=1, out=tmp_path)
    with pytest.raises(ValueError, match="subject"):
        run_audit(subject="everything", out=tmp_path)
    with pytest.raises(ValueError, match="bn_mode"):
        run_audit(bn_mode="frozen", out=tmp_path)
    with pytest.raises(SystemExit):
        main(["--subject", "nobody"])


def _write(path: str, text: str) -> None:
    Path(path).write_text(text)


def _fail(message: str) -> None:
    print("about to fail")
    raise RuntimeError(message)


def test_job_runner_results_failures_and_duplicates(tmp_path):
    jobs = [Job(f"j{i}", tmp_path / f"r{i}.txt", _write, (str(tmp_path / f"r{i}.txt"), str(i))) for i in range(3)]
    assert run_jobs(jobs, workers=1) == [job.result for job in jobs]
    assert [job.result.read_text() for job in jobs] == ["0", "1", "2"]
    with pytest.raises(JobError, match="boom(.|\n)*about to fail"):  # the message ends with the job's log
        run_jobs([Job("bad", tmp_path / "bad.txt", _fail, ("boom",))], workers=1)
    with pytest.raises(JobError, match="without writing"):
        run_jobs([Job("silent", tmp_path / "none.txt", print, ("nothing",))], workers=1)
    with pytest.raises(ValueError, match="own result"):
        run_jobs([jobs[0], jobs[0]], workers=1)
    with pytest.raises(ValueError, match="workers"):
        run_jobs(jobs, workers=0)
