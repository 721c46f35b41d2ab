"""Smoke test of ``benchmarks/throughput.py``: every reported number is present and positive (no timing thresholds)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("benchmark_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


TINY = ["--epochs", "1", "--repeats", "1", "--limit-batches", "2", "--warmup-epochs", "0", "--init", "random"]


def test_benchmark_reports_every_number(throughput, tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "out" / "throughput.json"
    results = throughput.main([*TINY, "--batch-size", "32", "--threads", "1", "--json", str(out)])

    assert torch.get_num_threads() == threads  # restored
    assert "library / plain throughput" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert set(written) == set(results)

    for key in ("plain_images_per_s", "library_images_per_s", "throughput_ratio", "initial_eval_s"):
        assert math.isfinite(written[key]) and written[key] > 0, key
    for variant in throughput.VARIANTS:
        assert written["epoch_s"][variant] > 0, variant
        (run,) = written["per_repeat"][variant]
        assert len(run["epoch_s"]) == 1 and run["images_per_s"] > 0
    for key in ("callback_overhead_s", "callback_overhead_ratio", "evaluation_s", "evaluation_ratio"):
        assert math.isfinite(written[key]), key  # differences of timings: sign left to the noise
    epoch = written["epoch_s"]
    assert written["callback_overhead_s"] == pytest.approx(epoch["library_callbacks"] - epoch["library_val"])
    assert written["callback_overhead_ratio"] == pytest.approx(written["callback_overhead_s"] / epoch["library"])
    assert written["evaluation_s"] == pytest.approx(epoch["library_val"] - epoch["library"])
    (lib,), (plain,) = written["per_repeat"]["library"], written["per_repeat"]["plain"]
    assert written["throughput_ratio"] == pytest.approx(lib["images_per_s"] / plain["images_per_s"])
    # the callbacks' hooks were clocked, and took part of the callbacks' epoch (one repeat: medians are the runs)
    assert 0 < written["callback_hook_s"] < epoch["library_callbacks"]
    every_n = written["evaluation_every_n_for_target"]
    assert isinstance(every_n, int) and every_n >= 1
    whole = max(0.0, written["evaluation_s"]) + max(0.0, written["callback_overhead_s"])
    assert whole / every_n <= 0.1 * epoch["library"] + 1e-12  # the smallest N that meets the target
    assert every_n == 1 or whole / (every_n - 1) > 0.1 * epoch["library"]
    assert set(written["spread"]) == set(throughput.VARIANTS)
    assert all(spread >= 1 for spread in written["spread"].values())
    for key in ("throughput_pass", "callback_pass", "passed"):
        assert isinstance(written[key], bool), key
    assert written["passed"] == (written["throughput_pass"] and written["callback_pass"])
    assert written["throughput_target"] == 0.9 and written["callback_target"] == 0.1

    config = written["config"]
    assert config["images_per_epoch"] == 2 * 32  # two batches of 32: the same images in every variant
    assert config["retain_size"] == 3600 and config["threads"] == 1
    # same data, same order, same optimiser: the library's finetuning is the plain loop's
    assert written["max_param_diff"] < 1e-5


def test_check_flag_sets_the_exit_code(throughput, monkeypatch):
    verdict = {"passed": False}
    monkeypatch.setattr(throughput, "main", lambda argv=None: dict(verdict))
    assert throughput.cli([*TINY]) == 0  # a measurement: exit 0 without --check
    assert throughput.cli([*TINY, "--check"]) == 1
    verdict["passed"] = True
    assert throughput.cli([*TINY, "--check"]) == 0


def test_rejects_bad_arguments(throughput):
    for bad in (["--epochs", "0"], ["--limit-batches", "0"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            throughput.parse_args(bad)
